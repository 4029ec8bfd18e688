//! The streams' side of the [`Batcher`](super::Batcher): each stream's serve loop polls or
//! sleeps until work arrives (`next_work`), takes a batch from the queue (`take`,
//! `take_grouped`: see `select.rs`), runs it on the stream thread (`run`, `run_batch`: one bad
//! request fails alone) and answers the callers (`answer`); and the guards that bound how many
//! loops poll (`PollSlot`), which one reaches for the lock (`Claim`), and what a loop's end
//! does (`LoopEnded`).

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::select::{self, Limits};
use super::stats::BatchShape;
use super::telemetry::StreamTelemetry;
use super::width::{Lane, OnWide};
use super::{Queue, Request, Shared, Ticket, Work, SERVING};
use crate::batch::{Batch, Hint};
use crate::error::{Error, Result};
use crate::module::Module;
use crate::stream::{panic_message, Executor};
use crate::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};

impl<M> Shared<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    /// One stream's serve loop, on the stream thread: batches until closed and drained.
    pub(super) fn serve(&self, exec: &Executor<'_, M>) {
        /// Restores `SERVING` however the loop ends.
        struct Serving(usize);
        impl Drop for Serving {
            fn drop(&mut self) {
                SERVING.with(|s| s.set(self.0));
            }
        }
        let _serving = Serving(SERVING.with(|s| s.replace(self as *const Self as usize)));
        let index = crate::context::current_stream().map_or(0, |s| s.index());
        let telemetry = self.telemetry.stream(index);
        let mut contended = false;
        loop {
            self.wide.contended(&mut contended, || exec.contended());
            match self.next_work(exec) {
                Work::Batch(batch, lane) => {
                    let (rows, work) = size(&batch);
                    let _lane = LaneEnd {
                        shared: self,
                        lane,
                        rows,
                        work,
                        started: Instant::now(),
                    };
                    // Empty when every request taken had been cancelled meanwhile.
                    if !batch.is_empty() {
                        let _running = self.activity.running(index);
                        let _on = match (lane, self.wide.stream()) {
                            (Lane::Wide, Some(stream)) => {
                                self.counters.wide_batch();
                                self.telemetry.wide_batch();
                                Some(OnWide::enter(stream))
                            }
                            _ => None,
                        };
                        self.run(exec, &telemetry, batch);
                    }
                }
                Work::Direct => {
                    let _running = self.activity.running(index);
                    exec.run_queued();
                }
                Work::Closed => break,
            }
        }
    }

    /// Blocks until a batch is due (and takes it), or a job submitted to the stream directly
    /// waits; `Closed` once closed and drained.
    ///
    /// For the stream's idle window after its last batch the loop polls, without the lock,
    /// until there is something to look at; only one polling loop at a time then reaches for
    /// the lock (see [`Claim`]), so an arrival sends one stream, not all, to the queue. A loop
    /// that finds nothing for it there (another stream took it) goes back to polling. Once the
    /// window has passed it sleeps on `arrived`, counted in `sleepers`.
    fn next_work(&self, exec: &Executor<'_, M>) -> Work<M> {
        let window_end = Instant::now() + exec.spin();
        loop {
            let slot = PollSlot::enter(self, window_end);
            let window = match slot {
                Some(_) => window_end.saturating_duration_since(Instant::now()),
                None => Duration::ZERO,
            };
            let polled = exec.poll_for(window, || {
                if exec.has_queued() || self.closed.load(Ordering::Acquire) {
                    return Some(None);
                }
                if self.wide.running() {
                    // A wide batch has the CPUs: leave them to it, and sleep (below).
                    return Some(None);
                }
                if !self.pending.load(Ordering::Acquire)
                    || self.taking.load(Ordering::Relaxed)
                    || self.taking.swap(true, Ordering::Acquire)
                {
                    return None;
                }
                Some(Some(Claim(&self.taking)))
            });
            let may_poll = slot.is_some();
            drop(slot);
            // Declared before the guard, so released after the lock.
            let mut claim = polled.flatten();
            let mut queue = self.lock();
            let mut purged = false;
            loop {
                if exec.has_queued() {
                    self.leave(&queue);
                    return Work::Direct;
                }
                // Read before the drain: once closed nobody sends any more, so a drain after
                // seeing `closed` finds every request sent before the close. (Read after it,
                // a request sent between the two was left in the intake and failed with
                // `Shutdown`: found by tests/loom_batcher.rs.)
                let closed = self.closed.load(Ordering::Acquire);
                self.drain(&mut queue);
                self.pop_cancelled(&mut queue);
                // A wide batch has every CPU: wait for its end (`LaneEnd` wakes the sleepers
                // when it leaves work behind).
                let wide_running = self.wide.running();
                let timeout = if wide_running {
                    if closed && queue.requests.is_empty() {
                        return Work::Closed;
                    }
                    None
                } else if let Some(oldest) = queue.requests.front() {
                    let due = oldest.ticket.enqueued + self.max_wait;
                    let now = Instant::now();
                    let full = queue.rows >= self.max_batch
                        || self.max_batch_tokens.is_some_and(|t| queue.tokens >= t);
                    if full && !purged && !closed && now < due {
                        // Full before its time: count only the rows of callers still there.
                        self.drop_cancelled(&mut queue);
                        purged = true;
                        continue;
                    }
                    if full || closed || now >= due {
                        let batch = self.take(&mut queue);
                        let lane = self.lane(&batch, queue.requests.is_empty());
                        self.leave(&queue);
                        self.telemetry
                            .queue_depth(self.places.len.load(Ordering::Relaxed));
                        return Work::Batch(batch, lane);
                    }
                    // Lingering for a fuller batch: sleep until due or the next arrival.
                    Some(due - now)
                } else if closed {
                    return Work::Closed;
                } else if may_poll && Instant::now() < window_end {
                    break;
                } else {
                    None
                };
                claim = None;
                // The sleeper's side of `wake`.
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                if self.received(&mut queue) || exec.has_queued() {
                    self.sleepers.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                queue = match timeout {
                    Some(timeout) => {
                        self.arrived
                            .wait_timeout(queue, timeout)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                    None => self.arrived.wait(queue).unwrap_or_else(|e| e.into_inner()),
                };
                exec.woke();
                self.sleepers.fetch_sub(1, Ordering::Relaxed);
                purged = false;
            }
            drop(queue);
            drop(claim);
        }
    }

    /// Under the queue's lock, no wide batch running: where `batch` runs (see
    /// [`WideGate::choose`]).
    fn lane(&self, batch: &[Request<M>], queue_empty: bool) -> Lane {
        let rows = batch.iter().map(|r| r.ticket.rows).sum();
        let longest = batch.iter().map(|r| r.ticket.len).max().unwrap_or(0);
        self.wide
            .choose(rows, select::cost(rows, longest), queue_empty)
    }
}

/// A batch's rows and its work: padded tokens, or rows without a token function.
fn size<M: Module>(batch: &[Request<M>]) -> (usize, usize) {
    let rows = batch.iter().map(|r| r.ticket.rows).sum();
    let longest = batch.iter().map(|r| r.ticket.len).max().unwrap_or(0);
    (rows, select::cost(rows, longest.max(1)))
}

impl<M> Shared<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    /// Whether a caller has sent a request not yet in the queue (it is moved there).
    fn received(&self, queue: &mut Queue<M>) -> bool {
        match queue.intake.try_recv() {
            Ok(request) => {
                queue.push(request);
                true
            }
            Err(_) => false,
        }
    }

    /// Removes the requests at the front whose callers have left.
    fn pop_cancelled(&self, queue: &mut Queue<M>) {
        let mut gone = 0;
        while let Some(front) = queue.requests.front() {
            if !front.ticket.reply.is_canceled() {
                break;
            }
            if let Some(request) = queue.requests.pop_front() {
                queue.removed(&request.ticket);
            }
            gone += 1;
        }
        self.cancelled(gone);
    }

    /// Removes every request whose caller has left. It looks at each queued request, so it
    /// runs only where the answer changes a decision: a full queue, a batch full early.
    pub(super) fn drop_cancelled(&self, queue: &mut Queue<M>) {
        let before = queue.requests.len();
        let (mut rows, mut tokens) = (0, 0);
        queue.requests.retain(|r| {
            let keep = !r.ticket.reply.is_canceled();
            if keep {
                rows += r.ticket.rows;
                tokens += r.ticket.tokens();
            }
            keep
        });
        queue.rows = rows;
        queue.tokens = tokens;
        self.cancelled(before - queue.requests.len());
    }

    /// Takes the next batch: with a token function, grouped by length within the limits (see
    /// [`select`]); without, live requests from the front while they fit in `max_batch` rows.
    /// Always at least one when a live one is queued; requests whose callers have left are
    /// removed on the way.
    fn take(&self, queue: &mut Queue<M>) -> Vec<Request<M>> {
        if self.tokens.is_some() {
            return self.take_grouped(queue);
        }
        let mut batch = Vec::new();
        let mut rows = 0;
        let mut gone = 0;
        while let Some(next) = queue.requests.front() {
            let cancelled = next.ticket.reply.is_canceled();
            if !cancelled && !batch.is_empty() && rows + next.ticket.rows > self.max_batch {
                break;
            }
            let Some(next) = queue.requests.pop_front() else {
                break;
            };
            queue.removed(&next.ticket);
            if cancelled {
                gone += 1;
            } else {
                rows += next.ticket.rows;
                batch.push(next);
            }
        }
        self.release(batch.len());
        self.cancelled(gone);
        batch
    }

    /// [`take`](Self::take) with a token function: looks at the first [`select::SCAN`] queued
    /// requests, lets [`select::choose`] pick the batch, and puts the others back in order.
    fn take_grouped(&self, queue: &mut Queue<M>) -> Vec<Request<M>> {
        let n = queue.requests.len().min(select::SCAN);
        let mut window: Vec<Request<M>> = queue.requests.drain(..n).collect();
        for request in &window {
            queue.removed(&request.ticket);
        }
        let before = window.len();
        window.retain(|r| !r.ticket.reply.is_canceled());
        let gone = before - window.len();
        let candidates: Vec<(usize, usize)> = window
            .iter()
            .map(|r| (r.ticket.rows, r.ticket.len))
            .collect();
        let limits = Limits {
            max_rows: self.max_batch,
            max_tokens: self.max_batch_tokens.unwrap_or(usize::MAX),
        };
        let mut chosen = select::choose(&candidates, limits).into_iter().peekable();
        let mut batch = Vec::new();
        let mut rest = Vec::with_capacity(window.len());
        for (i, request) in window.into_iter().enumerate() {
            if chosen.next_if_eq(&i).is_some() {
                batch.push(request);
            } else {
                rest.push(request);
            }
        }
        for request in rest.into_iter().rev() {
            queue.rows += request.ticket.rows;
            queue.tokens += request.ticket.tokens();
            queue.requests.push_front(request);
        }
        self.release(batch.len());
        self.cancelled(gone);
        batch
    }

    /// Counts the answers, then sends them: a caller that has its answer sees it counted. One
    /// update of each shared counter per batch, not per request.
    fn answer(
        &self,
        telemetry: &StreamTelemetry<'_>,
        answers: Vec<(Ticket<M>, Result<M::Output>)>,
    ) {
        let now = Instant::now();
        let outcomes = || {
            answers.iter().map(move |(ticket, result)| {
                (
                    now.saturating_duration_since(ticket.enqueued),
                    result.is_ok(),
                )
            })
        };
        self.counters.answers(outcomes());
        telemetry.answered(outcomes());
        for (ticket, result) in answers {
            // The caller may have gone meanwhile: the result is discarded.
            let _ = ticket.reply.send(result);
        }
    }

    /// Runs one (non-empty) batch on this stream thread and answers its requests.
    fn run(&self, exec: &Executor<'_, M>, telemetry: &StreamTelemetry<'_>, batch: Vec<Request<M>>) {
        let now = Instant::now();
        let rows: usize = batch.iter().map(|r| r.ticket.rows).sum();
        let longest = batch.iter().map(|r| r.ticket.len).max().unwrap_or(0);
        let shape = BatchShape {
            requests: batch.len(),
            rows,
            tokens: select::cost(rows, longest),
            unpadded: batch.iter().map(|r| r.ticket.tokens()).sum(),
        };
        self.counters.batch(shape);
        let scope = telemetry.batch(shape);
        let (inputs, tickets): (Vec<M::Input>, Vec<Ticket<M>>) = batch
            .into_iter()
            .map(|mut r| {
                let waited = now.saturating_duration_since(r.ticket.enqueued);
                telemetry.taken(std::mem::take(&mut r.ticket.queued), waited);
                (r.input, r.ticket)
            })
            .unzip();
        self.run_batch(exec, telemetry, shape, inputs, tickets);
        telemetry.batch_done(scope);
    }

    fn run_batch(
        &self,
        exec: &Executor<'_, M>,
        telemetry: &StreamTelemetry<'_>,
        shape: BatchShape,
        mut inputs: Vec<M::Input>,
        tickets: Vec<Ticket<M>>,
    ) {
        if tickets.len() == 1 {
            if let (Some(input), Some(ticket)) = (inputs.pop(), tickets.into_iter().next()) {
                let result = telemetry.run(shape, || exec.forward(input));
                self.answer(telemetry, vec![(ticket, result)]);
            }
            return;
        }
        let sizes: Vec<usize> = tickets.iter().map(|t| t.rows).collect();
        // Copies to rerun one by one if the batch as a whole fails. The input's `Clone` is the
        // caller's code: a panic there fails this batch's requests, not the serve loop.
        let copies = match panic::catch_unwind(AssertUnwindSafe(|| inputs.clone())) {
            Ok(copies) => copies,
            Err(payload) => {
                let why = panic_message(payload.as_ref());
                let failed = tickets
                    .into_iter()
                    .map(|t| {
                        let e = Error::Panicked(format!("cloning a batch's inputs: {why}"));
                        (t, Err(e))
                    })
                    .collect();
                self.answer(telemetry, failed);
                return;
            }
        };
        let n = tickets.len();
        // `exec.forward` catches the model's panics; this catches those of `Batch` code.
        let parts = panic::catch_unwind(AssertUnwindSafe(|| {
            telemetry
                .form(shape, || M::Input::concat(inputs, &Hint::Dim(0)))
                .and_then(|stacked| {
                    telemetry.run(shape, || {
                        exec.forward(stacked)
                            .and_then(|out| out.split(&Hint::Dim(0), &sizes))
                    })
                })
                .and_then(|parts| {
                    if parts.len() == n {
                        Ok(parts)
                    } else {
                        Err(Error::Concat(format!(
                            "the output split into {} parts for {n} requests",
                            parts.len(),
                        )))
                    }
                })
        }))
        .unwrap_or_else(|payload| Err(Error::Panicked(panic_message(payload.as_ref()))));
        match parts {
            Ok(parts) => self.answer(
                telemetry,
                tickets.into_iter().zip(parts.into_iter().map(Ok)).collect(),
            ),
            // One bad request must not fail its neighbours: run each alone.
            Err(_) => {
                for (ticket, input) in tickets.into_iter().zip(copies) {
                    if ticket.reply.is_canceled() {
                        // Its caller left while the batch ran: counted as cancelled (its place
                        // was freed when it was taken), so that accepted = completed + failed +
                        // cancelled (found by benches/soak.rs).
                        self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                        self.telemetry.cancelled(1);
                        continue;
                    }
                    let one = BatchShape {
                        requests: 1,
                        rows: ticket.rows,
                        tokens: ticket.tokens(),
                        unpadded: ticket.tokens(),
                    };
                    let result = telemetry.run(one, || exec.forward(input));
                    self.answer(telemetry, vec![(ticket, result)]);
                }
            }
        }
    }
}

