//! Attacks on the admin API's token over real HTTP: forwarding headers do
//! not stand in for the token, and each start replaces the token file.

mod grant_support;

use std::path::Path;

use ferry_gateway::{SandboxConfig, SandboxHandle, start_sandbox};
use grant_support::*;
use reqwest::StatusCode;

async fn start_on(data_dir: &Path) -> SandboxHandle {
    start_sandbox(SandboxConfig {
        data_dir: data_dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        auto_login: None,
    })
    .await
    .expect("sandbox starts")
}

fn read_token(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("admin-token"))
        .expect("the sandbox writes its admin token")
        .trim()
        .to_owned()
}

async fn deny_list_status(handle: &SandboxHandle, token: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{}/admin/v1/deny", handle.urls.issuer))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn forwarding_headers_do_not_replace_admin_token() {
    let sandbox = GrantSandbox::start("").await;
    let response = sandbox
        .http
        .get(format!("{}/admin/v1/deny", sandbox.handle.urls.issuer))
        .header("X-Forwarded-For", "127.0.0.1")
        .header("X-Real-IP", "127.0.0.1")
        .header("Forwarded", "for=127.0.0.1")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn access_token_is_not_an_admin_token() {
    let sandbox = GrantSandbox::start("").await;
    let access = sandbox.login(STAFF, STAFF_SCOPE).await;

    let response = sandbox
        .http
        .get(format!("{}/admin/v1/uploads", sandbox.handle.urls.issuer))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[cfg(unix)]
#[tokio::test]
async fn restart_replaces_token_file_as_0600() {
    use std::os::unix::fs::PermissionsExt as _;

    let data_dir = tempfile::tempdir().unwrap();
    let first = start_on(data_dir.path()).await;
    let old_token = read_token(data_dir.path());
    first.shutdown().await.unwrap();
    let path = data_dir.path().join("admin-token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let second = start_on(data_dir.path()).await;
    let new_token = read_token(data_dir.path());

    assert_ne!(old_token, new_token);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin token file has mode {mode:o}");
    assert_eq!(
        deny_list_status(&second, &old_token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(deny_list_status(&second, &new_token).await, StatusCode::OK);
}
