#!/usr/bin/env python3
"""Connection floods against a running Switchyard: how many idle or slow
(slowloris) connections it holds before a normal request slows down.

For each flood size it opens that many connections of one kind, then times
normal requests (a fresh connection each: connect, GET /healthz, read the
answer) while the flood stays open, and reports p50 / p99 / max.

    bench/flood.py 127.0.0.1:8080                  # idle floods
    bench/flood.py 127.0.0.1:8080 --kind slow      # one header byte a second
    bench/flood.py 127.0.0.1:8080 --sizes 0,2000,5000 --requests 100

Standard library only; the flood and the timed client share one event loop,
so what slows down is the server, not a second process competing for it.
"""

import argparse
import asyncio
import resource
import statistics
import time


async def open_flood(host, port, count, kind):
    connections = []
    for _ in range(count):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), 2
            )
        except (OSError, asyncio.TimeoutError):
            # The kernel's accept queue is full: the rest of the flood
            # could not even connect.
            break
        if kind == "slow":
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        connections.append((reader, writer))
    return connections


async def trickle(connections, stop):
    """Slow clients: a header byte a second on each connection."""
    while not stop.is_set():
        for _, writer in connections:
            if not writer.is_closing():
                writer.write(b"x")
        await asyncio.sleep(1)


async def one_request(host, port):
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await reader.read()
    writer.close()
    return time.perf_counter() - start


async def measure(host, port, size, kind, requests, timeout):
    flood = await open_flood(host, port, size, kind)
    stop = asyncio.Event()
    trickling = asyncio.create_task(trickle(flood, stop)) if kind == "slow" else None
    await asyncio.sleep(0.5)
    times, timed_out = [], 0
    for _ in range(requests):
        try:
            times.append(await asyncio.wait_for(one_request(host, port), timeout))
        except asyncio.TimeoutError:
            timed_out += 1
    still_open = sum(1 for reader, _ in flood if not reader.at_eof())
    stop.set()
    if trickling:
        await trickling
    for _, writer in flood:
        writer.close()
    await asyncio.sleep(0.5)
    times.sort()
    ms = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000 if times else float("nan")
    return (
        f"{kind:4} flood {size:6} (opened {len(flood):6}, open at end {still_open:6}): "
        f"p50 {ms(0.5):8.2f} ms  p99 {ms(0.99):8.2f} ms  max {ms(1.0):8.2f} ms"
        f"  timed out {timed_out}/{requests}"
        + (f"  mean {statistics.mean(times) * 1000:.2f} ms" if times else "")
    )


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address", help="HOST:PORT of a plain-HTTP listener")
    parser.add_argument("--kind", choices=["idle", "slow"], default="idle")
    parser.add_argument("--sizes", default="0,1000,2000,4000,4096,6000")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    host, port = args.address.rsplit(":", 1)
    wanted = max(int(s) for s in args.sizes.split(",")) + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, wanted), hard), hard))
    for size in (int(s) for s in args.sizes.split(",")):
        print(await measure(host, int(port), size, args.kind, args.requests, args.timeout), flush=True)


asyncio.run(main())
