//! Soak run (issue 15): a `Task`, a `MultiStreamModule` and a `Batcher` (plus direct calls to
//! the batcher's own module, which its serve loops take between batches) driven at once, for
//! `--duration`, by async callers on a tokio runtime and by sync callers on plain threads,
//! through a model that fails 1% of the requests, panics on 1% and sleeps on 10%. Callers await
//! or `wait()`, or drop their future at once (before the job starts, usually) or after a short
//! random time (often while it runs).
//!
//! What is checked (any failure is a violation; the run exits 1 after its one summary line):
//! - every request that was not dropped got exactly its own answer: its rows `2x + 1`, or the
//!   model's error or panic for that request (`Error::Module`/`Error::Panicked` naming its id),
//!   or `Error::Overloaded` from the batcher, never `Shutdown`, never someone else's rows, and
//!   within 30 s;
//! - the callers' counts add up: answered + dropped = submitted, per target;
//! - the library's counters add up against them once the queues are drained: a task's and a
//!   module's `StreamStats` (`submitted` = jobs queued, `completed + failed + skipped =
//!   submitted`, failures between those seen and those possible), the batcher's `BatcherStats`
//!   (`accepted + rejected` = requests, `accepted = completed + failed + cancelled`, queue
//!   empty);
//! - the process's thread count (`/proc/self/status` `Threads`) stays what it was after the
//!   warm-up, and is back to what it was before start-up once everything is dropped;
//! - RSS at the end is less than max(2%, 1 MB) above RSS after the warm-up.
//!
//! ```text
//! cargo bench --bench soak -- --duration 20            # what CI runs (also under taskset -c 0)
//! cargo bench --bench soak -- --duration 3 --control all
//! ```
//!
//! Flags: `--duration D` (`60`, `20s`, `1500ms`, `2m`; default 60 s), `--async-callers N` (32),
//! `--sync-callers N` (4), `--seed N`, and `--control lost,threads,rss` (or `all`): a positive
//! control that injects that fault after the warm-up (one request's future leaked without an
//! answer, one extra thread, 16 MB of leaked memory), so the run must fail and name it.
//! Exit status: 0 without violations, 1 with, 2 for bad flags.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use corestream::ndarray::Array2;
use corestream::{
    Batcher, BoxError, CpuPool, Error, Module, MultiStreamModule, Result, StreamStats, Task,
};

/// Columns of every row: the request id, then payload derived from it.
const COLS: usize = 4;
/// Longest a caller may wait for an answer before it counts as lost.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);
/// Batcher queue: small, so that overload happens under load.
const QUEUE_CAPACITY: usize = 16;

/// SplitMix64: a request's fate comes from its id; callers draw their choices from it too.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0) % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Fine,
    Slow(u64),
    Fail,
    Panic,
}

/// 1% errors, 1% panics, 10% sleep 20-200 us.
fn fate(id: u64) -> Fate {
    let h = mix(id ^ 0x5EED);
    match h % 100 {
        0 => Fate::Fail,
        1 => Fate::Panic,
        2..=11 => Fate::Slow(20 + (h >> 8) % 180),
        _ => Fate::Fine,
    }
}

fn input(id: u64, rows: usize) -> Array2<f64> {
    Array2::from_shape_fn((rows, COLS), |(r, c)| {
        if c == 0 {
            id as f64
        } else {
            ((id.wrapping_mul(31) + r as u64 * 7 + c as u64) % 1000) as f64
        }
    })
}

/// Every row's fate is its request's (all rows of a request carry its id).
struct SoakModel;

impl Module for SoakModel {
    type Input = Array2<f64>;
    type Output = Array2<f64>;

