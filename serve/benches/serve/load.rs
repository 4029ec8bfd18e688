//! The load generator: C concurrent HTTP clients for T seconds against 127.0.0.1, and the
//! service launched in this process on axum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corestream_serve::http::axum as app;
use corestream_serve::service::Service;

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The load's settings.
#[derive(Clone, Copy)]
pub struct Load {
    pub clients: u64,
    pub secs: u64,
    pub max_requests: u64,
}

pub struct Outcome {
    pub ok: u64,
    pub rows: u64,
    pub overloaded: u64,
    pub failed: u64,
    pub secs: f64,
    pub latencies: Vec<Duration>,
}

impl Outcome {
    pub fn p(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i].as_secs_f64() * 1e3
    }
}

/// What client `c` sends as its `i`-th request: path, JSON body, rows.
pub type Workload = Arc<dyn Fn(u64, u64) -> (&'static str, String, u64) + Send + Sync>;

pub async fn drive(base: &str, load: Load, workload: Workload) -> Outcome {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.clients as usize)
        .build()
        .expect("http client");
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(load.secs);
    let start = Instant::now();
    let mut handles = Vec::new();
    for c in 0..load.clients {
        let (client, base, sent, workload) = (
            client.clone(),
            base.to_owned(),
            Arc::clone(&sent),
            Arc::clone(&workload),
        );
        handles.push(tokio::spawn(async move {
            let mut out = (0u64, 0u64, 0u64, 0u64, Vec::new());
            let mut i = 0;
            while Instant::now() < deadline
                && sent.fetch_add(1, Ordering::Relaxed) < load.max_requests
            {
                let (path, body, rows) = workload(c, i);
                i += 1;
                let t = Instant::now();
                let response = client
                    .post(format!("{base}{path}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        out.0 += 1;
                        out.1 += rows;
                        out.4.push(t.elapsed());
                    }
                    Ok(r) if r.status() == 503 => out.2 += 1,
                    _ => out.3 += 1,
                }
            }
            out
        }));
    }
    let mut o = Outcome {
        ok: 0,
        rows: 0,
        overloaded: 0,
        failed: 0,
        secs: 0.0,
        latencies: Vec::new(),
    };
    for h in handles {
        let (ok, rows, overloaded, failed, latencies) = h.await.expect("client task");
        o.ok += ok;
        o.rows += rows;
        o.overloaded += overloaded;
        o.failed += failed;
        o.latencies.extend(latencies);
    }
    o.secs = start.elapsed().as_secs_f64();
    o.latencies.sort_unstable();
    o
}

pub fn launch(service: Service) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback port");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        app::serve(
            listener,
            app::router(Arc::new(service)),
            Duration::from_secs(10),
            std::future::pending(),
        )
        .await
    });
    format!("http://{addr}")
}
