//! The grant API's per-user token bucket over real HTTP.

mod grant_support;

use grant_support::*;
use reqwest::StatusCode;

/// One request per second at most, after a burst of two.
const TIGHT_LIMIT: &str = "[policy.rate_limit]\nrequests_per_second = 1\nburst = 2\n";

async fn get_state(sandbox: &GrantSandbox, token: &str) -> reqwest::Response {
    sandbox
        .http
        .get(sandbox.api("/uploads/upl_unknown"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Sends requests until one is rate-limited, and returns it. The bucket
/// regains one request per second, so twenty quick requests always run it dry.
async fn first_limited(sandbox: &GrantSandbox, token: &str) -> reqwest::Response {
    for _ in 0..20 {
        let response = get_state(sandbox, token).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            return response;
        }
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    panic!("twenty requests passed a limit of one per second");
}

#[tokio::test]
async fn requests_past_burst_get_429_with_retry_after() {
    let sandbox = GrantSandbox::start(TIGHT_LIMIT).await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    for _ in 0..2 {
        assert_eq!(
            get_state(&sandbox, &token).await.status(),
            StatusCode::NOT_FOUND
        );
    }

    let limited = first_limited(&sandbox, &token).await;

    assert_eq!(limited.headers()["retry-after"], "1");
    let body: serde_json::Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["code"], "throttled");
    assert!(
        body["message"].as_str().unwrap().contains("retry after 1"),
        "{body}"
    );
    // The body parses as the grant API's error type too.
    let error: ferry_api::ApiError = serde_json::from_value(body).unwrap();
    assert_eq!(error.error, ferry_api::ErrorCode::RateLimited);
}

#[tokio::test]
async fn each_user_has_own_bucket() {
    let sandbox = GrantSandbox::start(TIGHT_LIMIT).await;
    let clinician = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let staff = sandbox.login(STAFF, STAFF_SCOPE).await;
    first_limited(&sandbox, &clinician).await;

    let other = get_state(&sandbox, &staff).await;

    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn requests_without_valid_token_get_401_not_429() {
    let sandbox = GrantSandbox::start(TIGHT_LIMIT).await;

    for _ in 0..4 {
        let response = get_state(&sandbox, "not-a-token").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn default_limit_allows_a_long_burst() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;

    for _ in 0..300 {
        assert_eq!(
            get_state(&sandbox, &token).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}
