//! A token bucket shared by every part and range of every transfer of one
//! engine, so that a bandwidth cap holds for the engine as a whole.
//!
//! A caller takes tokens for the bytes it is about to send or has just
//! received. Tokens may go negative: the caller that overdraws sleeps until
//! the bucket is back at zero, so callers queue in the order they asked and
//! the long-run rate never exceeds the cap. The bucket contains at most a
//! quarter of a second of bytes, which bounds the burst after an idle spell.
//! A change of the cap wakes every waiting caller, which then takes its
//! bytes again at the new rate.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

const NANOS_PER_SECOND: i128 = 1_000_000_000;
/// The largest burst, in quarters of one second of the cap.
const BURST_DIVISOR: i128 = 4;
/// Maximum sleep between two calls of a waiting caller's heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A bandwidth cap in bytes per second, where 0 means no cap.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    bytes_per_second: AtomicU64,
    bucket: Mutex<Bucket>,
    rate_changed: Notify,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may pass now, times 10^9 so that refills by the nanosecond
    /// stay exact. It is negative while callers wait.
    scaled_tokens: i128,
    refilled_at: Instant,
}

impl RateLimiter {
    pub(crate) fn new(bytes_per_second: u64) -> Self {
        let limiter = Self {
            bytes_per_second: AtomicU64::new(0),
            bucket: Mutex::new(Bucket {
                scaled_tokens: 0,
                refilled_at: Instant::now(),
            }),
            rate_changed: Notify::new(),
        };
        limiter.set_rate(bytes_per_second);
        limiter
    }

    /// Changes the cap. Transfers under way follow the new rate from their
    /// next slice of bytes. The bucket starts full at the new rate.
    pub(crate) fn set_rate(&self, bytes_per_second: u64) {
        let mut bucket = self.lock();
        self.bytes_per_second.store(bytes_per_second, Ordering::Relaxed);
        bucket.scaled_tokens = scaled_burst(bytes_per_second);
        bucket.refilled_at = Instant::now();
        drop(bucket);
        self.rate_changed.notify_waiters();
    }

    pub(crate) fn rate(&self) -> u64 {
        self.bytes_per_second.load(Ordering::Relaxed)
    }

    /// Waits until `bytes` fit under the cap. While it waits it calls
    /// `heartbeat` at least once a second, so that an idle-timeout watchdog
    /// can tell a capped transfer from a stalled one.
    pub(crate) async fn acquire(&self, bytes: u64, mut heartbeat: impl FnMut()) {
        loop {
            // Registered before taking tokens, so a change of the cap between
            // the two is not missed.
            let rate_changed = self.rate_changed.notified();
            tokio::pin!(rate_changed);
            rate_changed.as_mut().enable();

            let mut wait = self.reserve(bytes);
            if wait.is_zero() {
                return;
            }
            loop {
                let step = wait.min(HEARTBEAT);
                tokio::select! {
                    () = tokio::time::sleep(step) => {}
                    () = rate_changed.as_mut() => break,
                }
                heartbeat();
                wait -= step;
                if wait.is_zero() {
                    return;
                }
            }
        }
    }

    /// Takes `bytes` from the bucket and returns how long the caller must
    /// wait before those bytes fit under the cap, which is zero without a cap.
    pub(crate) fn reserve(&self, bytes: u64) -> Duration {
        let rate = self.rate();
        if rate == 0 || bytes == 0 {
            return Duration::ZERO;
        }
        let rate = i128::from(rate);

        let mut bucket = self.lock();
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(bucket.refilled_at).as_nanos() as i128;
        let refill = elapsed.saturating_mul(rate);
        bucket.scaled_tokens = bucket
            .scaled_tokens
            .saturating_add(refill)
            .min(scaled_burst(rate as u64));
        bucket.refilled_at = now;
        bucket.scaled_tokens -= i128::from(bytes) * NANOS_PER_SECOND;

        if bucket.scaled_tokens >= 0 {
            return Duration::ZERO;
        }
        let deficit = bucket.scaled_tokens.unsigned_abs();
        let wait_nanos = deficit.div_ceil(rate as u128);
        Duration::from_nanos(u64::try_from(wait_nanos).unwrap_or(u64::MAX))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.bucket.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn scaled_burst(bytes_per_second: u64) -> i128 {
    i128::from(bytes_per_second) * NANOS_PER_SECOND / BURST_DIVISOR
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tokio's clock is paused in these tests, so no time passes between
    // two calls and every wait is exact.

    #[tokio::test(start_paused = true)]
    async fn unlimited_rate_never_waits() {
        let limiter = RateLimiter::new(0);
        assert_eq!(limiter.reserve(u64::MAX), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_passes_without_waiting() {
        let limiter = RateLimiter::new(1_000_000);
        assert_eq!(limiter.reserve(250_000), Duration::ZERO);
        assert!(limiter.reserve(1) > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn overdraw_waits_for_the_deficit() {
        let limiter = RateLimiter::new(1_000_000);
        limiter.reserve(250_000);
        assert_eq!(limiter.reserve(500_000), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn queued_callers_wait_in_turn() {
        let limiter = RateLimiter::new(1_000_000);
        limiter.reserve(250_000);
        assert_eq!(limiter.reserve(100_000), Duration::from_millis(100));
        assert_eq!(limiter.reserve(100_000), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn elapsed_time_refills_the_bucket() {
        let limiter = RateLimiter::new(1_000_000);
        limiter.reserve(250_000);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(limiter.reserve(100_000), Duration::ZERO);
        assert_eq!(limiter.reserve(100_000), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_sleeps_for_the_deficit_with_heartbeats() {
        let limiter = RateLimiter::new(1_000_000);
        limiter.reserve(250_000);
        let started = Instant::now();
        let mut beats = 0;
        limiter.acquire(3_000_000, || beats += 1).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(beats, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn lifting_the_cap_wakes_waiters() {
        let limiter = std::sync::Arc::new(RateLimiter::new(1_000));
        limiter.reserve(250);
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire(1_000_000, || {}).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());

        limiter.set_rate(0);
        waiter.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn new_rate_applies_at_once() {
        let limiter = RateLimiter::new(1_000);
        limiter.set_rate(0);
        assert_eq!(limiter.reserve(1 << 30), Duration::ZERO);
        assert_eq!(limiter.rate(), 0);
    }
}
