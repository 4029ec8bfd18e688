//! Request accounting under load: cancellations are logged as counts at most once per period,
//! whatever rate clients cancel at, and no event is lost between reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corestream_serve::service::requests::{Reports, CANCEL_REPORT_EVERY};
use corestream_serve::service::Requests;

#[test]
fn concurrent_events_give_one_report_per_period_and_lose_none() {
    let reports = Arc::new(Reports::new(Duration::from_secs(3600)));
    let t0 = Instant::now();
    let (reported, lines) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (reports, reported, lines) = (
                Arc::clone(&reports),
                Arc::clone(&reported),
                Arc::clone(&lines),
            );
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    if let Some(n) = reports.note(t0) {
                        reported.fetch_add(n, Ordering::Relaxed);
                        lines.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // 80,000 events within one period: one report (the first event's).
    assert_eq!(lines.load(Ordering::Relaxed), 1);
    // The next period's report carries every event not yet reported (plus its own).
    let rest = reports.note(t0 + Duration::from_secs(3600)).unwrap();
    assert_eq!(reported.load(Ordering::Relaxed) + rest, 80_001);
    assert_eq!(reports.note(t0 + Duration::from_secs(3601)), None);
}

#[test]
fn cancelled_tickets_are_counted_each() {
    let requests = Requests::default();
    for _ in 0..1_000 {
        drop(requests.start("/embed"));
    }
    requests.start("/embed").answered();
    let counts = requests.counts();
    assert_eq!(
        (counts.started, counts.answered, counts.cancelled),
        (1_001, 1, 1_000)
    );
    assert_eq!(counts.in_flight(), 0);
    assert!(CANCEL_REPORT_EVERY >= Duration::from_secs(1));
}
