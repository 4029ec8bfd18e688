//! `current_stream()` inside `forward`: index, pool and id of the serving stream.

use std::collections::HashSet;

use corestream::ndarray::Array1;
use corestream::{current_stream, module_fn, CpuPool, Hint, MultiStreamModule, Streams, Task};

/// Each row comes back as (stream index, first cpu of its pool, number of cpus, stream id).
fn probe() -> impl corestream::Module<Input = Array1<u64>, Output = Array1<u64>> {
    module_fn(|x: Array1<u64>| {
        let s = current_stream().ok_or("forward ran outside a stream")?;
        let row = [
            s.index() as u64,
            s.pool().cpus()[0] as u64,
            s.pool().len() as u64,
            s.id(),
        ];
        Ok(Array1::from_iter(x.iter().flat_map(|_| row)))
    })
}

#[test]
fn none_outside_streams() {
    assert!(current_stream().is_none());
}

#[test]
fn two_streams_see_their_index_and_pool() {
    let cpus = CpuPool::all().unwrap();
    if cpus.len() < 2 {
        eprintln!("skipped: needs 2 cpus, this process may use {cpus}");
        return;
    }
    let pool = CpuPool::new(cpus.cpus()[..2].to_vec()).unwrap();
    let msm = MultiStreamModule::builder(probe())
        .pool(pool.clone())
        .num_streams(Streams::Count(2))
        .input_hint(Hint::Dim(0))
        .output_hint(Hint::Dim(0))
        .build()
        .unwrap();
    let y = msm.forward_sync(Array1::zeros(2)).unwrap();
    let rows: Vec<&[u64]> = y.as_slice().unwrap().chunks(4).collect();
    assert_eq!(rows[0][..3], [0, pool.cpus()[0] as u64, 1]);
    assert_eq!(rows[1][..3], [1, pool.cpus()[1] as u64, 1]);
    assert_ne!(rows[0][3], rows[1][3], "ids are unique");
    // Ids are stable per stream across calls.
    let again = msm.forward_sync(Array1::zeros(2)).unwrap();
    assert_eq!(y, again);
}

#[test]
fn task_is_index_zero_and_ids_are_unique() {
    let pool = CpuPool::new([CpuPool::all().unwrap().cpus()[0]]).unwrap();
    let mut ids = HashSet::new();
    for _ in 0..3 {
        let task = Task::new(probe(), pool.clone()).unwrap();
        let y = task.run_sync(Array1::zeros(1)).unwrap();
        assert_eq!(y[0], 0);
        assert!(ids.insert(y[3]), "id reused");
    }
}

#[test]
fn intra_op_workers_see_the_stream_too() {
    let cpus = CpuPool::all().unwrap();
    if cpus.len() < 2 {
        eprintln!("skipped: needs 2 cpus, this process may use {cpus}");
        return;
    }
    let pool = CpuPool::new(cpus.cpus()[..2].to_vec()).unwrap();
    let model = module_fn(|(): ()| {
        let outer = current_stream().ok_or("no stream")?;
        // Run on every rayon worker of the stream's intra-op pool.
        let seen: Vec<Option<u64>> = rayon::broadcast(|_| current_stream().map(|s| s.id()));
        Ok((outer.id(), seen))
    });
    let task = Task::new(model, pool).unwrap();
    let (id, seen) = task.run_sync(()).unwrap();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| *s == Some(id)), "{seen:?} vs {id}");
}
