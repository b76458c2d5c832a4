#!/usr/bin/env python3
"""The soak's traffic and its report (bench/soak.sh starts the servers).

Mixed traffic through a running Switchyard for DURATION seconds: whole and
streamed answers, repeated prompts (cache hits), clients that hang up
mid-stream, an upstream that fails a third of its requests, slow streams
and embeddings. Every SAMPLE seconds it records the gateway's RSS, open
descriptors and threads, and the ledger's lag (requests this client has
had answered minus the rows the ledger holds). At the end it waits for
the ledger to catch up, checks it holds a row for every request sent, and
reports the slope of RSS and descriptors after warm-up.

Standard library only.
"""

import argparse
import http.client
import json
import os
import random
import signal
import threading
import time

PROMPTS = [f"cached question number {i}" for i in range(20)]


def ask(text, **extra):
    return {"messages": [{"role": "user", "content": text}], **extra}


# (share of requests, model, body beyond the model, hang up after the
# first piece)
MIX = [
    (30, "echo", lambda rng: ask(rng.choice(PROMPTS), temperature=0), False),  # cache hits
    (15, "echo", lambda rng: ask(f"fresh {rng.random()}"), False),
    (20, "echo", lambda rng: ask("tell me a long story " * 8, stream=True,
                                 stream_options={"include_usage": True}), False),
    (7, "slow", lambda rng: ask("one two three four five six", stream=True), True),
    (10, "flaky", lambda rng: ask(f"maybe {rng.random()}"), False),
    (5, "slow", lambda rng: ask("slow but complete", stream=True), False),
    (13, "embed", lambda rng: {"input": [f"text {rng.random()}", "second text"]}, False),
]


def proc_stats(pid):
    rss_kb = threads = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kb / 1024, fds, threads


class Traffic:
    def __init__(self, host, port, key):
        self.host, self.port, self.key = host, port, key
        self.lock = threading.Lock()
        self.sent = {}  # model -> requests that reached the gateway
        self.statuses = {}
        self.stop = threading.Event()

    def count(self, model, status):
        with self.lock:
            self.sent[model] = self.sent.get(model, 0) + 1
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def total(self):
        with self.lock:
            return sum(self.sent.values())

    def request(self, connection, path, body, stream_mode=None):
        headers = {"authorization": f"Bearer {self.key}", "content-type": "application/json"}
        connection.request("POST", path, json.dumps(body), headers)
        response = connection.getresponse()
        if stream_mode == "hang-up":
            response.read(64)  # the first piece, then gone
            connection.close()
            return response.status, True
        response.read()
        return response.status, False

    def one(self, connection, rng):
        _, model, make, hang_up = rng.choices(MIX, weights=[m[0] for m in MIX])[0]
        path = "/v1/embeddings" if model == "embed" else "/v1/chat/completions"
        body = {"model": model, **make(rng)}
        status, closed = self.request(connection, path, body, "hang-up" if hang_up else None)
        self.count(model, status)
        return closed

    def worker(self, seed):
        rng = random.Random(seed)
        connection = None
        while not self.stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                if self.one(connection, rng):
                    connection = None
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = None
                time.sleep(0.05)


def admin(host, port, master, method, path, body=None):
    connection = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"authorization": f"Bearer {master}", "content-type": "application/json"}
    connection.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = connection.getresponse()
    data = json.loads(response.read() or b"null")
    connection.close()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status} {data}")
    return data


def ledger_rows(host, port, master, tenant):
    report = admin(host, port, master, "GET", f"/admin/usage?group_by=model&tenant_id={tenant}")
    return {line["group"]: line["requests"] for line in report["data"]}


def slope_per_hour(points):
    """Least-squares slope of (seconds, value) points, per hour."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 3600


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("address")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--master", required=True)
    parser.add_argument("--duration", type=float, default=1800)
    parser.add_argument("--sample", type=float, default=60)
    parser.add_argument("--reload-every", type=float, default=300)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    host, port = args.address.rsplit(":", 1)
    port = int(port)

    tenant = admin(host, port, args.master, "POST", "/admin/tenants", {"name": "soak"})["id"]
    key = admin(host, port, args.master, "POST", "/admin/keys", {"tenant_id": tenant, "name": "soak"})["key"]
    traffic = Traffic(host, port, key)
    threads = [threading.Thread(target=traffic.worker, args=(seed,), daemon=True)
               for seed in range(args.workers)]
    for thread in threads:
        thread.start()

    started = time.time()
    samples = []
    next_reload = started + args.reload_every
    reloads = 0
    print(f"{'minute':>6} {'rss MiB':>8} {'fds':>5} {'threads':>7} {'answered':>9} {'ledger':>8} {'lag':>6}", flush=True)
    while True:
        now = time.time()
        if now - started >= args.duration:
            break
        time.sleep(min(args.sample, args.duration - (now - started)))
        if time.time() >= next_reload:
            os.kill(args.pid, signal.SIGHUP)
            reloads += 1
            next_reload += args.reload_every
        rss, fds, nthreads = proc_stats(args.pid)
        answered = traffic.total()
        rows = sum(ledger_rows(host, port, args.master, tenant).values())
        elapsed = time.time() - started
        samples.append((elapsed, rss, fds, nthreads, answered, rows))
        print(f"{elapsed / 60:6.1f} {rss:8.1f} {fds:5d} {nthreads:7d} {answered:9d} {rows:8d} {answered - rows:6d}", flush=True)

    traffic.stop.set()
    for thread in threads:
        thread.join(timeout=90)
    sent = dict(traffic.sent)
    deadline = time.time() + 60
    while True:
        rows = ledger_rows(host, port, args.master, tenant)
        if all(rows.get(m, 0) >= n for m, n in sent.items()) or time.time() > deadline:
            break
        time.sleep(1)

    warm = [s for s in samples if s[0] >= min(300, args.duration / 3)]
    rss_slope = slope_per_hour([(s[0], s[1]) for s in warm])
    fd_slope = slope_per_hour([(s[0], s[2]) for s in warm])
    print()
    print(f"requests sent {sum(sent.values())} in {args.duration / 60:.0f} min "
          f"({sum(sent.values()) / args.duration:.0f}/s), {reloads} reloads; statuses {dict(sorted(traffic.statuses.items()))}")
    if warm:
        print(f"after warm-up ({len(warm)} samples): RSS {min(s[1] for s in warm):.1f}-{max(s[1] for s in warm):.1f} MiB, "
              f"slope {rss_slope:+.2f} MiB/hour; descriptors {min(s[2] for s in warm)}-{max(s[2] for s in warm)}, "
              f"slope {fd_slope:+.1f}/hour; threads {min(s[3] for s in warm)}-{max(s[3] for s in warm)}")
    missing = {m: n - rows.get(m, 0) for m, n in sent.items() if rows.get(m, 0) != n}
    print(f"ledger rows per model {dict(sorted(rows.items()))}; sent {dict(sorted(sent.items()))}")
    if missing:
        print(f"LEDGER MISMATCH (sent minus rows): {missing}")
        raise SystemExit(1)
    print("ledger: one row for every request sent")


main()
