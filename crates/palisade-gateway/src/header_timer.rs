//! The timer behind an HTTP/1 connection's header read timeout (slowloris), armed lazily.
//!
//! hyper starts a new sleep each time it begins reading a request head and drops it once the head is
//! in. With Tokio's timer that is a timer-wheel insertion and removal per request, under the driver's
//! lock, and often a write to the event loop's wake-up descriptor (Tokio wakes its driver whenever a
//! timer is set earlier than the one it parked for): about a third of a system call per request.
//!
//! Here each connection keeps one Tokio sleep. A head's sleep only remembers its deadline; when polled
//! it waits on the connection's sleep, which is moved only when it fires before the deadline that is
//! current then. Deadlines only move forward on a connection (each is "now + timeout"), so the one
//! sleep is re-armed about once per timeout period, not once per request. hyper's semantics are
//! unchanged: the head still has to be complete by its own deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// The connection's one Tokio sleep, shared by its heads' sleeps; `None` until one is first polled.
type ArmedSleep = Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>;

/// One per connection (the HTTP/1 builder is made per connection).
#[derive(Default)]
pub struct HeaderTimer {
    armed: ArmedSleep,
}

/// The sleep of one head: resolves at `deadline`.
struct HeadDeadline {
    deadline: tokio::time::Instant,
    armed: ArmedSleep,
}

impl Timer for HeaderTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadDeadline {
            deadline: deadline.into(),
            armed: self.armed.clone(),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }

    fn now(&self) -> Instant {
        // Tokio's clock, so that tests with paused time see the same deadlines.
        tokio::time::Instant::now().into()
    }
}

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if tokio::time::Instant::now() >= this.deadline {
            return Poll::Ready(());
        }
        // A poisoned lock cannot hold a half-made change here (the sleep is replaced whole), so its
        // content is used as it is.
        let mut armed = this.armed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let sleep = armed.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(this.deadline)));
        // Waiting on a sleep that ends later than our deadline would wake too late: move it earlier.
        if sleep.deadline() > this.deadline {
            sleep.as_mut().reset(this.deadline);
        }
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // It ended at an earlier head's deadline: wait on until this one.
                Poll::Ready(()) if sleep.deadline() < this.deadline => sleep.as_mut().reset(this.deadline),
                Poll::Ready(()) => return Poll::Ready(()),
            }
        }
    }
}

impl Sleep for HeadDeadline {}

#[cfg(test)]
mod tests {
    use super::*;

    async fn resolves(sleep: &mut Pin<Box<dyn Sleep>>) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn each_head_ends_at_its_own_deadline_on_one_armed_sleep() {
        let timer = HeaderTimer::default();
        let start = timer.now();
        let mut first = timer.sleep_until(start + Duration::from_secs(10));
        assert!(!resolves(&mut first).await);
        drop(first);
        // The next head starts 4 s later: its deadline is 14 s, after the armed sleep's 10 s.
        tokio::time::advance(Duration::from_secs(4)).await;
        let mut second = timer.sleep_until(timer.now() + Duration::from_secs(10));
        assert!(!resolves(&mut second).await);
        tokio::time::advance(Duration::from_secs(7)).await; // 11 s: the armed sleep fired, ours did not
        assert!(
            !resolves(&mut second).await,
            "a head must not end at an earlier head's deadline"
        );
        tokio::time::advance(Duration::from_secs(3)).await; // 14 s
        assert!(resolves(&mut second).await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_moves_the_armed_sleep() {
        let timer = HeaderTimer::default();
        let start = timer.now();
        let mut late = timer.sleep_until(start + Duration::from_secs(30));
        assert!(!resolves(&mut late).await);
        let mut early = timer.sleep_until(start + Duration::from_secs(5));
        // Awaited, not polled once: it must be woken by the armed sleep at 5 s.
        tokio::time::timeout(
            Duration::from_secs(6),
            std::future::poll_fn(|cx| early.as_mut().poll(cx)),
        )
        .await
        .expect("the earlier deadline woke its waiter");
        assert!(timer.now() - start < Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_head_is_woken_at_its_deadline() {
        let timer = HeaderTimer::default();
        let start = timer.now();
        let mut first = timer.sleep_until(start + Duration::from_secs(2));
        assert!(!resolves(&mut first).await); // arms the connection's sleep for 2 s
        drop(first);
        let mut second = timer.sleep_until(start + Duration::from_secs(3));
        assert!(!resolves(&mut second).await);
        // The armed sleep fires at 2 s, is moved to 3 s, and wakes the head then.
        std::future::poll_fn(|cx| second.as_mut().poll(cx)).await;
        assert!(timer.now() - start >= Duration::from_secs(3));
    }
}
