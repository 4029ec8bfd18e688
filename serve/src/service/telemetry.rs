//! Logs and metrics of the service, with the ecosystem's crates: `tracing-subscriber` for
//! logs and spans (level from `RUST_LOG`, default `info`; format from
//! `CORESTREAM_LOG_FORMAT=text|json`), and `metrics-exporter-prometheus` as the `metrics`
//! recorder rendered at `GET /metrics` (the batchers' metrics from corestream's `metrics`
//! feature, and the HTTP metrics counted in `handlers.rs`). The recorder must be installed
//! before the batcher is built: the batcher registers its metrics when it is built.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Latency buckets (seconds) of every `*_seconds` histogram.
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of the rows-per-batch histogram.
pub const ROWS_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Buckets of the tokens-per-batch histogram.
pub const TOKENS_BUCKETS: [f64; 11] = [
    16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default `info`),
/// `CORESTREAM_LOG_FORMAT` is `text` (default) or `json` (one JSON object per line, with the
/// current span and its parents). Logs go to stderr, coloured only when it is a terminal.
pub fn init_tracing() -> Result<(), String> {
    use std::io::IsTerminal as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = std::env::var("CORESTREAM_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format.as_str() {
        "" | "text" => builder.try_init(),
        "json" => builder.json().with_span_list(true).try_init(),
        other => {
            return Err(format!(
                "CORESTREAM_LOG_FORMAT={other:?}: expected text or json"
            ))
        }
    }
    .map_err(|e| format!("cannot install the tracing subscriber: {e}"))
}

/// Installs the Prometheus recorder as the global `metrics` recorder (histogram buckets by
/// name suffix: `_seconds`, `_rows`, `_tokens`) and describes the HTTP metrics; the handle
/// renders the exposition text (each metric's HELP and TYPE once).
pub fn install_prometheus() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), &ROWS_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_tokens".into()), &TOKENS_BUCKETS))
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the Prometheus recorder: {e}"))?;
    describe();
    Ok(handle)
}

/// HELP texts of the service's own metrics.
pub fn describe() {
    metrics::describe_counter!(
        "corestream_http_requests_total",
        "HTTP requests answered, by route and status."
    );
    metrics::describe_histogram!(
        "corestream_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from the body read to the answer, by route."
    );
    metrics::describe_counter!(
        "corestream_embed_inputs_total",
        "Inputs (texts or token lists) embedded, by model."
    );
    metrics::describe_counter!(
        "corestream_embed_tokens_total",
        "Tokens embedded (after truncation, special tokens included), by model."
    );
    metrics::describe_gauge!(
        "corestream_http_requests_in_flight",
        "POST requests admitted and not yet answered (the autoscaling signal), by model."
    );
    metrics::describe_counter!(
        "corestream_http_overloaded_total",
        "Requests answered 429, by route and why (queue, body_budget, in_flight)."
    );
}

/// A renderer for `GET /metrics` over `handle`.
pub fn renderer(handle: PrometheusHandle) -> std::sync::Arc<dyn Fn() -> String + Send + Sync> {
    std::sync::Arc::new(move || {
        handle.run_upkeep();
        handle.render()
    })
}
