//! Pieces shared by the benches (a module of each bench that declares `mod support;`, not a
//! bench of its own).

use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use corestream::CpuPool;

/// A plain pinned thread answering `x + 1`, busy-polling (`spin`) or blocking on its channel.
pub struct Handoff {
    tx: Option<mpsc::Sender<u64>>,
    rx: mpsc::Receiver<u64>,
    spin: bool,
    thread: Option<JoinHandle<()>>,
}

impl Handoff {
    pub fn new(worker: &CpuPool, spin: bool) -> Handoff {
        let (tx, in_rx) = mpsc::channel::<u64>();
        let (out_tx, rx) = mpsc::channel::<u64>();
        let pool = worker.clone();
        let thread = thread::spawn(move || {
            let _pin = pool.pin_current().expect("pin the handoff thread");
            loop {
                let x = if spin {
                    match in_rx.try_recv() {
                        Ok(x) => x,
                        Err(mpsc::TryRecvError::Empty) => {
                            std::hint::spin_loop();
                            continue;
                        }
                        Err(mpsc::TryRecvError::Disconnected) => break,
                    }
                } else {
                    match in_rx.recv() {
                        Ok(x) => x,
                        Err(_) => break,
                    }
                };
                if out_tx.send(x + 1).is_err() {
                    break;
                }
            }
        });
        Handoff {
            tx: Some(tx),
            rx,
            spin,
            thread: Some(thread),
        }
    }

    pub fn call(&self, x: u64) -> u64 {
        self.tx.as_ref().expect("open").send(x).expect("send");
        if self.spin {
            loop {
                match self.rx.try_recv() {
                    Ok(y) => return y,
                    Err(_) => std::hint::spin_loop(),
                }
            }
        }
        self.rx.recv().expect("recv")
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
