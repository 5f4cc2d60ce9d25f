//! Refreshing the access token while the sandbox gateway (and so its token
//! endpoint) is stopped: the failure is transient, the refresh token is
//! kept, and the first refresh after the gateway is back succeeds. A
//! transfer that meets such a failure waits for the network instead of
//! failing.

mod transfer_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use ferry_core::grant::{AccessTokenError, AccessTokenSource, GrantClient, GrantError};
use ferry_core::journal::TransferState;
use ferry_core::login::Session;
use ferry_core::secrets::Secret;
use ferry_core::transfer::{Engine, TransferOutcome, UploadOptions};
use ferry_gateway::{SandboxConfig, start_sandbox};
use futures::future::BoxFuture;
use transfer_support::*;

#[tokio::test]
async fn refresh_while_gateway_down_keeps_sign_in() {
    let Fixture {
        sandbox,
        session,
        grants,
        folder,
        ..
    } = Fixture::start(SandboxOptions::default()).await;
    let address = sandbox.local_addr;
    // A margin longer than the token's lifetime makes every request refresh.
    session.set_refresh_margin(Duration::from_secs(24 * 3600));
    sandbox.shutdown().await.expect("the sandbox stops");

    let error = grants
        .keys()
        .await
        .expect_err("a refresh without a gateway passed");
    let GrantError::AccessToken { source, .. } = &error else {
        panic!("expected an access token error, got: {error}");
    };
    assert!(source.transient, "{error}");
    assert!(!source.sign_in_required, "{error}");
    assert!(error.is_retryable(), "{error}");
    assert!(
        error
            .to_string()
            .contains("failed to reach the token endpoint"),
        "{error}"
    );
    assert!(
        session.info().refresh_token_stored,
        "the refresh token was dropped"
    );

    let restarted = start_sandbox(SandboxConfig {
        data_dir: folder.path().join("sandbox"),
        listen: address,
        auto_login: None,
    })
    .await
    .expect("the sandbox restarts on the same address");
    grants
        .keys()
        .await
        .expect("the stored refresh token works once the gateway is back");
    assert!(session.info().refresh_token_stored);
    restarted.shutdown().await.expect("the sandbox stops");
}

/// Tokens from the signed-in session, except while `unreachable` is set:
/// then every request fails the way a refresh fails when the token endpoint
/// cannot be reached, as the test above shows against the stopped sandbox.
/// It stands in for that outage because the sandbox serves its token
/// endpoint, grant API and store together and cannot stop only the first.
struct InterruptibleTokens {
    session: Session,
    unreachable: AtomicBool,
    failures: AtomicU32,
}

impl AccessTokenSource for InterruptibleTokens {
    fn access_token(&self) -> BoxFuture<'_, Result<Secret, AccessTokenError>> {
        Box::pin(async move {
            if self.unreachable.load(Ordering::SeqCst) {
                self.failures.fetch_add(1, Ordering::SeqCst);
                return Err(AccessTokenError {
                    message: "failed to reach the token endpoint".to_owned(),
                    sign_in_required: false,
                    transient: true,
                });
            }
            self.session
                .access_token()
                .await
                .map_err(|error| AccessTokenError {
                    message: error.to_string(),
                    sign_in_required: false,
                    transient: false,
                })
        })
    }
}

#[tokio::test]
async fn upload_waits_while_refresh_fails() {
    let fixture = Fixture::start(SandboxOptions::default()).await;
    let tokens = Arc::new(InterruptibleTokens {
        session: fixture.session.clone(),
        unreachable: AtomicBool::new(true),
        failures: AtomicU32::new(0),
    });
    let grants = GrantClient::new(
        fixture.session.grant_api().unwrap(),
        fixture.session.http().clone(),
        tokens.clone(),
    );
    let engine = Engine::new(fixture.path("journal.sqlite"), grants, test_options()).unwrap();
    let path = fixture.path("study.zip");
    let bytes = pattern(12 * MIB as usize);
    std::fs::write(&path, &bytes).unwrap();

    let handle = engine
        .upload(&path, PATIENT, UploadOptions::default())
        .await
        .unwrap();
    let id = handle.id().to_owned();
    wait_until(
        "the upload waits for the network",
        Duration::from_secs(30),
        || {
            engine.get(&id).unwrap().state == TransferState::WaitingForNetwork
                && tokens.failures.load(Ordering::SeqCst) >= 2
        },
    )
    .await;
    assert!(
        engine.get(&id).unwrap().upload_id.is_none(),
        "the upload was created without a token"
    );
    tokens.unreachable.store(false, Ordering::SeqCst);

    let outcome = tokio::time::timeout(Duration::from_secs(120), handle.wait())
        .await
        .expect("the upload finished within 120 s")
        .expect("the upload succeeded once tokens were available");
    assert!(
        matches!(outcome, TransferOutcome::Uploaded { .. }),
        "{outcome:?}"
    );
    assert!(fixture.session.info().refresh_token_stored);
}
