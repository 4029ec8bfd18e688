//! [`BodyBudget`]: a bound on the request bytes the service holds at once.
//!
//! Every request body is read whole (up to the 2 MiB limit) before it is parsed, and stays in
//! memory, with what is parsed from it, until the request is answered. Without a bound, a few
//! thousand clients sending large bodies (slowly, or faster than the model answers) hold
//! gigabytes. Each request reserves its body's size from the budget before its body is read,
//! the declared `Content-Length` when there is one, else the largest body allowed (a chunked
//! body's size is not known ahead), and gives it back when it is answered or dropped. A
//! request that cannot reserve within the body timeout is refused (503, overloaded), before
//! any of its body is read.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is counted in units of this many bytes.
const UNIT: usize = 1024;

/// The request body bytes held at once, bounded (see the module documentation).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::{Duration, Instant};
/// use corestream_serve::service::BodyBudget;
///
/// let budget = BodyBudget::new(4 << 20); // 4 MiB
/// let soon = Instant::now() + Duration::from_millis(10);
/// let a = budget.reserve(3 << 20, soon).await.expect("fits");
/// assert!(budget.reserve(2 << 20, soon).await.is_none()); // does not fit: refused at `soon`
/// drop(a);
/// assert!(budget.reserve(2 << 20, soon).await.is_some());
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total: usize,
}

/// Bytes reserved from a [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reserved(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl BodyBudget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: usize) -> BodyBudget {
        let total = bytes.div_ceil(UNIT).clamp(1, u32::MAX as usize);
        BodyBudget {
            units: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// The budget in bytes.
    pub fn bytes(&self) -> usize {
        self.total * UNIT
    }

    /// Reserves `bytes` (at most the whole budget), waiting until `deadline` for them to be
    /// free; `None` if they were not, or the budget is closed. Nothing is reserved for a
    /// request without a body (health probes are never held up by a full budget).
    pub async fn reserve(&self, bytes: usize, deadline: Instant) -> Option<Reserved> {
        if bytes == 0 {
            return Some(Reserved(None));
        }
        let units = bytes.div_ceil(UNIT).min(self.total);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        let acquire = Arc::clone(&self.units).acquire_many_owned(units);
        match tokio::time::timeout_at(deadline.into(), acquire).await {
            Ok(Ok(permit)) => Some(Reserved(Some(permit))),
            _ => None,
        }
    }
}
