//! `corestream serve` as a process under SIGTERM while loaded, on both servers: every request
//! the server took is answered (200, or 429 when the queue is full), none cancelled or lost;
//! the server exits 0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;
use support::{block_on, one_at_a_time, Process};

/// Writes `partial` (an unfinished request) and reads until the status line: the status, or
/// `closed` when the server closed the connection first.
fn status_after(addr: &str, partial: &[u8]) -> (Result<u16, String>, Duration) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(partial).unwrap();
    let start = Instant::now();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let outcome = loop {
        match stream.read(&mut byte) {
            Ok(0) if head.is_empty() => break Err("closed".to_owned()),
            Ok(0) => break Err(format!("cut: {}", String::from_utf8_lossy(&head))),
            Ok(_) if byte[0] == b'\n' => {
                let line = String::from_utf8_lossy(&head);
                break line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|code| code.parse().ok())
                    .ok_or_else(|| format!("status line {line:?}"));
            }
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                break Err("closed".to_owned())
            }
            Err(e) => break Err(format!("read: {e}")),
        }
    };
    (outcome, start.elapsed())
}

/// What the load's clients saw.
#[derive(Debug, Default)]
struct Seen {
    /// Responses of any status, health checks included.
    responses: u64,
    /// 200s of the embedding requests before and after SIGTERM.
    ok_before: u64,
    ok_after: u64,
    /// 429s (queue full) of the embedding requests.
    refused: u64,
    /// `/health` statuses after SIGTERM.
    health_after: Vec<u16>,
    /// Requests that got no response (never taken: connection refused or reset once the
    /// listener closed).
    not_taken: u64,
}

/// Starts `corestream serve --server <server>` with a queue of 4, loads it with 16 clients (so some requests are
/// refused with 429 all along), sends SIGTERM after 1 s of load, and
/// checks: the server drains (503 on /health, still serving), exits 0, and the request totals
/// it logs show every request it took answered (none cancelled, none in flight), as many as
/// the clients received.
fn sigterm_under_load(name: &str) {
    let _alone = one_at_a_time();
    let mut process = Process::start(&[
        "--server",
        name,
        "--textnet",
        "--backend",
        "tract",
        "--drain-delay-ms",
        "500",
        "--queue",
        "4",
        "--header-timeout-ms",
        "1000",
        "--body-timeout-ms",
        "1000",
    ]);
    let base = process.base();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let terminated = Arc::new(AtomicBool::new(false));
    block_on(async {
        // No connection reuse: a request on a kept-alive connection the server is closing
        // would be neither taken nor refused.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        loop {
            let r = client.get(format!("{base}/health")).send().await;
            if let Ok(r) = r {
                seen.lock().unwrap().responses += 1;
                if r.status() == 200 {
                    break;
                }
            }
            assert!(process.child.try_wait().unwrap().is_none(), "server exited");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The binary's own timeouts (flags): unfinished headers closed (actix-web answers 408
        // first; no route saw the request), an unfinished body 408 from the route (counted by
        // the server), each after about 1 s.
        let (_, addr) = base.split_once("://").unwrap();
        let unfinished_headers = &b"POST /v1/embeddings HTTP/1.1\r\nhost: t\r\n"[..];
        let unfinished_body =
            &b"POST /v1/embeddings HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n{"[..];
        for (partial, counted) in [(unfinished_headers, false), (unfinished_body, true)] {
            let (outcome, took) = status_after(addr, partial);
            let expected = if counted {
                matches!(outcome, Ok(408))
            } else {
                matches!(
                    outcome.as_ref().map_err(String::as_str),
                    Err("closed") | Ok(408)
                )
            };
            assert!(expected, "{name}: {outcome:?} after {took:?}");
            assert!(
                took > Duration::from_millis(500) && took < Duration::from_secs(5),
                "{name}: {outcome:?} after {took:?} (timeouts 1 s)"
            );
            if counted {
                seen.lock().unwrap().responses += 1;
            }
        }
        let load: Vec<_> = (0..16)
            .map(|i| {
                let (client, base, seen, terminated) = (
                    client.clone(),
                    base.clone(),
                    Arc::clone(&seen),
                    Arc::clone(&terminated),
                );
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let mut n = 0;
                    while Instant::now() < deadline {
                        n += 1;
                        let after = terminated.load(Ordering::SeqCst);
                        let body = json!({ "input": format!("client {i} request {n}") });
                        let sent = client
                            .post(format!("{base}/v1/embeddings"))
                            .json(&body)
                            .send()
                            .await;
                        let Ok(response) = sent else {
                            let mut seen = seen.lock().unwrap();
                            assert!(after || terminated.load(Ordering::SeqCst), "{sent:?}");
                            seen.not_taken += 1;
                            // Refused: the listener is closed; the server is going.
                            if sent.as_ref().err().is_some_and(reqwest::Error::is_connect) {
                                return;
                            }
                            continue;
                        };
                        let status = response.status().as_u16();
                        let value: Value = response.json().await.unwrap();
                        let mut seen = seen.lock().unwrap();
                        seen.responses += 1;
                        match (status, after) {
                            (200, false) => seen.ok_before += 1,
                            (200, true) => seen.ok_after += 1,
                            (429, _) => seen.refused += 1,
                            _ => panic!("{status}: {value}"),
                        }
                        if status == 200 {
                            assert_eq!(
                                value["data"][0]["embedding"].as_array().unwrap().len(),
                                512
                            );
                        }
                    }
                    panic!("client {i}: the server still took connections 30 s on");
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        terminated.store(true, Ordering::SeqCst);
        let kill = Command::new("kill")
            .args(["-TERM", &process.child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        // During the drain delay (500 ms): /health is 503, embeddings are still served.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Ok(r) = client.get(format!("{base}/health")).send().await {
                let mut seen = seen.lock().unwrap();
                seen.responses += 1;
                seen.health_after.push(r.status().as_u16());
            }
        }
        for client in load {
            client.await.unwrap();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{name} still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{name} exited with {status}");
    let totals = process.wait_log("http request totals");
    let seen = seen.lock().unwrap();
    let (started, answered) = (totals["started"].as_u64(), totals["answered"].as_u64());
    assert_eq!(totals["cancelled"], 0, "{totals} {seen:?}");
    assert_eq!(totals["in_flight"], 0, "{totals} {seen:?}");
    assert_eq!(started, answered, "{totals} {seen:?}");
    assert_eq!(answered, Some(seen.responses), "{totals} {seen:?}");
    assert!(seen.ok_before >= 16, "{seen:?}");
    assert!(
        seen.ok_after >= 1,
        "no request served while draining: {seen:?}"
    );
    assert!(seen.health_after.contains(&503), "{seen:?}");
    eprintln!(
        "{name}: SIGTERM under 16 clients: server took {} requests and answered all \
         ({} x 200 before, {} x 200 while draining, {} x 429); {} attempts after the listener \
         closed got no connection; exit 0",
        seen.responses, seen.ok_before, seen.ok_after, seen.refused, seen.not_taken
    );
}

#[test]
fn axum_sigterm_under_load() {
    sigterm_under_load("axum");
}

#[test]
fn actix_sigterm_under_load() {
    sigterm_under_load("actix");
}
