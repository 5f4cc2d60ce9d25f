//! Per-user rate limit of the grant API: one token bucket per token subject.
//!
//! Each bucket holds up to `burst` requests and refills at
//! `requests_per_second`. A request that finds its bucket empty gets
//! `429 rate_limited` with `Retry-After` in whole seconds. Its body is both
//! the grant API's error and a FHIR R4 `OperationOutcome` (issue code
//! `throttled`), so that FHIR tooling and Ferry's client can both read it.
//!
//! Requests without a valid access token pass through to the handler, which
//! rejects them with 401. The buckets live in this process's memory, so
//! gateways that share one database still limit each user per gateway.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::GrantState;
use crate::tokens::Secret;

/// `[policy.rate_limit]`: the token bucket of each user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests per second a bucket regains; 0 turns the limit off.
    pub requests_per_second: u32,
    /// Requests a full bucket allows in one burst.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    /// Generous enough for a client with many parts in flight, which
    /// requests part URLs in batches: 50 requests per second, bursts of 1,000.
    fn default() -> Self {
        RateLimitConfig {
            requests_per_second: 50,
            burst: 1000,
        }
    }
}

/// Buckets above this count are pruned of the full ones on the next request.
const PRUNE_ABOVE: usize = 4096;

struct Bucket {
    tokens: f64,
    updated: Instant,
    /// Whether the last request was rejected, so a run of rejections is logged once.
    limited: bool,
}

/// The token buckets of every user seen.
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> RateLimiter {
        RateLimiter {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket at `now`; returns the wait until
    /// a request is allowed again when the bucket is empty.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let RateLimitConfig {
            requests_per_second,
            burst,
        } = self.config;
        if requests_per_second == 0 {
            return Ok(());
        }
        let rate = f64::from(requests_per_second);
        let capacity = f64::from(burst.max(1));

        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let refill = Duration::from_secs_f64(capacity / rate);
            buckets.retain(|_, bucket| now.saturating_duration_since(bucket.updated) < refill);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
            limited: false,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.updated = now;

        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.limited = false;
            return Ok(());
        }
        if !bucket.limited {
            bucket.limited = true;
            tracing::info!(
                subject = key,
                requests_per_second,
                burst,
                "grant API requests rate-limited"
            );
        }
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
    }
}

/// Middleware that applies the limit to requests with a valid access token.
pub async fn limit(State(state): State<GrantState>, request: Request, next: Next) -> Response {
    let subject = bearer(&request)
        .and_then(|token| state.verifier.0.verify(&token).ok())
        .map(|claims| claims.subject);
    if let Some(subject) = subject
        && let Err(wait) = state.service.rate_limiter.check(&subject, Instant::now())
    {
        return too_many_requests(wait);
    }
    next.run(request).await
}

fn bearer(request: &Request) -> Option<Secret> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| Secret::new(token.trim()))
}

/// Builds the 429 response, with `Retry-After` rounded up to whole seconds, at least 1.
fn too_many_requests(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let message =
        format!("too many requests for this user; retry after {seconds} seconds (Retry-After)");
    let body = serde_json::json!({
        "error": "rate_limited",
        "message": message,
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": "error",
            "code": "throttled",
            "diagnostics": message,
        }],
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests_per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig {
            requests_per_second,
            burst,
        })
    }

    #[test]
    fn burst_is_allowed_then_limited() {
        let limiter = limiter(2, 3);
        let now = Instant::now();

        for _ in 0..3 {
            assert_eq!(limiter.check("alice", now), Ok(()));
        }
        let wait = limiter.check("alice", now).unwrap_err();

        assert_eq!(wait, Duration::from_millis(500));
    }

    #[test]
    fn bucket_refills_at_configured_rate() {
        let limiter = limiter(2, 1);
        let start = Instant::now();
        assert_eq!(limiter.check("alice", start), Ok(()));
        assert!(limiter.check("alice", start).is_err());

        let later = start + Duration::from_millis(500);

        assert_eq!(limiter.check("alice", later), Ok(()));
        assert!(limiter.check("alice", later).is_err());
    }

    #[test]
    fn users_have_separate_buckets() {
        let limiter = limiter(1, 1);
        let now = Instant::now();
        assert_eq!(limiter.check("alice", now), Ok(()));

        assert!(limiter.check("alice", now).is_err());
        assert_eq!(limiter.check("bob", now), Ok(()));
    }

    #[test]
    fn zero_rate_turns_limit_off() {
        let limiter = limiter(0, 1);
        let now = Instant::now();

        for _ in 0..100 {
            assert_eq!(limiter.check("alice", now), Ok(()));
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let response = too_many_requests(Duration::from_millis(1500));

        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
    }
}
