//! Clients that misbehave at the connection: disconnecting mid-request, never finishing
//! headers or body, flooding, connecting and sending nothing.

use super::*;

/// Clients that send a request and disconnect before the answer: each request is cancelled
/// (counted, in the metric too; hyper drops the handler, and the actix-web adapter stops it
/// when a peek at the socket finds the client gone), the batcher skips those still queued,
/// nothing stays in flight, and the service answers the next client.
pub(super) async fn client_disconnects(launch: Launch, name: &str) {
    let server = Server::start(
        launch,
        name,
        Duration::from_millis(500),
        256,
        1,
        Duration::from_secs(10),
    );
    let series = "corestream_http_requests_cancelled_total{route=\"/v1/embeddings\"}";
    let cancelled_before = metric(&server.service.render_metrics(), series);
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut stream = connect(&server.addr).await.unwrap();
        stream
            .write_all(&request_bytes(&format!("left early {i}")))
            .await
            .unwrap();
        clients.push(stream);
    }
    wait_for("8 requests to start", || {
        server.service.requests.counts().started == 8
    })
    .await;
    drop(clients);
    server.settle().await;
    let counts = server.service.requests.counts();
    let stats = server.stats();
    let cancelled = metric(&server.service.render_metrics(), series) - cancelled_before;
    assert_eq!((counts.cancelled, counts.answered), (8, 0), "{counts:?}");
    // At most one request per stream was running (max_batch 1, 500 ms per call): the others
    // were still queued and never ran.
    let streams = server.service.models().unwrap().first().info.streams as u64;
    assert!(stats.cancelled >= 8 - streams, "{stats:?}");
    assert_eq!(cancelled, 8.0);
    assert_eq!(server.healthy_request().await, 200);
    eprintln!(
        "{name}: 8 clients gone mid-request: {} requests cancelled ({} never ran), {} ran \
         to an answer nobody read; next request 200",
        counts.cancelled, stats.cancelled, stats.completed
    );
}