/// A batch taken by this loop, in its lane: on drop (however the batch ended) its time goes on
/// the gate's record, a narrow one is no longer counted by the gate, and a wide one gives the
/// CPUs back to the serve loops, waking those that slept while work was waiting.
struct LaneEnd<'a, M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    shared: &'a Shared<M>,
    lane: Lane,
    rows: usize,
    work: usize,
    started: Instant,
}

impl<M> Drop for LaneEnd<'_, M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    fn drop(&mut self) {
        let shared = self.shared;
        shared
            .wide
            .ran(self.lane, self.rows, self.work, self.started);
        if self.lane == Lane::Narrow {
            shared.wide.end_narrow();
            return;
        }
        // Under the lock: a loop that saw the wide batch running is asleep by now, not about
        // to sleep, so it gets the signal below.
        let queue = shared.lock();
        shared.wide.end_wide();
        let waiting = !queue.requests.is_empty() || shared.pending.load(Ordering::Acquire);
        if waiting && shared.sleepers.load(Ordering::Relaxed) > 0 {
            shared.arrived.notify_all();
        }
    }
}

/// The right of one polling serve loop to reach for the queue's lock; released on drop. The
/// other polling loops keep polling meanwhile instead of piling onto the lock (and the callers
/// behind it); loops woken from sleep and callers take the lock without it.
pub(super) struct Claim<'a>(&'a AtomicBool);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How many of `streams` serve loops may poll at once: all of up to 4, half of more. Idle
/// polling streams take CPU time from the callers on their CPUs; one that sleeps costs a
/// caller a wake-up when the polling ones are all busy. Measured (benches/batcher.rs, 64
/// callers, 16-core Xeon): half of 16 polling gave 1.42x the throughput of all 16 polling;
/// half of 2 gave 0.80x (the one left polling is busy running batches half the time).
pub(super) fn max_polling(streams: usize) -> usize {
    streams.min(4).max(streams.div_ceil(2))
}

