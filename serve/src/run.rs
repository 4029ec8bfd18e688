//! [`run`]: the service as `corestream serve` runs it. Logs and metrics are set up, the
//! listener opens at once and the model loads in the background (`/health` answers 503 until
//! it is ready, and for good if it fails to load: the reason goes to the log); Ctrl-C or
//! SIGTERM marks the service draining (`/health` 503), keeps serving for `--drain-delay-ms`,
//! then stops
//! accepting connections and finishes the requests in flight; the request totals logged at
//! exit show none was lost.

use std::sync::Arc;
use std::time::Duration;

use crate::args::{Args, Server};
use crate::error::Error;
use crate::model::accuracy::Accuracy;
use crate::service::{load, telemetry, Loaded, Models, Service, State};

/// Serves the model `args` name until Ctrl-C or SIGTERM, on the server `args.server` names;
/// blocks the calling thread (it builds the server's own runtime).
///
/// # Errors
///
/// Flags that do not fit together ([`Args::check`]), logs or metrics already set up in this
/// process, the address cannot be bound, or `--server actix` in a build without feature
/// `actix`. A model that fails to load is not an
/// error here: the service keeps answering `/health` with 503 (the reason in the log), as a container
/// orchestrator expects.
pub fn run(args: Args) -> Result<(), Error> {
    args.check().map_err(Error::Config)?;
    match args.server {
        Server::Axum => run_axum(args),
        #[cfg(feature = "actix")]
        Server::Actix => run_actix(args),
        #[cfg(not(feature = "actix"))]
        Server::Actix => Err(Error::Config(
            "--server actix: this build of corestream-serve has no feature `actix`".into(),
        )),
    }
}

/// Logs, the Prometheus recorder (before any batcher is built: batchers register their
/// metrics when built) and the service, still loading.
fn start(args: &Args) -> Result<Arc<Service>, Error> {
    telemetry::init_tracing().map_err(Error::Telemetry)?;
    let prometheus = telemetry::install_prometheus().map_err(Error::Telemetry)?;
    Ok(Arc::new(
        Service::new(telemetry::renderer(prometheus))
            .with_body_timeout(Duration::from_millis(args.body_timeout_ms))
            .with_body_budget(usize::try_from(args.body_budget_mib << 20).unwrap_or(usize::MAX))
            .with_request_timeout(args.request_timeout)
            .with_stuck_after(args.stuck_after)
            .with_api_key(args.api_key.clone())
            .with_max_concurrent_requests(args.max_concurrent_requests),
    ))
}

/// Loads the models on a thread of its own (the listener is already open), then logs the
/// line per model that says what was chosen, or why loading failed.
fn load_in_background(service: &Arc<Service>, args: &Args, workers: usize) {
    let args = args.clone();
    service.load_in_background(move || {
        let models: Models = load::load(&args)?;
        for loaded in models.iter() {
            log_choice(loaded, &args, workers);
        }
        Ok(models)
    });
}

fn log_choice(loaded: &Loaded, args: &Args, workers: usize) {
    let info = &loaded.info;
    // `--streams tune`: the line says so (the candidates are on the `streams tuned` line).
    let tuned = info.tuning.as_ref().map_or_else(String::new, |t| {
        format!(
            ", tuned: the best of {} profiles in {:.1} s",
            t.candidates.len(),
            t.seconds
        )
    });
    tracing::info!(
        model = %info.model_id,
        backend = %info.backend,
        streams = info.streams,
        streams_tuned = info.tuning.is_some(),
        stream_cpus = %info.stream_cpus.join(" "),
        width = %info.width,
        max_batch = info.max_batch,
        max_batch_tokens = info.max_batch_tokens,
        max_client_batch = info.max_client_batch_size,
        max_input_length = info.max_input_length,
        max_input_length_source = %info.max_input_length_source,
        model_type = %info.model_type,
        labels = %info.labels.join(","),
        pooling = %info.pooling,
        onnx_file = info.onnx_file.as_deref().unwrap_or("-"),
        onnx_file_reason = info.onnx_file_reason.as_deref().unwrap_or("-"),
        accuracy_gate = %info.accuracy_gate.as_ref().map_or_else(|| "-".to_owned(), Accuracy::summary),
        cpu_quota = info.cpu_quota.map_or_else(|| "none".to_owned(), |q| format!("{q:.2}")),
        default_prompt_name = info.default_prompt_name.as_deref().unwrap_or("-"),
        server = ?args.server,
        http_workers = workers,
        "ready: serving {} on {} with {} streams ({}{}), batches of at most {} rows / {} \
         tokens, inputs of at most {} tokens",
        info.model_id,
        info.backend,
        info.streams,
        info.stream_cpus.join(" "),
        tuned,
        info.max_batch,
        info.max_batch_tokens,
        info.max_input_length,
    );
}