    fn forward(&self, x: Array2<f64>) -> std::result::Result<Array2<f64>, BoxError> {
        let mut sleep = 0;
        for row in x.rows() {
            let id = row[0] as u64;
            match fate(id) {
                Fate::Fail => return Err(format!("soak: injected error for request {id}").into()),
                Fate::Panic => panic!("soak: injected panic for request {id}"),
                Fate::Slow(us) => sleep = sleep.max(us),
                Fate::Fine => {}
            }
        }
        if sleep > 0 {
            std::thread::sleep(Duration::from_micros(sleep));
        }
        Ok(x.mapv(|v| v * 2.0 + 1.0))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Task,
    Module,
    Batcher,
    /// `batcher.module().forward(..)`: jobs on the streams that serve the batcher.
    Direct,
}

const TARGETS: [Target; 4] = [
    Target::Task,
    Target::Module,
    Target::Batcher,
    Target::Direct,
];

/// What the callers of one target counted.
#[derive(Default)]
struct Tally {
    submitted: AtomicU64,
    /// Stream jobs queued for these requests (parts of a module call, one per task call).
    jobs: AtomicU64,
    ok: AtomicU64,
    module_err: AtomicU64,
    panicked: AtomicU64,
    overloaded: AtomicU64,
    dropped: AtomicU64,
    /// Dropped requests that would have failed (they may or may not have run).
    dropped_failing: AtomicU64,
}

impl Tally {
    fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::SeqCst)
    }
    fn answered(&self) -> u64 {
        Self::get(&self.ok)
            + Self::get(&self.module_err)
            + Self::get(&self.panicked)
            + Self::get(&self.overloaded)
    }
    fn failed(&self) -> u64 {
        Self::get(&self.module_err) + Self::get(&self.panicked)
    }
}

/// Violations: counted, the first few kept with their detail.
#[derive(Default)]
struct Violations {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Violations {
    fn add(&self, what: String) {
        self.count.fetch_add(1, Ordering::SeqCst);
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if first.len() < 12 {
            first.push(what);
        }
    }
    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.add(what());
        }
    }
}

struct Soak {
    task: Task<Arc<SoakModel>>,
    module: MultiStreamModule<Arc<SoakModel>>,
    batcher: Batcher<Arc<SoakModel>>,
    tallies: [Tally; 4],
    violations: Violations,
    next_id: AtomicU64,
    stop: AtomicBool,
}

type Answer = Result<Array2<f64>>;
type Pending = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// One request, made and not yet answered.
struct Request {
    target: Target,
    id: u64,
    rows: usize,
}

impl Soak {
    fn tally(&self, target: Target) -> &Tally {
        &self.tallies[target as usize]
    }

    /// A new request to a random target, counted as submitted.
    fn request(&self, rng: &mut Rng) -> Request {
        let target = TARGETS[rng.below(4) as usize];
        let rows = 1 + rng.below(4) as usize;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let tally = self.tally(target);
        tally.submitted.fetch_add(1, Ordering::SeqCst);
        let jobs = match target {
            Target::Task => 1,
            Target::Module => rows.min(self.module.num_streams()),
            Target::Direct => rows.min(self.batcher.module().num_streams()),
            Target::Batcher => 0,
        };
        tally.jobs.fetch_add(jobs as u64, Ordering::SeqCst);
        Request { target, id, rows }
    }

    /// Submits through the blocking API and waits there (`TaskFuture::wait`,
    /// `ForwardFuture::wait`).
    fn wait(&self, r: &Request) -> Answer {
        let x = input(r.id, r.rows);
        match r.target {
            Target::Task => self.task.submit(x).wait(),
            Target::Module => self.module.forward(x).wait(),
            Target::Batcher => self.batcher.infer(x).wait(),
            Target::Direct => self.batcher.module().forward(x).wait(),
        }
    }

    /// Submits, returning the future (the job is queued now).
    fn submit(&self, r: &Request) -> Pending {
        let x = input(r.id, r.rows);
        match r.target {
            Target::Task => Box::pin(self.task.submit(x)),
            Target::Module => Box::pin(self.module.forward(x)),
            Target::Batcher => Box::pin(self.batcher.infer(x)),
            Target::Direct => Box::pin(self.batcher.module().forward(x)),
        }
    }

