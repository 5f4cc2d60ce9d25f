//! Refreshes of an external issuer's JWKS triggered by unknown `kid` values,
//! against a loopback issuer that serves discovery and an empty JWKS.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_gateway::serve::{JwksTokenVerifier, OidcConfig};
use ferry_gateway::tokens::{AuthError, Secret, TokenVerifier};
use serde_json::json;

/// Starts an issuer on loopback; returns its URL and its JWKS fetch count.
async fn start_issuer() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let fetches = Arc::new(AtomicUsize::new(0));
    let discovery = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
    let counter = fetches.clone();
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route(
            "/jwks",
            get(move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({ "keys": [] }))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (issuer, fetches)
}

/// Builds a JWT whose header names `kid`. The verifier rejects it before it
/// checks the payload or the signature.
fn forged_token(kid: &str) -> Secret {
    let header = URL_SAFE_NO_PAD.encode(json!({ "alg": "ES256", "kid": kid }).to_string());
    let payload = URL_SAFE_NO_PAD.encode(json!({ "sub": "mallory" }).to_string());
    Secret::new(format!("{header}.{payload}.c2ln"))
}

#[tokio::test]
async fn unknown_kids_share_one_jwks_refresh() {
    let (issuer, fetches) = start_issuer().await;
    let config = OidcConfig {
        issuer: issuer.clone(),
        audience: "https://fhir.example".into(),
        discovery_url: None,
        jwks_refresh_seconds: 3600,
    };
    let verifier = JwksTokenVerifier::discover(&config).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // The first unknown kid requests a refresh and gets 503.
    let first = verifier.verify(&forged_token("kid-0"));
    assert!(matches!(first, Err(AuthError::Unavailable(_))), "{first:?}");
    for attempt in 0..500 {
        if fetches.load(Ordering::SeqCst) == 2 {
            break;
        }
        assert!(attempt < 499, "the refresh task never fetched the JWKS");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Once the refresh task records the fetch, an unknown kid gets 401.
    let mut outcome = verifier.verify(&forged_token("kid-1"));
    for _ in 0..500 {
        if matches!(outcome, Err(AuthError::BadSignature)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        outcome = verifier.verify(&forged_token("kid-1"));
    }
    assert!(
        matches!(outcome, Err(AuthError::BadSignature)),
        "{outcome:?}"
    );

    for index in 2..300 {
        let outcome = verifier.verify(&forged_token(&format!("kid-{index}")));
        assert!(
            matches!(outcome, Err(AuthError::BadSignature)),
            "kid-{index}: {outcome:?}"
        );
    }
    tokio::task::yield_now().await;
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}
