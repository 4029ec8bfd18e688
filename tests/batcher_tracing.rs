//! Batcher spans (feature `tracing`), observed with a recording `tracing-subscriber` layer:
//! `queue_wait` per request (child of the caller's span, closed when a stream takes it, with
//! the stream recorded), `batch` per batch with `batch_form` and `stream_run` inside it, all
//! carrying the batcher's name, stream index, rows and tokens.
#![cfg(feature = "tracing")]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use corestream::ndarray::Array2;
use corestream::{Batcher, BoxError, CpuPool, Module, MultiStreamModule};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// A closed span: its name, its fields (recorded at creation or later), its parent's name.
#[derive(Debug, Clone)]
struct Closed {
    name: &'static str,
    fields: BTreeMap<&'static str, String>,
    parent: Option<&'static str>,
}

#[derive(Default)]
struct Fields(BTreeMap<&'static str, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

/// Keeps every closed span.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Closed>>>);

impl<S> Layer<S> for Spans
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            let fields = span.extensions_mut().remove::<Fields>().unwrap_or_default();
            self.0.lock().unwrap().push(Closed {
                name: span.name(),
                fields: fields.0,
                parent: span.parent().map(|p| p.name()),
            });
        }
    }
}

/// x + 1, after the gate opens (when there is one).
struct Gated(Mutex<mpsc::Receiver<()>>);

impl Module for Gated {
    type Input = Array2<f32>;
    type Output = Array2<f32>;
    fn forward(&self, x: Array2<f32>) -> Result<Array2<f32>, BoxError> {
        self.0.lock().unwrap().recv()?;
        Ok(x + 1.0)
    }
}

#[test]
fn queue_batch_form_and_run_spans_carry_name_stream_rows_and_tokens() {
    let spans = Spans::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(spans.clone()))
        .unwrap();
    let (gate, rx) = mpsc::channel();
    let pool = CpuPool::new([CpuPool::all().unwrap().cpus()[0]]).unwrap();
    let msm = MultiStreamModule::builder(Gated(Mutex::new(rx)))
        .pool(pool)
        .build()
        .unwrap();
    let b = Batcher::builder(msm)
        .name("encoder")
        .max_batch(8)
        .max_batch_tokens(64)
        // Each row's length is its width.
        .tokens(|x: &Array2<f32>| x.ncols())
        .build()
        .unwrap();
    let first = {
        let _client = tracing::info_span!("client", id = 0).entered();
        b.infer(Array2::zeros((1, 4)))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.stats().queue_depth > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Three requests of 2, 1 and 3 rows of 4 tokens queue behind the first: one batch of 6 x 4.
    let rest: Vec<_> = [2, 1, 3]
        .into_iter()
        .map(|rows| {
            let _client = tracing::info_span!("client", id = rows).entered();
            (rows, b.infer(Array2::zeros((rows, 4))))
        })
        .collect();
    gate.send(()).unwrap();
    gate.send(()).unwrap();
    assert_eq!(first.wait().unwrap(), Array2::<f32>::ones((1, 4)));
    for (rows, f) in rest {
        assert_eq!(f.wait().unwrap(), Array2::<f32>::ones((rows, 4)));
    }
    drop(b);
    let closed = spans.0.lock().unwrap().clone();
    let named = |name: &str| -> Vec<&Closed> { closed.iter().filter(|s| s.name == name).collect() };
    let field = |s: &Closed, f: &str| s.fields.get(f).cloned().unwrap_or_default();

    let queued = named("queue_wait");
    assert_eq!(queued.len(), 4, "{closed:#?}");
    for s in &queued {
        assert_eq!(s.parent, Some("client"), "{s:?}");
        assert_eq!(field(s, "batcher"), "encoder");
        assert_eq!(field(s, "tokens"), "4");
        assert_eq!(field(s, "stream"), "0", "the stream that took it: {s:?}");
    }
    let mut rows: Vec<String> = queued.iter().map(|s| field(s, "rows")).collect();
    rows.sort();
    assert_eq!(rows, ["1", "1", "2", "3"]);

    let batches = named("batch");
    assert_eq!(batches.len(), 2, "{closed:#?}");
    let big = batches
        .iter()
        .find(|s| field(s, "requests") == "3")
        .expect("the batch of three requests");
    for (f, v) in [
        ("batcher", "encoder"),
        ("stream", "0"),
        ("rows", "6"),
        ("tokens", "24"),
    ] {
        assert_eq!(field(big, f), v, "{big:?}");
    }
    // One batch_form (only a batch of several is stacked), two stream_run, inside `batch`.
    let form = named("batch_form");
    assert_eq!(form.len(), 1, "{closed:#?}");
    assert_eq!(
        (form[0].parent, field(form[0], "rows")),
        (Some("batch"), "6".into())
    );
    let run = named("stream_run");
    assert_eq!(run.len(), 2, "{closed:#?}");
    for s in run {
        assert_eq!(s.parent, Some("batch"));
        assert_eq!(field(s, "batcher"), "encoder");
    }
}