    fn dropped(&self, r: &Request) {
        let tally = self.tally(r.target);
        tally.dropped.fetch_add(1, Ordering::SeqCst);
        if matches!(fate(r.id), Fate::Fail | Fate::Panic) {
            tally.dropped_failing.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Checks an answer against what the request must get, and counts it.
    fn answered(&self, r: &Request, answer: Answer) {
        let tally = self.tally(r.target);
        let id = r.id;
        let fate = fate(id);
        let v = &self.violations;
        let tag = format!("request {id} ({:?}, {} rows, {fate:?})", r.target, r.rows);
        match answer {
            Ok(y) => {
                tally.ok.fetch_add(1, Ordering::SeqCst);
                v.check(matches!(fate, Fate::Fine | Fate::Slow(_)), || {
                    format!("{tag}: answered Ok")
                });
                let want = input(id, r.rows).mapv(|v| v * 2.0 + 1.0);
                v.check(y == want, || format!("{tag}: wrong rows {y:?}"));
            }
            Err(Error::Module(e)) => {
                tally.module_err.fetch_add(1, Ordering::SeqCst);
                let msg = e.to_string();
                v.check(
                    fate == Fate::Fail && msg == format!("soak: injected error for request {id}"),
                    || format!("{tag}: got model error {msg:?}"),
                );
            }
            Err(Error::Panicked(msg)) => {
                tally.panicked.fetch_add(1, Ordering::SeqCst);
                v.check(
                    fate == Fate::Panic && msg == format!("soak: injected panic for request {id}"),
                    || format!("{tag}: got panic {msg:?}"),
                );
            }
            Err(Error::Overloaded { capacity }) => {
                tally.overloaded.fetch_add(1, Ordering::SeqCst);
                v.check(
                    r.target == Target::Batcher && capacity == QUEUE_CAPACITY,
                    || format!("{tag}: Overloaded (capacity {capacity})"),
                );
            }
            Err(e) => {
                self.violations.add(format!("{tag}: unexpected error {e}"));
            }
        }
    }
}

/// Polls a future once (for a caller that then gives up on it).
fn poll_once(fut: &mut Pending) -> Option<Answer> {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(answer) => Some(answer),
        Poll::Pending => None,
    }
}

/// A sync caller: 80% wait, 10% drop at once, 10% drop after up to 300 us if not answered.
fn sync_caller(soak: &Soak, seed: u64, busy_since: &AtomicU64, clock: Instant) {
    let mut rng = Rng(seed);
    while !soak.stop.load(Ordering::Relaxed) {
        let r = soak.request(&mut rng);
        match rng.below(10) {
            0 => {
                drop(soak.submit(&r));
                soak.dropped(&r);
            }
            1 => {
                let mut fut = soak.submit(&r);
                std::thread::sleep(Duration::from_micros(rng.below(300)));
                match poll_once(&mut fut) {
                    Some(answer) => soak.answered(&r, answer),
                    None => {
                        drop(fut);
                        soak.dropped(&r);
                    }
                }
            }
            _ => {
                busy_since.store(clock.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
                let answer = soak.wait(&r);
                busy_since.store(0, Ordering::SeqCst);
                soak.answered(&r, answer);
            }
        }
    }
}

/// An async caller: 80% await, 10% drop at once, 10% drop after up to 400 us if not answered.
async fn async_caller(soak: Arc<Soak>, seed: u64) {
    let mut rng = Rng(seed);
    while !soak.stop.load(Ordering::Relaxed) {
        let r = soak.request(&mut rng);
        let fut = soak.submit(&r);
        match rng.below(10) {
            0 => {
                drop(fut);
                soak.dropped(&r);
            }
            1 => {
                let limit = Duration::from_micros(rng.below(400));
                match tokio::time::timeout(limit, fut).await {
                    Ok(answer) => soak.answered(&r, answer),
                    Err(_) => soak.dropped(&r),
                }
            }
            _ => match tokio::time::timeout(ANSWER_LIMIT, fut).await {
                Ok(answer) => soak.answered(&r, answer),
                Err(_) => {
                    soak.dropped(&r);
                    soak.violations.add(format!(
                        "request {} ({:?}): no answer within {ANSWER_LIMIT:?}",
                        r.id, r.target
                    ));
                }
            },
        }
    }
}

/// The names of the process's threads, sorted (`/proc/self/task/*/comm`).
fn thread_names() -> String {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names.join(",")
}

/// `Threads` and `VmRSS` (bytes) from `/proc/self/status`.
fn proc_status() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("Threads:"), field("VmRSS:") * 1024)
}

