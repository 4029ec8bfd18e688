//! Starts the actix-web service (`examples/actix_embed/app.rs`) as its `main` does: one
//! service (one `Batcher`) built outside `HttpServer::new`'s factory and shared through
//! `web::Data`, one HTTP worker, on its own actix system thread, on an ephemeral loopback
//! port, with a 2 s header timeout (so the slow-client checks run fast).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpServer};

use crate::actix_app;
use crate::service::Service;

/// How long a client may take over its headers here.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `service` on `127.0.0.1:0`; returns its base URL.
pub fn launch(service: Arc<Service>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let data = web::Data::from(service);
            HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .configure(actix_app::routes)
            })
            .workers(1)
            .on_connect(actix_app::on_connect)
            .client_request_timeout(HEADER_TIMEOUT)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run()
            .await
            .unwrap()
        })
    });
    format!("http://{addr}")
}
