//! The idle strategy beside other work on the same CPUs: a busy neighbour ([`Cotenant`], one
//! busy thread per CPU at the same priority) and a caller pinned to the stream's own CPU.
//!
//! Polling that yields its CPU (`sched_yield`) hands a busy neighbour the rest of a scheduler
//! slice, so every call used to take one slice (a median of 4.0 ms on the development VM);
//! polling that holds its CPU makes a caller on that CPU wait for the whole window. Both are
//! behaviour, not speed: the bounds below are several times the cost of a wake-up and a
//! fraction of the slice or window that the failure costs. Its own test binary, because the
//! neighbour would slow the other tests of a binary running in parallel.
#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use corestream::{module_fn, Cotenant, CpuPool, Module, MultiStreamModule, Streams, Task};

/// How long each measurement runs: many scheduler slices, so that the neighbour gets its
/// turns (a count of fast calls could finish within one slice).
const MEASURE: Duration = Duration::from_millis(300);

/// Calls `call` one call after another for [`MEASURE`] and returns the mean time of one call:
/// what throughput sees (a median would hide one slice lost among many fast calls).
fn mean_call(mut call: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    let mut calls = 0;
    while start.elapsed() < MEASURE {
        call(calls);
        calls += 1;
    }
    start.elapsed() / calls as u32
}

/// The mean round trip of `task.run_sync` from the current thread.
fn round_trips(task: &Task<impl Module<Input = u64, Output = u64>>) -> Duration {
    mean_call(|i| assert_eq!(task.run_sync(i).unwrap(), i + 1))
}

#[test]
fn beside_a_busy_neighbour_a_call_takes_no_scheduler_slice() {
    let all = CpuPool::all().unwrap();
    let cpus = all.cpus();
    let stream_cpu = CpuPool::new([*cpus.last().unwrap()]).unwrap();
    let task = Task::builder(module_fn(|x: u64| Ok(x + 1)))
        .pool(stream_cpu)
        .build()
        .unwrap();
    // The caller on another CPU where there is one (on one CPU all three share it).
    let _pin = CpuPool::new([cpus[0]]).unwrap().pin_current().unwrap();
    let _neighbour = Cotenant::start(&all).unwrap();
    let wait = round_trips(&task);
    eprintln!("beside a busy neighbour: mean .wait() round trip {wait:?}");
    assert!(
        wait < Duration::from_millis(1),
        "mean .wait() round trip beside a busy neighbour: {wait:?}"
    );
    let awaited = mean_call(|i| {
        let answer = futures::executor::block_on(async { task.submit(i).await });
        assert_eq!(answer.unwrap(), i + 1);
    });
    eprintln!("beside a busy neighbour: mean .await round trip {awaited:?}");
    assert!(
        awaited < Duration::from_millis(1),
        "mean .await round trip beside a busy neighbour: {awaited:?}"
    );
}

#[test]
fn a_multi_stream_call_beside_a_busy_neighbour_takes_no_scheduler_slice() {
    let all = CpuPool::all().unwrap();
    let msm =
        MultiStreamModule::builder(module_fn(|x: corestream::ndarray::Array2<f32>| Ok(x * 2.0)))
            .pool(all.clone())
            .num_streams(Streams::Auto)
            .build()
            .unwrap();
    let x = corestream::ndarray::Array2::<f32>::ones((16, 8));
    let _neighbour = Cotenant::start(&all).unwrap();
    let call = mean_call(|_| assert_eq!(msm.forward_sync(x.clone()).unwrap(), &x * 2.0));
    eprintln!("beside a busy neighbour: mean forward_sync {call:?}");
    assert!(
        call < Duration::from_millis(1),
        "mean forward_sync beside a busy neighbour: {call:?}"
    );
}

#[test]
fn a_caller_on_the_streams_cpu_does_not_wait_for_the_window() {
    let all = CpuPool::all().unwrap();
    let cpu = CpuPool::new([*all.cpus().last().unwrap()]).unwrap();
    // A long window: a stream that held its CPU for it would cost the caller 5 ms a job.
    let task = Task::builder(module_fn(|x: u64| Ok(x + 1)))
        .pool(cpu.clone())
        .spin(Duration::from_millis(5))
        .build()
        .unwrap();
    let _pin = cpu.pin_current().unwrap();
    let trip = round_trips(&task);
    eprintln!("caller on the stream's CPU: mean round trip {trip:?}");
    assert!(
        trip < Duration::from_millis(1),
        "mean round trip with the caller on the stream's CPU: {trip:?}"
    );
}
