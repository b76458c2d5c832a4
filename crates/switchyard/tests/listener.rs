//! The listener's limits (`[listener]`), driven over raw sockets against a
//! Switchyard in front of the stand-in upstream: clients that trickle
//! their headers are dropped, connections beyond the cap wait for a slot,
//! idle connections close while slow answers do not, HTTP/2 connections
//! are offered the configured stream cap, and a client that stops reading
//! is let go.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, recording_standin, standin_model};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(server: &Server) -> String {
    server.url.strip_prefix("http://").unwrap().to_owned()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: switchyard\r\n\r\n")
}

fn chat(model: &str, content: &str, stream: bool) -> String {
    let body = serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
    })
    .to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: switchyard\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one HTTP/1.1 response with a `content-length` (what `/healthz`
/// sends), leaving the connection open.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = stream.read(&mut buffer).await.unwrap();
        assert!(read > 0, "connection closed mid-response: {seen:?}");
        seen.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length: usize = text[..head_end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if seen.len() >= head_end + 4 + length {
                return text;
            }
        }
    }
}

/// Whether the server closes `stream` within `within` (reading and
/// dropping whatever it still sends).
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn clients_that_trickle_their_headers_are_dropped_and_starve_nobody() {
    let server = Server::start("[listener]\nheader_read_timeout_secs = 1\n");
    let addr = addr(&server);
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Each keeps sending a header byte now and then, never finishing.
    let trickling = tokio::spawn(async move {
        let opened = Instant::now();
        let mut closed = vec![false; slow.len()];
        let mut buffer = [0u8; 256];
        while closed.contains(&false) && opened.elapsed() < Duration::from_secs(15) {
            for (stream, closed) in slow.iter_mut().zip(closed.iter_mut()) {
                if *closed {
                    continue;
                }
                let wrote = stream.write_all(b"x").await.is_ok();
                let ended = matches!(
                    tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await,
                    Ok(Ok(0) | Err(_))
                );
                *closed = !wrote || ended;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (closed.iter().filter(|&&c| c).count(), opened.elapsed())
    });
    // Meanwhile a whole request is answered at once.
    let mut normal = TcpStream::connect(&addr).await.unwrap();
    normal.write_all(get("/healthz").as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut normal))
        .await
        .expect("a normal request waited behind slow ones");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let (closed, after) = trickling.await.unwrap();
    assert_eq!(closed, 50, "slow clients still open after {after:?}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_busy_one_to_finish() {
    let upstream = recording_standin().await;
    let config = format!(
        "[listener]\nmax_connections = 3\n{}",
        standin_model(
            "slow-start",
            &upstream,
            "headers = { \"x-standin-latency-ms\" = \"3000\" }"
        ),
    );
    let server = Server::start(&config);
    let addr = addr(&server);
    // Three connections with an answer in flight fill the cap.
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(chat("slow-start", "hello", false).as_bytes())
            .await
            .unwrap();
        busy.push(stream);
    }
    // A fourth is queued by the kernel, not served...
    let mut waiting = TcpStream::connect(&addr).await.unwrap();
    waiting.write_all(get("/healthz").as_bytes()).await.unwrap();
    let early = tokio::time::timeout(Duration::from_secs(1), read_response(&mut waiting)).await;
    assert!(early.is_err(), "a fourth connection was served: {early:?}");
    // ...until one of the three is done; none of them is cut for it.
    let answer = tokio::time::timeout(Duration::from_secs(20), read_response(&mut waiting))
        .await
        .expect("the queued connection was never served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for mut stream in busy {
        let answer = read_response(&mut stream).await;
        assert!(answer.contains("echo: hello"), "{answer}");
    }
}

#[tokio::test]
async fn at_the_cap_idle_and_half_sent_connections_make_room() {
    let config = "[listener]\nmax_connections = 3\nidle_timeout_secs = 600\nheader_read_timeout_secs = 600\n";
    let server = Server::start(config);
    let addr = addr(&server);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream.write_all(get("/healthz").as_bytes()).await.unwrap();
        read_response(&mut stream).await;
        held.push(stream);
    }
    let mut half_sent = TcpStream::connect(&addr).await.unwrap();
    half_sent
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    held.push(half_sent);
    // With every slot taken, connections idle for a second are closed to
    // let the new one in, long before any timeout would.
    let mut newcomer = TcpStream::connect(&addr).await.unwrap();
    newcomer
        .write_all(get("/healthz").as_bytes())
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(15), read_response(&mut newcomer))
        .await
        .expect("the newcomer waited for the timeouts");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for mut stream in held {
        assert!(closed_by_server(&mut stream, Duration::from_secs(15)).await);
    }
}

