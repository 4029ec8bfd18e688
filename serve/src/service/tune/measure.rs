//! How one profile is measured: a closed loop of one-row requests of the [`PROBES`]' ids
//! ([`probes`]) on its batcher, its rate by Little's law ([`measure`]).

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use corestream::batch::Rows;
use corestream::{Batcher, Module};
use futures::future::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};

use super::PROBES;
use crate::model::{Encoded, Keep, TextTokenizer};

/// The [`PROBES`]' token ids, each cut to the model's longest input.
pub(super) fn probes(tokenizer: &TextTokenizer) -> corestream::Result<Vec<Encoded>> {
    PROBES
        .iter()
        .map(|text| {
            let mut ids = tokenizer
                .encode(text)
                .map_err(|e| corestream::Error::InvalidConfig(format!("streams tuning: {e}")))?;
            tokenizer.truncate(&mut ids, tokenizer.max_input_length().max(1), Keep::Start);
            Ok(Encoded::single(ids))
        })
        .collect()
}

/// Wakes the measuring thread.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Rows per second `batcher` answers to a closed loop of `in_flight` one-row requests, each
/// answer followed at once by the next request (cycling through `probes`), from `start`.
///
/// The first answers warm it up: `warm_answers` of them (about one batch per stream), or
/// those before `warm_until`. The requests sent from then until one request's time before
/// `deadline` (and at least `warm_answers` of them) are timed, each from when it was sent to
/// when its answer was seen, and the loop runs on (sending requests not timed, so the load
/// stays the same) until all of them are answered, about at the deadline. In a
/// closed loop `in_flight` requests are always out, so by Little's law the rate is
/// `in_flight` over their mean time: every timed request counts whole, wherever the batches
/// begin and end. A profile too slow for that by the deadline runs on until its timed
/// requests are answered; at `hard_deadline` the loop stops whatever it has (0 when no timed
/// request was answered). The requests still out then are dropped (a dropped
/// request is not run).
#[allow(clippy::too_many_arguments)]
pub(super) fn measure<M>(
    batcher: &Batcher<M>,
    probes: &[Encoded],
    in_flight: usize,
    warm_answers: usize,
    warm_until: Instant,
    deadline: Instant,
    hard_deadline: Instant,
) -> corestream::Result<f64>
where
    M: Module<Input = Rows<Encoded>, Output = Rows<Vec<f32>>>,
{
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut sent = 0;
    // A request, when it was sent, and whether it is timed.
    let mut send = |timed: bool| {
        sent += 1;
        let at = Instant::now();
        batcher
            .infer(Rows(vec![probes[sent % probes.len()].clone()]))
            .map(move |answer| (at, timed, answer))
    };
    let mut pending: FuturesUnordered<_> = (0..in_flight).map(|_| send(false)).collect();
    let (mut warm, mut warmed) = (0, false);
    // Timed requests: whether more are sent, how many are out, answered, and their time.
    let (mut timing, mut out, mut answered, mut time) = (true, 0usize, 0u32, Duration::ZERO);
    // The time of the last answered request: timing stops that long before the deadline.
    let mut latency = Duration::ZERO;
    loop {
        let now = Instant::now();
        if timing && now + latency >= deadline && out + answered as usize >= warm_answers {
            timing = false;
        }
        if now >= hard_deadline || (!timing && out == 0) {
            break;
        }
        match pending.poll_next_unpin(&mut cx) {
            Poll::Ready(Some((at, timed, answer))) => {
                answer.map_err(|e| {
                    corestream::Error::InvalidConfig(format!(
                        "streams tuning: the model failed on a probe: {e}"
                    ))
                })?;
                let now = Instant::now();
                latency = now - at;
                if timed {
                    (out, answered, time) = (out - 1, answered + 1, time + (now - at));
                } else if !warmed {
                    warm += 1;
                    warmed = warm >= warm_answers || now >= warm_until;
                }
                let timed = timing && warmed;
                out += usize::from(timed);
                pending.push(send(timed));
            }
            Poll::Ready(None) => break,
            Poll::Pending => {
                let until = if timing { deadline } else { hard_deadline };
                std::thread::park_timeout(until.saturating_duration_since(now));
            }
        }
    }
    Ok(match answered {
        0 => 0.0,
        n => in_flight as f64 / (time / n).as_secs_f64().max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use corestream::{CpuPool, Streams};

    use super::*;
    use crate::service::load::{self, BatchOptions};

    #[test]
    fn the_rate_is_that_of_the_batches() {
        use corestream::{module_fn, Width};

        // One stream, batches of up to 4 rows, each call 20 ms: 200 rows/s.
        let model = module_fn(|rows: Rows<Encoded>| {
            std::thread::sleep(Duration::from_millis(20));
            Ok(Rows(
                rows.0.iter().map(|_| vec![1.0f32]).collect::<Vec<_>>(),
            ))
        });
        let pool = CpuPool::new([CpuPool::all().unwrap().cpus()[0]]).unwrap();
        let options = BatchOptions {
            pool,
            streams: Streams::Count(1),
            max_batch: 4,
            max_batch_tokens: None,
            max_wait: Duration::ZERO,
            queue: 64,
            max_client_batch: 32,
            auto_truncate: false,
            count_only: false,
            width: Width::Narrow,
            tune: None,
        };
        let batcher = load::batcher(model, "rate", &options, 64).unwrap();
        let probes = [Encoded::single(vec![1, 2, 3])];
        let start = Instant::now();
        let ms = Duration::from_millis;
        let rate = measure(
            &batcher,
            &probes,
            8,
            4,
            start + ms(200),
            start + ms(600),
            start + ms(1800),
        )
        .unwrap();
        // Sleeps overshoot: a little under 200.
        assert!((120.0..=205.0).contains(&rate), "{rate}");
        // A profile slower than its slot measures on.
        let slow = measure(
            &batcher,
            &probes,
            8,
            4,
            Instant::now(),
            Instant::now() + ms(1),
            Instant::now() + ms(2000),
        )
        .unwrap();
        assert!((120.0..=205.0).contains(&slow), "{slow}");
    }
}