/// One of the `max_polling` places of polling serve loops; released on drop.
struct PollSlot<'a>(&'a AtomicUsize);

impl<'a> PollSlot<'a> {
    /// A place, if the window has not passed and one is free.
    fn enter<M: Module>(shared: &'a Shared<M>, window_end: Instant) -> Option<PollSlot<'a>> {
        if Instant::now() >= window_end {
            return None;
        }
        let polling = &shared.polling;
        polling
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < shared.max_polling).then_some(n + 1)
            })
            .ok()
            .map(|_| PollSlot(polling))
    }
}

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Held by one serve loop; its drop counts the loop as ended.
pub(super) struct LoopEnded<M>(pub(super) Arc<Shared<M>>)
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch;

impl<M> Drop for LoopEnded<M>
where
    M: Module,
    M::Input: Batch + Clone,
    M::Output: Batch,
{
    fn drop(&mut self) {
        // A loop that ends while the batcher is open died (a panic outside any model call).
        // When it was the last, nothing will take what is queued: fail it, and `infer`
        // refuses from now on (see the other side in `send`).
        let open = !self.0.closed.load(Ordering::Acquire);
        let left = self.0.activity.loop_gone(open);
        fence(Ordering::SeqCst);
        if open && left == 0 {
            self.0.fail_queued();
        }
        let mut loops = self.0.loops.lock().unwrap_or_else(|e| e.into_inner());
        *loops -= 1;
        drop(loops);
        self.0.loop_ended.notify_all();
    }
}
