//! Per-route concurrency limit: at most `max` requests between the rate limit stage and the end of
//! the response body. Counted per gateway process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct InFlight {
    max: usize,
    current: Arc<AtomicUsize>,
}

/// Holds one slot; dropping it (when the response body ends or the request is abandoned) frees it.
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicUsize>);

impl InFlight {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            current: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A limit with a new maximum that counts the same requests as `previous`, so a reload neither
    /// forgets requests in flight nor lets a second full quota in.
    pub fn sharing(previous: &InFlight, max: usize) -> Self {
        Self {
            max,
            current: previous.current.clone(),
        }
    }

    /// A slot, or `None` when `max` requests are already in flight.
    pub fn try_acquire(&self) -> Option<InFlightGuard> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| InFlightGuard(self.current.clone()))
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_released_on_drop() {
        let limit = InFlight::new(2);
        let first = limit.try_acquire().expect("slot 1");
        let _second = limit.try_acquire().expect("slot 2");
        assert!(limit.try_acquire().is_none());
        drop(first);
        assert!(limit.try_acquire().is_some());
    }
}
