//! The service's life before it serves: a loader that fails or panics leaves the service
//! failed (readiness and liveness 503, so an orchestrator restarts it), never "loading" for
//! ever, and clients learn that the load failed, not why (the log says why).

use std::sync::Arc;

use corestream_serve::http::{handle, BodyError, BodySize, RequestHead, Route};
use corestream_serve::service::state::LOAD_FAILED;
use corestream_serve::service::{Service, State};
use serde_json::Value;

/// `route`'s status and JSON body, through the framework-neutral handler.
async fn ask(service: &Service, route: Route, body: &'static str) -> (u16, Value) {
    let size = BodySize::Exact(body.len() as u64);
    let reply = handle(service, route, RequestHead::json(size), async {
        Ok::<_, BodyError>(body)
    })
    .await;
    (
        reply.status,
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null),
    )
}

async fn assert_failed(service: &Service) {
    assert_eq!(service.health.state(), State::Failed);
    for route in [Route::Health, Route::Ready, Route::Live] {
        let (status, body) = ask(service, route, "").await;
        assert_eq!(status, 503, "{route:?}: {body}");
        assert_eq!(body["status"], "failed", "{route:?}: {body}");
        assert_eq!(body["message"], LOAD_FAILED, "{route:?}: {body}");
    }
    let (status, body) = ask(service, Route::OpenAiEmbeddings, r#"{"input": "a"}"#).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["message"], LOAD_FAILED, "{body}");
}

#[tokio::test]
async fn a_panicking_loader_leaves_the_service_failed() {
    let _shared = crate::support::shared().await;
    let service = Arc::new(Service::new(Arc::new(String::new)));
    assert_eq!(service.health.state(), State::Loading);
    let loader = service
        .load_in_background(|| panic!("a bug in the loader at /secret/models/x.onnx"))
        .expect("a loading thread");
    loader.join().unwrap();
    assert_failed(&service).await;
}

#[tokio::test]
async fn a_failing_loader_leaves_the_service_failed_without_telling_why() {
    let _shared = crate::support::shared().await;
    let service = Arc::new(Service::new(Arc::new(String::new)));
    let loader = service
        .load_in_background(|| {
            Err(corestream::Error::ModelLoad {
                model: "/secret/models/x.onnx".into(),
                message: "no such file".into(),
            })
        })
        .expect("a loading thread");
    loader.join().unwrap();
    assert_failed(&service).await;
}
