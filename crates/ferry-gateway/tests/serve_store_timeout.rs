//! `ferry-gateway serve` against a store that accepts connections and then
//! never sends a response. The sandbox on loopback is the token issuer. The store is
//! a TCP listener started by the test, which keeps every connection open
//! without sending a byte.

mod grant_support;

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_gateway::serve::{ServeConfig, ServeHandle, start};
use grant_support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Starts a listener that accepts connections, reads what arrives and never
/// writes. Returns its endpoint URL.
async fn start_stalled_store() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.push(stream);
        }
    });
    format!("http://{address}")
}

async fn start_gateway(sandbox: &GrantSandbox, store: &str, data_dir: &Path) -> ServeHandle {
    let credentials = data_dir.join("s3-credentials.toml");
    std::fs::write(
        &credentials,
        "access_key_id = \"ferrytestkey\"\nsecret_access_key = \"ferrytestsecret\"\n",
    )
    .unwrap();
    let urls = &sandbox.handle.urls;
    let config = format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{data_dir}"

[oidc]
issuer = "{issuer}"
audience = "{audience}"
discovery_url = "{discovery}"

[store]
endpoint = "{store}"
bucket = "ferry"
credentials_file = "{credentials}"
read_timeout_seconds = 1

[policy]
media_types = ["application/zip"]
"#,
        data_dir = data_dir.display(),
        issuer = urls.issuer,
        audience = urls.fhir,
        discovery = urls.smart_configuration,
        credentials = credentials.display(),
    );
    let path = data_dir.join("serve.toml");
    std::fs::write(&path, config).unwrap();
    start(ServeConfig::load(&path).unwrap())
        .await
        .expect("serve starts")
}

#[tokio::test]
async fn stalled_store_fails_request_with_504() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(STAFF, STAFF_SCOPE).await;
    let store = start_stalled_store().await;
    let data_dir = tempfile::tempdir().unwrap();
    let gateway = start_gateway(&sandbox, &store, data_dir.path()).await;
    // The client's own timeout only keeps a broken gateway from hanging the
    // test; the gateway's 1 s read timeout is what the test checks.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let request = json!({
        "file_name": "ct.zip", "size": 6 * MIB, "media_type": "application/zip",
        "patient": "pat-001", "part_size": 5 * MIB,
    });

    let started = Instant::now();
    let response = client
        .post(format!("{}/uploads", gateway.grant_api()))
        .bearer_auth(&token)
        .json(&request)
        .send()
        .await
        .expect("the gateway answers before the test's own timeout");
    let waited = started.elapsed();
    let status = response.status();
    let body: Value = response.json().await.unwrap();

    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"], "internal", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("the object store did not answer in time to create the multipart upload"),
        "{message}"
    );
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(body["issue"][0]["code"], "timeout", "{body}");
    assert_eq!(body["issue"][0]["diagnostics"], message, "{body}");
    assert!(
        waited >= Duration::from_secs(1),
        "answered after {waited:?}"
    );
}
