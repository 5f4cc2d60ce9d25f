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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Attempts for server errors (5xx, 429) and for ranges whose body has
    /// the wrong length before the transfer fails. Network failures are
    /// retried without limit.
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

/// Pause between two slices of a request body after which the connection
/// counts as full: slices that the socket buffers accept at once follow
/// each other within microseconds.
const BUFFERS_FULL_GAP: Duration = Duration::from_millis(100);

/// Maximum extra wait for the bytes still buffered after a body's last
/// slice, whatever the measured rate.
const MAX_DRAIN_ALLOWANCE: Duration = Duration::from_secs(600);

/// Time of the last progress of one request, read by an idle-timeout watchdog.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    origin: Instant,
    last_millis: Arc<AtomicU64>,
    body: Option<Arc<Mutex<BodyDrain>>>,
}

/// Hand-over history of one request body.
///
/// A body slice is handed to the socket long before the peer consumes it.
/// The kernel's send buffer (up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by
/// default on Linux), the bytes in flight and the peer's receive buffer
/// take the first megabytes at memory speed. While the body is being handed
/// over, a hand-over means that the buffers drained, so it counts as
/// progress. After the last slice, though, the buffers still hold about
/// what they took in the first burst, and those bytes drain at the rate the
/// connection showed once they were full. The idle timeout after the body
/// is extended by that drain time, so a slow but moving part is not cut
/// off, while a connection where nothing moves still fails once the drain
/// time and the idle timeout have both passed.
///
/// NOTE: the kernel wakes a writer only after a share of a full send buffer
/// has drained, so on a very slow link two hand-overs can be further apart
/// than the idle timeout while bytes still move.
#[derive(Debug)]
struct BodyDrain {
    length: u64,
    handed: u64,
    last_slice: Option<Instant>,
    /// Bytes handed over, and the time of the last one, before the first
    /// pause of at least [`BUFFERS_FULL_GAP`]: an estimate of the buffers'
    /// capacity.
    burst: Option<(u64, Instant)>,
    /// Extra time allowed after the last slice, once every slice was handed over.
    allowance: Option<Duration>,
}

impl BodyDrain {
    fn record(&mut self, bytes: u64, now: Instant) {
        if let Some(last) = self.last_slice
            && self.burst.is_none()
            && now.duration_since(last) >= BUFFERS_FULL_GAP
        {
            self.burst = Some((self.handed, last));
        }
        self.handed += bytes;
        self.last_slice = Some(now);
        if self.handed >= self.length && self.allowance.is_none() {
            self.allowance = Some(self.drain_allowance(now));
        }
    }

    /// Returns the time the buffered bytes need at the rate measured after
    /// the buffers filled: burst bytes × time after the burst ÷ bytes after
    /// the burst.
    fn drain_allowance(&self, end: Instant) -> Duration {
        // NOTE: a body that the buffers took whole shows no rate, so it gets
        // no extra time. When such a part needs longer than the idle timeout
        // to drain from the buffers, it is cut off and sent again.
        let Some((burst_bytes, burst_end)) = self.burst else {
            return Duration::ZERO;
        };
        let after_bytes = self.handed - burst_bytes;
        let after_time = end.duration_since(burst_end);
        if after_bytes == 0 {
            return Duration::ZERO;
        }
        let seconds = burst_bytes as f64 * after_time.as_secs_f64() / after_bytes as f64;
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(MAX_DRAIN_ALLOWANCE)
            .min(MAX_DRAIN_ALLOWANCE)
    }
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self { origin: Instant::now(), last_millis: Arc::new(AtomicU64::new(0)), body: None }
    }

    /// Creates the activity of a request that sends a body of `length`
    /// bytes, whose slices are reported with [`Activity::handed_over`].
    pub(crate) fn for_body(length: u64) -> Self {
        let body = BodyDrain { length, handed: 0, last_slice: None, burst: None, allowance: None };
        Self { body: Some(Arc::new(Mutex::new(body))), ..Self::new() }
    }

    /// Records that a slice of `bytes` of the request body was handed to the
    /// connection now.
    pub(crate) fn handed_over(&self, bytes: u64) {
        self.touch();
        if let Some(body) = &self.body {
            let mut body = body.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            body.record(bytes, Instant::now());
        }
    }

    /// Returns the extra idle time allowed for buffered body bytes, zero
    /// while the body is still being handed over.
    fn drain_allowance(&self) -> Duration {
        let Some(body) = &self.body else { return Duration::ZERO };
        let body = body.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        body.allowance.unwrap_or(Duration::ZERO)
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

    /// Resolves once no bytes moved for `idle`, plus the drain time of a
    /// request body's buffered bytes after its last slice.
    pub(crate) async fn idle_elapsed(&self, idle: Duration) {
        loop {
            let allowed = idle + self.drain_allowance();
            let idle_for = self.idle_for();
            if idle_for >= allowed {
                return;
            }
            tokio::time::sleep(allowed - idle_for).await;
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

    const MIB: u64 = 1024 * 1024;

    #[tokio::test(start_paused = true)]
    async fn buffered_body_gets_drain_time_at_measured_rate() {
        let activity = Activity::for_body(10 * MIB);
        // The buffers take 4 MiB at once, then 1 MiB per second moves.
        for _ in 0..16 {
            activity.handed_over(MIB / 4);
        }
        for _ in 0..6 {
            tokio::time::advance(Duration::from_secs(1)).await;
            activity.handed_over(MIB);
        }
        assert_eq!(activity.drain_allowance(), Duration::from_secs(4));

        let idle = Duration::from_secs(5);
        let early = tokio::time::timeout(Duration::from_millis(8_900), activity.idle_elapsed(idle)).await;
        assert!(early.is_err(), "the idle timeout fired while 4 MiB were still draining");
        let late = tokio::time::timeout(Duration::from_millis(200), activity.idle_elapsed(idle)).await;
        assert!(late.is_ok(), "the idle timeout did not fire after the drain time");
    }

    #[tokio::test(start_paused = true)]
    async fn body_still_being_sent_gets_no_drain_time() {
        let activity = Activity::for_body(10 * MIB);
        activity.handed_over(4 * MIB);
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.handed_over(MIB);
        assert_eq!(activity.drain_allowance(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn body_taken_in_one_burst_gets_no_drain_time() {
        let activity = Activity::for_body(4 * MIB);
        for _ in 0..16 {
            activity.handed_over(MIB / 4);
        }
        assert_eq!(activity.drain_allowance(), Duration::ZERO);

        let silent = tokio::time::sleep(Duration::from_secs(60));
        assert_eq!(with_idle_timeout(silent, &activity, Duration::from_secs(5)).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn drain_time_is_capped() {
        let activity = Activity::for_body(4 * MIB + 1);
        activity.handed_over(4 * MIB);
        tokio::time::advance(Duration::from_secs(3600)).await;
        activity.handed_over(1);
        assert_eq!(activity.drain_allowance(), MAX_DRAIN_ALLOWANCE);
    }
}