fn run_axum(args: Args) -> Result<(), Error> {
    let workers = args
        .http_workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(async move {
            let service = start(&args)?;
            let listener = tokio::net::TcpListener::bind(&args.bind)
                .await
                .map_err(|source| Error::Bind {
                    address: args.bind.clone(),
                    source,
                })?;
            tracing::info!(address = %listener.local_addr()?, server = "axum", workers, "listening");
            load_in_background(&service, &args, workers);
            let drain =
                drain_on_signal(Arc::clone(&service), Duration::from_millis(args.drain_delay_ms));
            crate::http::axum::serve(
                listener,
                crate::http::axum::router(Arc::clone(&service)),
                Duration::from_millis(args.header_timeout_ms),
                drain,
            )
            .await;
            service.log_final_stats();
            Ok(())
        })
}

/// actix-web: `HttpServer::new` calls its factory once per HTTP worker, so the service (and
/// with it the pinned streams and the one copy of the model) is built once, outside the
/// factory, and every worker's `App` shares it through `web::Data`. Each worker is a thread
/// with its own event loop; few of them (default 1) leave the cores to the streams.
#[cfg(feature = "actix")]
fn run_actix(args: Args) -> Result<(), Error> {
    use actix_web::{web, App, HttpServer};

    let workers = args.http_workers.unwrap_or(1).max(1);
    actix_web::rt::System::new().block_on(async move {
        let service = start(&args)?;
        let data = web::Data::from(Arc::clone(&service));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(crate::http::actix::routes)
        })
        .workers(workers)
        // Each connection's socket, so handlers notice a client that left.
        .on_connect(crate::http::actix::on_connect)
        .client_request_timeout(Duration::from_millis(args.header_timeout_ms))
        // Our own signal handling: mark draining first, then stop gracefully.
        .disable_signals()
        .bind(&args.bind)
        .map_err(|source| Error::Bind {
            address: args.bind.clone(),
            source,
        })?;
        for address in server.addrs() {
            tracing::info!(%address, server = "actix", workers, "listening");
        }
        load_in_background(&service, &args, workers);
        let server = server.run();
        let handle = server.handle();
        let delay = Duration::from_millis(args.drain_delay_ms);
        let draining = Arc::clone(&service);
        actix_web::rt::spawn(async move {
            drain_on_signal(draining, delay).await;
            handle.stop(true).await;
        });
        server.await?;
        service.log_final_stats();
        Ok(())
    })
}

/// Ctrl-C or SIGTERM (what Kubernetes sends): marks the service draining (`/health` 503),
/// keeps serving for `delay`, then returns, which starts the server's graceful shutdown (no
/// new connections, requests in flight finish).
pub async fn drain_on_signal(service: Arc<Service>, delay: Duration) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    service.health.set(State::Draining, Some("draining".into()));
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        "draining: /health answers 503, stopping after the delay"
    );
    tokio::time::sleep(delay).await;
    tracing::info!("shutting down: finishing requests in flight");
}
