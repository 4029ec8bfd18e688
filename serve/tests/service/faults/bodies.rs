//! Bodies and inputs that misbehave: over the size limit, large enough to stall the HTTP
//! threads, and an input that makes the model panic.

use super::*;

/// Bodies over the limit are refused with 413 without being buffered: declared 1 GiB (1 KiB
/// sent), 3 MiB sent with its length, 3 MiB chunked without one.
pub(super) async fn bodies_over_the_limit(launch: Launch, name: &str) {
    let server = Server::start(
        launch,
        name,
        Duration::ZERO,
        256,
        16,
        Duration::from_secs(10),
    );
    assert_eq!(server.healthy_request().await, 200);
    let before = rss();
    let head = |length: &str| {
        format!(
            "POST /v1/embeddings HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
             {length}\r\nconnection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let big = vec![b' '; 3 << 20];
    let cases: [(&str, Vec<u8>, Vec<u8>); 3] = [
        (
            "declared 1 GiB",
            head("content-length: 1073741824"),
            vec![b' '; 1024],
        ),
        (
            "3 MiB with its length",
            head(&format!("content-length: {}", big.len())),
            big.clone(),
        ),
        ("3 MiB chunked", head("transfer-encoding: chunked"), {
            let mut body = Vec::new();
            for chunk in big.chunks(64 << 10) {
                body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            body
        }),
    ];
    for (what, head, body) in cases {
        let stream = connect(&server.addr).await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let start = Instant::now();
        // The server may answer and close before taking the whole body: writing is allowed
        // to fail.
        let writer = tokio::spawn(async move {
            let _ = write.write_all(&head).await;
            let _ = write.write_all(&body).await;
            write
        });
        let status = {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut chunk))
                    .await
                    .unwrap_or_else(|_| panic!("{what}: no answer in 10 s"))
                    .unwrap_or(0);
                assert!(n > 0, "{what}: closed without an answer");
                buf.extend_from_slice(&chunk[..n]);
                let mut headers = [httparse::EMPTY_HEADER; 32];
                let mut response = httparse::Response::new(&mut headers);
                if let Ok(httparse::Status::Complete(_)) = response.parse(&buf) {
                    break response.code.unwrap();
                }
            }
        };
        assert_eq!(status, 413, "{what}");
        writer.abort();
        eprintln!("{name}: {what}: 413 in {:?}", start.elapsed());
    }
    let grown = rss().saturating_sub(before) as f64 / MB;
    assert!(
        grown < 32.0,
        "RSS grew {grown:.1} MB over three refused bodies"
    );
    server.settle().await;
    assert_eq!(server.healthy_request().await, 200);
    eprintln!("{name}: RSS after the over-limit bodies: {grown:+.1} MB");
}

/// Requests near the body limit that need a real tokenizer's work (MiniLM's WordPiece, 32
/// inputs of ~9 KB each, truncated) do not stall the server: while they are tokenised,
/// `/health/live` keeps answering (tokenisation of large requests runs off the HTTP threads).
pub(super) async fn large_bodies_do_not_stall(launch: Launch, name: &str) {
    let Some(dir) = support::minilm_dir() else {
        return;
    };
    let tokenizer = TextTokenizer::from_file(
        &dir.join("tokenizer.json"),
        &dir.join(corestream_serve::model::source::LEGACY_ONNX),
    )
    .unwrap();
    let server = Server::start_with(
        launch,
        name,
        tokenizer,
        Duration::ZERO,
        256,
        16,
        Duration::from_secs(10),
    );
    let text = "the quick brown fox jumps over the lazy dog ".repeat(200);
    let body = json!({ "input": vec![text; 32], "truncate": true }).to_string();
    let client = reqwest::Client::new();
    let big: Vec<_> = (0..2)
        .map(|_| {
            let (client, url, body) = (
                client.clone(),
                format!("{}/v1/embeddings", server.base()),
                body.clone(),
            );
            tokio::spawn(async move {
                let start = Instant::now();
                let (status, value) = support::post(&client, url, body).await;
                assert_eq!(status, 200, "{value}");
                assert_eq!(value["data"].as_array().unwrap().len(), 32);
                assert_eq!(value["usage"]["total_tokens"], 32 * 128);
                start.elapsed()
            })
        })
        .collect();
    // Probes from a thread of their own: a probe loop on this test's runtime (which also runs
    // the axum server) would stall along with the server and miss the stall it should see.
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (done, url) = (Arc::clone(&done), format!("{}/health/live", server.base()));
        std::thread::spawn(move || {
            block_on(async move {
                let client = reqwest::Client::new();
                let mut probes = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    let start = Instant::now();
                    let r = client.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    probes.push(start.elapsed());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                probes
            })
        })
    };
    let mut took = Vec::new();
    for b in big {
        took.push(b.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let probes = prober.join().unwrap();
    let worst = probes.iter().max().copied().unwrap_or_default();
    assert!(probes.len() >= 5, "{} probes while {took:?}", probes.len());
    assert!(
        worst < Duration::from_millis(500),
        "/health/live took up to {worst:?} while 2 large requests were tokenised ({took:?})"
    );
    eprintln!(
        "{name}: 2 requests of {} KB (32 inputs, truncated to 128 tokens) in {took:?}; {} \
         /health/live probes meanwhile, slowest {worst:?}",
        body.len() / 1000,
        probes.len()
    );
}

/// A model that panics for one input: the requests carrying it fail with 500, the others
/// batched with them get their vectors, and the stream serves on.
pub(super) async fn panicking_input(launch: Launch, name: &str) {
    let server = Server::start(
        launch,
        name,
        Duration::from_millis(50),
        256,
        16,
        Duration::from_secs(10),
    );
    let (reference_model, tokenizer) = support::load(Kind::TextNet, Backend::Tract);
    let client = reqwest::Client::new();
    let requests: Vec<Vec<String>> = (0..24)
        .map(|i| match i {
            5 => vec![POISON.to_owned()],
            11 => vec!["fine".to_owned(), POISON.to_owned()],
            _ => vec![format!("innocent request {i}")],
        })
        .collect();
    let handles: Vec<_> = requests
        .iter()
        .map(|texts| {
            let (client, url) = (client.clone(), format!("{}/v1/embeddings", server.base()));
            let body = json!({ "input": texts }).to_string();
            tokio::spawn(async move { support::post(&client, url, body).await })
        })
        .collect();
    let mut served = 0;
    for (texts, handle) in requests.iter().zip(handles) {
        let (status, body) = handle.await.unwrap();
        if texts.iter().any(|t| t == POISON) {
            assert_eq!(status, 500, "{body}");
            assert_eq!(body["error"]["code"], "model_error", "{body}");
            // The model's own message stays in the log: the client gets the code and an id.
            let message = body["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("internal error (model_error); request id "),
                "{body}"
            );
            assert!(!message.contains("cannot take this input"), "{body}");
        } else {
            assert_eq!(status, 200, "{texts:?}: {body}");
            let got = support::openai_vector(&body["data"][0]["embedding"]);
            let want = support::reference(&reference_model, &tokenizer, texts, true);
            let d = support::max_diff(&[got], &want);
            assert!(d <= 1e-4, "{texts:?}: max diff {d}");
            served += 1;
        }
    }
    assert_eq!(served, 22);
    for _ in 0..4 {
        assert_eq!(server.healthy_request().await, 200);
    }
    server.settle().await;
    let stats = server.stats();
    assert_eq!(stats.failed, 2, "{stats:?}");
    eprintln!(
        "{name}: panicking input: 2 requests 500, 22 batched with them 200 ({} batches), \
         4 after 200",
        stats.batches
    );
}
