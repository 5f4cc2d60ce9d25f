//! Retry policy and idle timeouts for requests to the store and the gateway.
//!
//! What is retried, and why that is safe:
//! - a part `PUT` is idempotent (the same part number with the same bytes
//!   replaces itself), so every retry resends the whole part from its buffer;
//! - a ranged `GET` is idempotent;
//! - grant API calls other than creating an upload are idempotent, and a
//!   repeated creation leaves an unused upload that the gateway expires.
//!
//! Timeouts, connection failures, 5xx and 429 are retried with jittered
//! exponential backoff, honouring `Retry-After`. Connection failures and
//! timeouts count as a lost network: they are retried without an attempt
//! limit, the delay capped by [`RetryPolicy::max_delay`], until the transfer
//! is paused or cancelled. Other client errors are not retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// When and how often a failed request is sent again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before the first retry; each retry doubles it.
    pub initial_delay: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
    /// Attempts for server errors (5xx, 429) before the transfer fails.
    /// Network failures are retried without limit.
    pub max_attempts: u32,
    /// Longest wait honoured from a `Retry-After` header.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_attempts: 10,
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// Returns the delay before retry number `attempt` (1-based): "equal
    /// jitter", a random point in the upper half of the exponential delay,
    /// or the server's `Retry-After` when that is longer.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let exponential = self.initial_delay.saturating_mul(1 << exponent).min(self.max_delay);
        let half = exponential / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        let backoff = half + Duration::from_millis(jitter);
        match retry_after {
            Some(wait) => wait.min(self.max_retry_after).max(backoff),
            None => backoff,
        }
    }
}

/// Time of the last progress of one request, read by an idle-timeout watchdog.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    origin: Instant,
    last_millis: Arc<AtomicU64>,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self { origin: Instant::now(), last_millis: Arc::new(AtomicU64::new(0)) }
    }

    /// Records that bytes moved now.
    pub(crate) fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_millis.fetch_max(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    /// Resolves once no bytes moved for `idle`.
    pub(crate) async fn idle_elapsed(&self, idle: Duration) {
        loop {
            let idle_for = self.idle_for();
            if idle_for >= idle {
                return;
            }
            tokio::time::sleep(idle - idle_for).await;
        }
    }
}

/// Runs `future`, failing with `None` when `activity` sees no progress for
/// `idle`. The timeout measures silence, not the duration of the request.
pub(crate) async fn with_idle_timeout<T>(
    future: impl Future<Output = T>,
    activity: &Activity,
    idle: Duration,
) -> Option<T> {
    activity.touch();
    tokio::select! {
        output = future => Some(output),
        () = activity.idle_elapsed(idle) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_and_stays_capped() {
        let policy = RetryPolicy::default();
        for attempt in 1..40 {
            let delay = policy.delay(attempt, None);
            assert!(delay <= policy.max_delay, "attempt {attempt}: {delay:?}");
        }
        let first = policy.delay(1, None);
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500), "{first:?}");
    }

    #[test]
    fn delay_honours_longer_retry_after() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(3600))), policy.max_retry_after);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_only_without_progress() {
        let activity = Activity::new();
        let busy = {
            let activity = activity.clone();
            async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    activity.touch();
                }
                "done"
            }
        };
        assert_eq!(with_idle_timeout(busy, &activity, Duration::from_secs(5)).await, Some("done"));

        let silent = tokio::time::sleep(Duration::from_secs(60));
        assert_eq!(with_idle_timeout(silent, &activity, Duration::from_secs(5)).await, None);
    }
}