#[tokio::test]
async fn idle_connections_close_while_slow_answers_finish() {
    let upstream = recording_standin().await;
    let config = format!(
        "[listener]\nidle_timeout_secs = 1\nheader_read_timeout_secs = 60\n{}{}",
        standin_model(
            "slow-start",
            &upstream,
            "headers = { \"x-standin-latency-ms\" = \"2500\" }"
        ),
        standin_model(
            "slow-stream",
            &upstream,
            "headers = { \"x-standin-token-delay-ms\" = \"300\" }"
        ),
    );
    let server = Server::start(&config);
    let addr = addr(&server);

    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(get("/healthz").as_bytes()).await.unwrap();
    read_response(&mut idle).await;

    let mut waiting = TcpStream::connect(&addr).await.unwrap();
    waiting
        .write_all(chat("slow-start", "hello there", false).as_bytes())
        .await
        .unwrap();
    let mut streaming = TcpStream::connect(&addr).await.unwrap();
    streaming
        .write_all(chat("slow-stream", "one two three four five six seven", true).as_bytes())
        .await
        .unwrap();

    assert!(
        closed_by_server(&mut idle, Duration::from_secs(10)).await,
        "an idle connection stayed open"
    );
    let answer = tokio::time::timeout(Duration::from_secs(20), read_response(&mut waiting))
        .await
        .expect("the slow answer never came");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("echo: hello there"), "{answer}");

    let mut streamed = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buffer = [0u8; 4096];
        while !String::from_utf8_lossy(&streamed).contains("data: [DONE]") {
            let read = streaming.read(&mut buffer).await.unwrap();
            assert!(
                read > 0,
                "stream cut: {}",
                String::from_utf8_lossy(&streamed)
            );
            streamed.extend_from_slice(&buffer[..read]);
        }
    })
    .await
    .expect("the slow stream never finished");
    assert!(String::from_utf8_lossy(&streamed).contains("seven"));
}

#[tokio::test]
async fn http2_connections_are_offered_the_configured_stream_cap() {
    let server = Server::start("[listener]\nhttp2_max_streams = 7\n");
    let tcp = TcpStream::connect(addr(&server)).await.unwrap();
    let (mut send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let deadline = Instant::now() + Duration::from_secs(5);
    // The cap arrives in the server's SETTINGS frame, after the handshake.
    while send.current_max_send_streams() != 7 && Instant::now() < deadline {
        send = send.ready().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(send.current_max_send_streams(), 7);
}

#[tokio::test]
async fn a_client_that_stops_reading_a_stream_is_let_go() {
    let upstream = recording_standin().await;
    let config = format!(
        "max_body_bytes = 4000000\n[listener]\nwrite_timeout_secs = 1\n{}",
        standin_model("echo", &upstream, "")
    );
    let server = Server::start(&config);
    // About 200 KB of one-letter words: a stream of many megabytes, more
    // than the sockets' buffers hold.
    let words = "w ".repeat(100_000);
    let mut stalled = TcpStream::connect(addr(&server)).await.unwrap();
    stalled
        .write_all(chat("echo", &words, true).as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut received = 0usize;
    let mut tail = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buffer = vec![0u8; 65536];
        loop {
            match stalled.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => {
                    received += read;
                    tail = buffer[..read].to_vec();
                }
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled stream was never ended");
    assert!(
        !String::from_utf8_lossy(&tail).contains("[DONE]"),
        "the whole stream was buffered ({received} bytes): the write never stalled"
    );
    // The server goes on serving.
    assert_eq!(server.status_of("/healthz"), Some(200));
}
