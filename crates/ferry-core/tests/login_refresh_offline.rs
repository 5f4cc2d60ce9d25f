//! Refreshing the access token while the sandbox gateway (and so its token
//! endpoint) is stopped: the failure is transient, the refresh token is
//! kept, and the first refresh after the gateway is back succeeds.

mod transfer_support;

use std::time::Duration;

use ferry_core::grant::GrantError;
use ferry_gateway::{SandboxConfig, start_sandbox};
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

    let error = grants.keys().await.expect_err("a refresh without a gateway passed");
    let GrantError::AccessToken { source, .. } = &error else {
        panic!("expected an access token error, got: {error}");
    };
    assert!(source.transient, "{error}");
    assert!(!source.sign_in_required, "{error}");
    assert!(error.is_retryable(), "{error}");
    assert!(
        error.to_string().contains("failed to reach the token endpoint"),
        "{error}"
    );
    assert!(session.info().refresh_token_stored, "the refresh token was dropped");

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
