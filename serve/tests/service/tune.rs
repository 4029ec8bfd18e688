//! `--streams tune` below the command ([`BatchOptions::tune`]): the sweep measures the planned
//! profiles on the model, serves the chosen one (its streams and budget in `/info`), answers
//! as an untuned model does, leaves `/metrics` to the traffic, and a model that fails on the
//! probes fails the load with a message rather than a panic.

use std::time::Duration;

use corestream::batch::Rows;
use corestream::{BoxError, Module};
use corestream_serve::model::embedder::Backend;
use corestream_serve::model::Encoded;
use corestream_serve::service::tune::Plan;
use corestream_serve::service::{serve_model, BatchOptions, Loaded};

use crate::support::{load, max_diff, options, telemetry, Kind, Model};

/// The sweep's time in these tests: short, as `--tune-seconds` allows it.
const TIME: Duration = Duration::from_millis(600);

fn serve(model: Model, name: &str, options: &BatchOptions) -> corestream::Result<Loaded> {
    let (_, tokenizer) = load(Kind::TextNet, Backend::Tract);
    serve_model(model, tokenizer, name, "test".into(), options)
}

fn vectors(loaded: &Loaded, rows: &[Vec<u32>]) -> Vec<Vec<f32>> {
    let input = Rows(rows.iter().cloned().map(Encoded::single).collect());
    futures::executor::block_on(loaded.embedder.infer(input))
        .unwrap()
        .0
}

#[test]
fn the_sweep_serves_a_measured_profile_and_answers_as_untuned() {
    let _shared = crate::support::shared_blocking();
    let render = telemetry();
    let (model, tokenizer) = load(Kind::TextNet, Backend::Tract);
    let max_input_length = tokenizer.max_input_length();
    for count_only in [false, true] {
        let base = BatchOptions {
            count_only,
            ..options(256, 16)
        };
        let tuned_options = BatchOptions {
            tune: Some(TIME),
            ..base.clone()
        };
        let name = format!("tuned-{count_only}");
        let tuned = serve(model.clone(), &name, &tuned_options).unwrap();
        let info = &tuned.info;
        let tuning = info.tuning.as_ref().expect("tuned");
        let fixed = count_only.then_some(0);
        let plan = Plan::new(base.pool.len(), None, 16, max_input_length, fixed);
        let quota = corestream::quota::CpuQuota::detect();
        let cpus = corestream::Streams::auto_count(base.pool.len(), quota.as_ref());
        assert_eq!(tuning.cpus, cpus, "{tuning:?}");
        if quota.is_none() {
            assert_eq!(tuning.candidates.len(), plan.len(), "{tuning:?}");
        }
        assert!(
            tuning.candidates.iter().any(|c| c.profile == tuning.chosen),
            "{tuning:?}"
        );
        let chosen = tuning
            .candidates
            .iter()
            .find(|c| c.profile == tuning.chosen)
            .unwrap();
        assert!(chosen.rows_per_s > 0.0, "{tuning:?}");
        assert!(tuning.candidates.iter().all(|c| c.rows_per_s >= 0.0));
        // Served as chosen.
        assert_eq!(info.streams, tuning.chosen.streams, "{info:?}");
        assert_eq!(info.stream_cpus.len(), tuning.chosen.streams);
        assert_eq!(info.max_batch_tokens, tuning.chosen.max_batch_tokens);
        assert_eq!(
            tuning.chosen.streams * tuning.chosen.threads_per_stream,
            tuning.cpus
        );
        if count_only {
            assert_eq!(info.max_batch_tokens, 0, "{info:?}");
        }
        // The sweep took about its time (and its streams' start and stop).
        assert!((0.5..30.0).contains(&tuning.seconds), "{}", tuning.seconds);
        // The same vectors as an untuned model's.
        let plain = serve(model.clone(), &format!("plain-{count_only}"), &base).unwrap();
        assert!(plain.info.tuning.is_none());
        let rows: Vec<Vec<u32>> = (1..6)
            .map(|n| (0..n * 7).map(|i| 40 + i).collect())
            .collect();
        let (a, b) = (vectors(&tuned, &rows), vectors(&plain, &rows));
        assert_eq!(a.len(), rows.len());
        assert!(max_diff(&a, &b) < 1e-5);
        // `/info` shows the report.
        let json = serde_json::to_value(info).unwrap();
        assert_eq!(json["tuning"]["chosen"]["streams"], info.streams, "{json}");
        assert!(serde_json::to_value(&plain.info).unwrap()["tuning"].is_null());
    }
    // The sweep's batchers record no metrics: /metrics counts traffic.
    let metrics = render();
    assert!(metrics.contains("model=\"tuned-false\""), "{metrics}");
    assert!(!metrics.contains("(tuning)"), "{metrics}");
}

/// Fails on inputs of more than 20 tokens (the sweep's longest probe), not on the dimension
/// probe.
struct ShortOnly(Model);

impl Module for ShortOnly {
    type Input = Rows<Encoded>;
    type Output = Rows<Vec<f32>>;
    fn forward(&self, x: Rows<Encoded>) -> Result<Rows<Vec<f32>>, BoxError> {
        if x.0.iter().any(|e| e.len() > 20) {
            return Err("too long for this model".into());
        }
        self.0.forward(x)
    }
}

#[test]
fn a_model_that_fails_on_the_probes_fails_the_load_with_a_message() {
    let _shared = crate::support::shared_blocking();
    telemetry();
    let (model, tokenizer) = load(Kind::TextNet, Backend::Tract);
    let options = BatchOptions {
        tune: Some(TIME),
        ..options(256, 16)
    };
    let loaded = serve_model(
        ShortOnly(model),
        tokenizer,
        "short-only",
        "test".into(),
        &options,
    );
    let Err(error) = loaded else {
        panic!("the sweep fails");
    };
    let message = error.to_string();
    assert!(message.contains("streams tuning"), "{message}");
    assert!(message.contains("too long for this model"), "{message}");
}