/// A client that never finishes its body gets 408 after the body timeout (500 ms here); one
/// that never finishes its headers is disconnected after the header timeout (2 s here).
pub(super) async fn slow_clients(launch: Launch, name: &str, header_timeout: Duration) {
    let body_timeout = Duration::from_millis(500);
    let server = Server::start(launch, name, Duration::ZERO, 256, 16, body_timeout);

    let mut stream = connect(&server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/embeddings HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"input\": ",
        )
        .await
        .unwrap();
    let start = Instant::now();
    let status = read_status(&mut stream, Duration::from_secs(10)).await;
    let took = start.elapsed();
    assert_eq!(status, Ok(408), "a body that never finishes");
    assert!(took >= body_timeout - Duration::from_millis(50), "{took:?}");
    eprintln!("{name}: unfinished body: 408 after {took:?} (timeout {body_timeout:?})");

    let mut stream = connect(&server.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/embeddings HTTP/1.1\r\nhost: test\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let outcome = read_status(&mut stream, header_timeout * 5).await;
    let took = start.elapsed();
    // hyper closes the connection; actix-web answers 408 and closes.
    assert!(
        matches!(
            outcome.as_ref().map_err(String::as_str),
            Err("closed") | Ok(408)
        ),
        "headers that never finish: {outcome:?}"
    );
    assert!(
        took >= header_timeout / 2 && took <= header_timeout * 4,
        "disconnected after {took:?}, header timeout {header_timeout:?}"
    );
    eprintln!(
        "{name}: unfinished headers: {outcome:?} after {took:?} (timeout {header_timeout:?})"
    );
    server.settle().await;
    assert_eq!(server.healthy_request().await, 200);
}

/// 2,000 connections at once, each with one request, against a queue of 256 and a model at
/// 100 ms per batch of 16: each answered 200 or 429, at least the queue's worth served, some
/// refused; memory bounded; afterwards the service serves normally and nothing is left.
pub(super) async fn connection_flood(launch: Launch, name: &str) {
    const WANTED: usize = 2000;
    // Each connection is two descriptors in this process (client and server side).
    let limit = rlimit::increase_nofile_limit((2 * WANTED + 512) as u64).unwrap();
    let connections = WANTED.min((limit as usize).saturating_sub(512) / 2);
    if connections < WANTED {
        eprintln!("{name}: file descriptor limit {limit}: {connections} connections, not {WANTED}");
    }
    assert!(
        connections >= 600,
        "file descriptor limit {limit} is too low for a flood"
    );
    let server = Server::start(
        launch,
        name,
        Duration::from_millis(100),
        256,
        16,
        Duration::from_secs(10),
    );
    assert_eq!(server.healthy_request().await, 200);
    let before = rss();
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (Arc::clone(&peak), Arc::clone(&sampling));
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let start = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|i| {
            let addr = server.addr.clone();
            tokio::spawn(async move {
                let mut stream = connect(&addr).await?;
                stream
                    .write_all(&request_bytes(&format!("flood {i}")))
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                read_status(&mut stream, Duration::from_secs(60)).await
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for client in clients {
        match client.await.unwrap() {
            Ok(200) => ok += 1,
            Ok(429) => refused += 1,
            other => panic!("{name}: a flooding client got {other:?}"),
        }
    }
    let took = start.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let peak_growth = peak.load(Ordering::Relaxed).saturating_sub(before) as f64 / MB;
    server.settle().await;
    let stats = server.stats();
    assert!(ok >= 256, "{ok} served, {refused} refused");
    assert!(
        refused >= 1,
        "{ok} served, {refused} refused: the queue never filled"
    );
    assert_eq!(stats.rejected as usize, refused, "{stats:?}");
    assert!(
        peak_growth < 256.0,
        "RSS grew {peak_growth:.1} MB under {connections} connections"
    );
    let after = rss().saturating_sub(before) as f64 / MB;
    assert_eq!(server.healthy_request().await, 200);
    let counts = server.service.requests.counts();
    assert_eq!(counts.in_flight(), 0, "{counts:?}");
    eprintln!(
        "{name}: {connections} connections at once: {ok} x 200, {refused} x 429 in {took:.1?}; \
         RSS peak {peak_growth:+.1} MB, after {after:+.1} MB; next request 200"
    );
}

/// Connections that send nothing (20 of them), and one that sends HTTP/2's prior-knowledge
/// preface (h2c) and then nothing: each is closed within a few header timeouts, so idle
/// sockets cannot pile up until the server runs out of descriptors.
pub(super) async fn idle_connections(launch: Launch, name: &str, header_timeout: Duration) {
    let server = Server::start(
        launch,
        name,
        Duration::ZERO,
        256,
        16,
        Duration::from_secs(10),
    );
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(connect(&server.addr).await.unwrap());
    }
    let mut h2c = connect(&server.addr).await.unwrap();
    h2c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    idle.push(h2c);
    let start = Instant::now();
    let deadline = header_timeout * 3;
    let mut closed = 0;
    for stream in &mut idle {
        let left = deadline.saturating_sub(start.elapsed());
        // A closed connection reads end of stream (after a 408, on actix-web); an open one
        // times out.
        let mut buf = [0u8; 1024];
        let outcome = loop {
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Err(_) => break "open",
                Ok(Ok(0) | Err(_)) => break "closed",
                Ok(Ok(_)) => continue,
            }
        };
        if outcome == "closed" {
            closed += 1;
        }
    }
    let took = start.elapsed();
    assert_eq!(
        closed,
        idle.len(),
        "{name}: {closed} of {} idle connections closed within {deadline:?} (header timeout \
         {header_timeout:?})",
        idle.len()
    );
    assert!(took >= header_timeout / 2, "{name}: closed after {took:?}");
    eprintln!(
        "{name}: {} idle connections (one after an h2c preface) closed after {took:?} (header \
         timeout {header_timeout:?})",
        idle.len()
    );
    server.settle().await;
    assert_eq!(server.healthy_request().await, 200);
}