struct Options {
    duration: Duration,
    async_callers: usize,
    sync_callers: usize,
    seed: u64,
    control_lost: bool,
    control_threads: bool,
    control_rss: bool,
}

/// `--duration`: humantime's syntax (`20s`, `1500ms`, `2m`), as `corestream bench` reads it, or
/// a plain number of seconds (`60`, `2.5`); never zero.
fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s)
        .ok()
        .or_else(|| Duration::try_from_secs_f64(s.parse().ok()?).ok())
        .filter(|d| !d.is_zero())
}

fn options() -> std::result::Result<Options, String> {
    let mut o = Options {
        duration: Duration::from_secs(60),
        async_callers: 32,
        sync_callers: 4,
        seed: 1,
        control_lost: false,
        control_threads: false,
        control_rss: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // `cargo bench` passes --bench to harness-less benches.
        if arg == "--bench" {
            continue;
        }
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--duration" => {
                let v = value("--duration")?;
                o.duration = parse_duration(&v)
                    .ok_or_else(|| format!("--duration {v:?}: use e.g. 60, 20s or 1500ms"))?;
            }
            "--async-callers" | "--sync-callers" | "--seed" => {
                let v = value(&arg)?;
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("{arg} {v:?}: not a number"))?;
                match arg.as_str() {
                    "--async-callers" => o.async_callers = n as usize,
                    "--sync-callers" => o.sync_callers = n as usize,
                    _ => o.seed = n,
                }
            }
            "--control" => {
                for c in value("--control")?.split(',') {
                    match c {
                        "lost" => o.control_lost = true,
                        "threads" => o.control_threads = true,
                        "rss" => o.control_rss = true,
                        "all" => {
                            o.control_lost = true;
                            o.control_threads = true;
                            o.control_rss = true;
                        }
                        other => {
                            return Err(format!("--control {other:?}: lost, threads, rss or all"))
                        }
                    }
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.async_callers + o.sync_callers == 0 {
        return Err("no callers".into());
    }
    Ok(o)
}

fn sum(stats: &[StreamStats]) -> StreamStats {
    let mut s = StreamStats::default();
    for x in stats {
        s.submitted += x.submitted;
        s.completed += x.completed;
        s.failed += x.failed;
        s.skipped += x.skipped;
    }
    s
}

/// Checks a target's stream counters against its callers' counts (queues drained).
fn check_streams(v: &Violations, name: &str, s: StreamStats, t: &Tally, exact_jobs: bool) {
    let jobs = Tally::get(&t.jobs);
    if exact_jobs {
        v.check(s.submitted == jobs, || {
            format!(
                "{name}: streams counted {} jobs, callers queued {jobs}",
                s.submitted
            )
        });
    } else {
        v.check(s.submitted >= jobs, || {
            format!(
                "{name}: streams counted {} jobs, callers queued {jobs}",
                s.submitted
            )
        });
    }
    v.check(s.completed + s.failed + s.skipped == s.submitted, || {
        format!("{name}: completed + failed + skipped != submitted: {s:?}")
    });
}

/// Checks one target's caller counts, and the failures the streams counted for it.
fn check_callers(v: &Violations, name: &str, t: &Tally) {
    let submitted = Tally::get(&t.submitted);
    let answered = t.answered();
    let dropped = Tally::get(&t.dropped);
    v.check(answered + dropped == submitted, || {
        format!(
            "{name}: {} of {submitted} requests neither answered nor dropped",
            submitted as i64 - (answered + dropped) as i64
        )
    });
}

fn main() -> ExitCode {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    // The injected panics are expected: keep their messages off stderr.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !msg.starts_with("soak: injected panic") {
            default_hook(info);
        }
    }));
    match run(&o) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            println!("soak FAIL: could not run: {e}");
            ExitCode::from(1)
        }
    }
}

