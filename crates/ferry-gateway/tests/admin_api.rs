//! The admin API over real HTTP against the sandbox, plus one request
//! through the router with a made-up remote peer address, which no loopback
//! socket can produce.

mod grant_support;

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use grant_support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tower::ServiceExt as _;

fn admin_token(sandbox: &GrantSandbox) -> String {
    let path = sandbox.data_dir.path().join("admin-token");
    std::fs::read_to_string(path)
        .expect("the sandbox writes its admin token")
        .trim()
        .to_owned()
}

fn admin_url(sandbox: &GrantSandbox, path: &str) -> String {
    format!("{}/admin/v1{path}", sandbox.handle.urls.issuer)
}

async fn admin(
    sandbox: &GrantSandbox,
    method: reqwest::Method,
    path: &str,
    token: &str,
) -> (StatusCode, Value) {
    let response = sandbox
        .http
        .request(method, admin_url(sandbox, path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn requests_without_admin_token_are_rejected() {
    let sandbox = GrantSandbox::start("").await;
    let user_token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;

    let missing = sandbox
        .http
        .get(admin_url(&sandbox, "/deny"))
        .send()
        .await
        .unwrap();
    let (wrong, body) = admin(&sandbox, reqwest::Method::GET, "/deny", "not-the-token").await;
    let (user, _) = admin(&sandbox, reqwest::Method::GET, "/uploads", &user_token).await;

    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert!(missing.headers().contains_key("www-authenticate"));
    assert_eq!(wrong, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"].as_str().unwrap().contains("admin-token"),
        "{body}"
    );
    let data_dir = sandbox.data_dir.path().to_str().unwrap();
    assert!(
        !body["message"].as_str().unwrap().contains(data_dir),
        "{body}"
    );
    assert_eq!(user, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn authorization_scheme_is_case_insensitive() {
    let sandbox = GrantSandbox::start("").await;
    let token = admin_token(&sandbox);

    for scheme in ["bearer", "BEARER", "Bearer"] {
        let response = sandbox
            .http
            .get(admin_url(&sandbox, "/deny"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "scheme {scheme}");
    }
}

#[tokio::test]
async fn blank_and_dot_dot_deny_values_are_rejected() {
    let sandbox = GrantSandbox::start("").await;
    let token = admin_token(&sandbox);

    for path in [
        "/deny/patient/%20%20",
        "/deny/object/uploads%2F..%2Fupl_abc",
        "/deny/object/upl_abc%2F..",
    ] {
        let (status, body) = admin(&sandbox, reqwest::Method::PUT, path, &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["field"], "value", "{path}: {body}");
    }
    let (_, list) = admin(&sandbox, reqwest::Method::GET, "/deny", &token).await;
    assert_eq!(list, json!([]));
}

#[cfg(unix)]
#[tokio::test]
async fn admin_token_file_is_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let sandbox = GrantSandbox::start("").await;

    let metadata = std::fs::metadata(sandbox.data_dir.path().join("admin-token")).unwrap();

    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
}

#[tokio::test]
async fn deny_entries_are_added_listed_and_removed() {
    let sandbox = GrantSandbox::start("").await;
    let token = admin_token(&sandbox);
    let clinician = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let put = reqwest::Method::PUT;
    let delete = reqwest::Method::DELETE;

    let (added, entry) = admin(&sandbox, put.clone(), "/deny/patient/pat-001", &token).await;
    let (again, _) = admin(&sandbox, put.clone(), "/deny/patient/pat-001", &token).await;
    let (object, _) = admin(&sandbox, put, "/deny/object/uploads/upl_abc", &token).await;
    let (_, list) = admin(&sandbox, reqwest::Method::GET, "/deny", &token).await;
    let (denied, _) = sandbox.grant(&clinician, "pat-001", MIB, 5 * MIB).await;

    assert_eq!(added, StatusCode::CREATED);
    assert_eq!(entry, json!({ "kind": "patient", "value": "pat-001" }));
    assert_eq!(again, StatusCode::OK);
    assert_eq!(object, StatusCode::CREATED);
    assert_eq!(
        list,
        json!([
            { "kind": "patient", "value": "pat-001" },
            { "kind": "object", "value": "uploads/upl_abc" },
        ])
    );
    assert_eq!(denied, StatusCode::FORBIDDEN);

    let (removed, _) = admin(&sandbox, delete.clone(), "/deny/patient/pat-001", &token).await;
    let (missing, _) = admin(&sandbox, delete, "/deny/patient/pat-001", &token).await;
    let (allowed, _) = sandbox.grant(&clinician, "pat-001", MIB, 5 * MIB).await;

    assert_eq!(removed, StatusCode::NO_CONTENT);
    assert_eq!(missing, StatusCode::NOT_FOUND);
    assert_eq!(allowed, StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_deny_kind_is_rejected() {
    let sandbox = GrantSandbox::start("").await;
    let token = admin_token(&sandbox);

    let (status, body) = admin(&sandbox, reqwest::Method::PUT, "/deny/device/d1", &token).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("'device'"),
        "{body}"
    );
}

#[tokio::test]
async fn open_uploads_are_listed() {
    let sandbox = GrantSandbox::start("").await;
    let token = admin_token(&sandbox);
    let clinician = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let (_, open) = sandbox.grant(&clinician, "pat-001", MIB, 5 * MIB).await;
    let data = content(MIB, 9);
    let (finished, _) = sandbox.upload(&clinician, "pat-001", &data, 5 * MIB).await;

    let (status, uploads) = admin(&sandbox, reqwest::Method::GET, "/uploads", &token).await;

    assert_eq!(status, StatusCode::OK, "{uploads}");
    let uploads = uploads.as_array().unwrap();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0]["upload_id"], open["upload_id"]);
    assert_eq!(uploads[0]["subject"], "dr-rivera");
    assert_eq!(uploads[0]["patient"], "pat-001");
    assert_eq!(uploads[0]["size"], MIB);
    assert_ne!(uploads[0]["upload_id"], finished["upload_id"]);
}

#[tokio::test]
async fn remote_peer_is_rejected_even_with_token() {
    let sandbox = GrantSandbox::start("").await;
    let token = admin_token(&sandbox);
    let app = ferry_gateway::router(sandbox.handle.state.clone());
    let request = |peer: &str| {
        let peer: SocketAddr = peer.parse().unwrap();
        axum::http::Request::builder()
            .uri("/admin/v1/deny")
            .header("authorization", format!("Bearer {token}"))
            .extension(ConnectInfo(peer))
            .body(axum::body::Body::empty())
            .unwrap()
    };

    let remote = app
        .clone()
        .oneshot(request("192.168.1.20:40000"))
        .await
        .unwrap();
    let local = app.oneshot(request("127.0.0.1:40000")).await.unwrap();

    assert_eq!(remote.status(), StatusCode::FORBIDDEN);
    assert_eq!(local.status(), StatusCode::OK);
}
