//! Starts the axum service (`examples/embed_server/app.rs`) as its `main` does, on an
//! ephemeral loopback port, with a 2 s header timeout (so the slow-client checks run fast).

use std::sync::Arc;
use std::time::Duration;

use crate::app;
use crate::service::Service;

/// How long a client may take over its headers here.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `service` on `127.0.0.1:0` from the current tokio runtime; returns its base URL.
pub fn launch(service: Arc<Service>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        app::serve(
            listener,
            app::router(service),
            HEADER_TIMEOUT,
            std::future::pending(),
        )
        .await
    });
    format!("http://{addr}")
}