/// Whether every queue is empty and every counted job finished, within `limit`.
fn wait_drained(soak: &Soak, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    loop {
        let b = soak.batcher.stats();
        let idle = soak.task.stats().in_flight() == 0
            && soak.module.stats().iter().all(|s| s.in_flight() == 0)
            && soak
                .batcher
                .module()
                .stats()
                .iter()
                .all(|s| s.in_flight() == 0)
            && b.queue_depth == 0
            && b.accepted == b.completed + b.failed + b.cancelled;
        if idle {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stream jobs, jobs skipped and batches run, for the summary.
struct Counted {
    jobs: u64,
    skipped: u64,
    batches: u64,
}

/// The library's counters against the callers' counts (queues drained).
fn check_counters(soak: &Soak) -> Counted {
    let v = &soak.violations;
    for target in TARGETS {
        check_callers(v, &format!("{target:?}"), soak.tally(target));
    }
    let task = soak.task.stats();
    let module = sum(&soak.module.stats());
    let served = sum(&soak.batcher.module().stats());
    let t = soak.tally(Target::Task);
    check_streams(v, "task", task, t, true);
    // A task job is one request: what failed is between the failures seen and those possible.
    v.check(
        t.failed() <= task.failed && task.failed <= t.failed() + Tally::get(&t.dropped_failing),
        || {
            format!(
                "task: {} failed jobs, callers saw {} failures",
                task.failed,
                t.failed()
            )
        },
    );
    v.check(task.skipped <= Tally::get(&t.dropped), || {
        format!(
            "task: {} skipped, {} dropped",
            task.skipped,
            Tally::get(&t.dropped)
        )
    });
    check_streams(v, "module", module, soak.tally(Target::Module), true);
    // The batcher's streams run its batches besides the direct calls.
    check_streams(
        v,
        "batcher's module",
        served,
        soak.tally(Target::Direct),
        false,
    );

    let b = soak.batcher.stats();
    let t = soak.tally(Target::Batcher);
    let submitted = Tally::get(&t.submitted);
    let overloaded = Tally::get(&t.overloaded);
    let dropped = Tally::get(&t.dropped);
    v.check(b.accepted + b.rejected == submitted, || {
        format!(
            "batcher: accepted {} + rejected {} != {submitted} requests",
            b.accepted, b.rejected
        )
    });
    v.check(
        overloaded <= b.rejected && b.rejected <= overloaded + dropped,
        || {
            format!(
                "batcher: rejected {}, callers saw {overloaded} Overloaded",
                b.rejected
            )
        },
    );
    v.check(b.accepted == b.completed + b.failed + b.cancelled, || {
        format!(
            "batcher: accepted {} != completed {} + failed {} + cancelled {}",
            b.accepted, b.completed, b.failed, b.cancelled
        )
    });
    v.check(Tally::get(&t.ok) <= b.completed, || {
        format!(
            "batcher: completed {}, callers saw {} Ok",
            b.completed,
            Tally::get(&t.ok)
        )
    });
    v.check(
        t.failed() <= b.failed && b.failed <= t.failed() + Tally::get(&t.dropped_failing),
        || {
            format!(
                "batcher: failed {}, callers saw {} failures",
                b.failed,
                t.failed()
            )
        },
    );
    v.check(b.cancelled <= dropped, || {
        format!(
            "batcher: cancelled {}, callers dropped {dropped}",
            b.cancelled
        )
    });
    v.check(b.queue_depth == 0, || {
        format!("batcher: queue depth {}", b.queue_depth)
    });
    Counted {
        jobs: task.submitted + module.submitted + served.submitted,
        skipped: task.skipped + module.skipped + served.skipped,
        batches: b.batches,
    }
}

/// What the run saw, for the summary line.
struct Outcome {
    elapsed: Duration,
    counted: Option<Counted>,
    threads_base: u64,
    threads_range: (u64, u64),
    /// Threads (count, names) before start-up and after everything was dropped.
    threads_teardown: Option<((u64, String), (u64, String))>,
    rss: Option<(u64, u64)>,
}

/// Checks the thread and memory figures, prints the one summary line; `true` without
/// violations.
fn summary(tallies: &[Tally; 4], v: &Violations, out: &Outcome) -> bool {
    v.check(
        out.threads_range == (out.threads_base, out.threads_base),
        || {
            format!(
                "thread count moved after warm-up: {} to {} (base {})",
                out.threads_range.0, out.threads_range.1, out.threads_base
            )
        },
    );
    if let Some((before, after)) = &out.threads_teardown {
        v.check(before.0 == after.0, || {
            format!(
                "{} threads after tear-down ({}), {} before start-up ({})",
                after.0, after.1, before.0, before.1
            )
        });
    }
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    let mut rss_text = String::from("RSS not measured");
    if let Some((base, end)) = out.rss {
        let limit = (base / 50).max(1 << 20);
        let growth = end as i64 - base as i64;
        v.check(growth < limit as i64, || {
            format!(
                "RSS grew {:+.2} MB after warm-up ({:.2} -> {:.2} MB, limit {:.2} MB)",
                growth as f64 / (1 << 20) as f64,
                mb(base),
                mb(end),
                mb(limit)
            )
        });
        rss_text = format!(
            "RSS {:.1} -> {:.1} MB ({:+.2}%, limit +{:.1} MB)",
            mb(base),
            mb(end),
            growth as f64 * 100.0 / base.max(1) as f64,
            mb(limit)
        );
    }
    let total = |f: fn(&Tally) -> &AtomicU64| tallies.iter().map(|t| Tally::get(f(t))).sum::<u64>();
    let count = v.count.load(Ordering::SeqCst);
    let mut line = format!(
        "soak {}: {:.1} s, {} requests (task {}, module {}, batcher {}, direct {}): ok {}, \
         model error {}, panicked {}, overloaded {}, dropped {}",
        if count == 0 { "PASS" } else { "FAIL" },
        out.elapsed.as_secs_f64(),
        total(|t| &t.submitted),
        Tally::get(&tallies[0].submitted),
        Tally::get(&tallies[1].submitted),
        Tally::get(&tallies[2].submitted),
        Tally::get(&tallies[3].submitted),
        total(|t| &t.ok),
        total(|t| &t.module_err),
        total(|t| &t.panicked),
        total(|t| &t.overloaded),
        total(|t| &t.dropped),
    );
    if let Some(c) = &out.counted {
        let _ = write!(
            line,
            "; stream jobs {} (skipped {}), batches {}",
            c.jobs, c.skipped, c.batches
        );
    }
    let _ = write!(
        line,
        "; threads {} after warm-up ({}..{} seen); {rss_text}; violations {count}",
        out.threads_base, out.threads_range.0, out.threads_range.1
    );
    let first = v.first.lock().unwrap_or_else(|e| e.into_inner());
    if !first.is_empty() {
        let _ = write!(line, ": {}", first.join("; "));
    }
    println!("{line}");
    count == 0
}

fn run(o: &Options) -> Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .map_err(|e| Error::InvalidConfig(format!("tokio runtime: {e}")))?;
    let threads_before = (proc_status().0, thread_names());
    let pool = CpuPool::all()?;
    let model = Arc::new(SoakModel);
    let task = Task::builder(Arc::clone(&model))
        .pool(pool.clone())
        .name("soak-task")
        .build()?;
    let module = MultiStreamModule::builder(Arc::clone(&model))
        .pool(pool.clone())
        .build()?;
    let batcher = Batcher::builder(
        MultiStreamModule::builder(Arc::clone(&model))
            .pool(pool)
            .build()?,
    )
    .max_batch(16)
    .max_wait(Duration::from_micros(100))
    .queue_capacity(QUEUE_CAPACITY)
    .build()?;
    let soak = Arc::new(Soak {
        task,
        module,
        batcher,
        tallies: Default::default(),
        violations: Violations::default(),
        next_id: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });

    let clock = Instant::now();
    let busy: Arc<Vec<AtomicU64>> =
        Arc::new((0..o.sync_callers).map(|_| AtomicU64::new(0)).collect());
    let sync_threads: Vec<_> = (0..o.sync_callers)
        .map(|i| {
            let soak = Arc::clone(&soak);
            let busy = Arc::clone(&busy);
            let seed = mix(o.seed ^ (1000 + i as u64));
            std::thread::Builder::new()
                .name(format!("soak-sync{i}"))
                .spawn(move || sync_caller(&soak, seed, &busy[i], clock))
                .map_err(|source| Error::Spawn {
                    name: format!("soak-sync{i}"),
                    source,
                })
        })
        .collect::<Result<_>>()?;
    let async_tasks: Vec<_> = (0..o.async_callers)
        .map(|i| runtime.spawn(async_caller(Arc::clone(&soak), mix(o.seed ^ i as u64))))
        .collect();

    // Warm-up: a quarter of the run, at most 5 s; then the thread count and RSS are the base.
    let warmup = (o.duration / 4).min(Duration::from_secs(5));
    let deadline = clock + o.duration;
    std::thread::sleep(warmup);
    let (threads_base, rss_base) = proc_status();
    let mut threads_range = (threads_base, threads_base);
    let mut controls_done = false;
    let mut leaked: Vec<u8> = Vec::new();
    let control_stop = Arc::new(AtomicBool::new(false));
    let mut control_thread = None;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let (threads, _) = proc_status();
        threads_range = (threads_range.0.min(threads), threads_range.1.max(threads));
        let now_ms = clock.elapsed().as_millis() as u64;
        for (i, b) in busy.iter().enumerate() {
            let since = b.load(Ordering::SeqCst);
            if since > 0 && now_ms.saturating_sub(since) > ANSWER_LIMIT.as_millis() as u64 {
                soak.violations.add(format!(
                    "sync caller {i}: no answer within {ANSWER_LIMIT:?}"
                ));
                b.store(0, Ordering::SeqCst);
            }
        }
        if !controls_done && clock.elapsed() >= warmup + (o.duration - warmup) / 4 {
            controls_done = true;
            if o.control_lost {
                // A request whose future is leaked: never answered, never dropped.
                let r = soak.request(&mut Rng(7));
                std::mem::forget(soak.submit(&r));
            }
            if o.control_threads {
                let stop = Arc::clone(&control_stop);
                control_thread = Some(std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        std::thread::park_timeout(Duration::from_millis(10));
                    }
                }));
            }
            if o.control_rss {
                leaked = vec![1u8; 16 << 20];
            }
        }
    }
    // Load ends: callers stop (an async caller's wait is bounded by ANSWER_LIMIT), queues drain.
    soak.stop.store(true, Ordering::SeqCst);
    runtime.block_on(async {
        for t in async_tasks {
            if let Err(e) = t.await {
                soak.violations.add(format!("async caller died: {e}"));
            }
        }
    });
    let join_deadline = Instant::now() + ANSWER_LIMIT + Duration::from_secs(5);
    for (i, t) in sync_threads.into_iter().enumerate() {
        while !t.is_finished() && Instant::now() < join_deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !t.is_finished() {
            soak.violations
                .add(format!("sync caller {i} still waiting after the run"));
            let out = Outcome {
                elapsed: clock.elapsed(),
                counted: None,
                threads_base,
                threads_range,
                threads_teardown: None,
                rss: None,
            };
            summary(&soak.tallies, &soak.violations, &out);
            // Dropping the streams would wait for the lost job too.
            std::process::exit(1);
        }
        if t.join().is_err() {
            soak.violations.add(format!("sync caller {i} panicked"));
        }
    }
    let elapsed = clock.elapsed();
    let drained = wait_drained(&soak, Duration::from_secs(10));
    soak.violations.check(drained, || {
        "queues not drained 10 s after the load".to_owned()
    });
    let (_, rss_end) = proc_status();
    let counted = check_counters(&soak);
    drop(leaked);
    control_stop.store(true, Ordering::SeqCst);
    if let Some(t) = control_thread {
        let _ = t.join();
    }
    let Ok(soak) = Arc::try_unwrap(soak) else {
        unreachable!("every caller has ended and dropped its handle");
    };
    // Tear-down: every stream thread must be joined.
    let Soak {
        task,
        module,
        batcher,
        tallies,
        violations,
        ..
    } = soak;
    drop((batcher, module, task));
    // Stream threads are joined by the drops; their intra-op rayon workers end on their own
    // just after (rayon does not join them), so allow them a moment.
    let settle = Instant::now() + Duration::from_secs(2);
    while proc_status().0 > threads_before.0 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(5));
    }
    let threads_after = (proc_status().0, thread_names());
    let out = Outcome {
        elapsed,
        counted: Some(counted),
        threads_base,
        threads_range,
        threads_teardown: Some((threads_before, threads_after)),
        rss: Some((rss_base, rss_end)),
    };
    Ok(summary(&tallies, &violations, &out))
}
