//! Two `ferry-gateway serve` instances over one data folder (one SQLite
//! database) and one s3s-fs store, completing the same upload at once. The
//! sandbox on loopback is the token issuer. Gateway B reaches the store
//! through a proxy that delays its requests until gateway A has completed the
//! upload. B therefore always loses the race at the same point: after it read
//! the upload as open and before it records its own completion.

mod grant_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ferry_gateway::serve::{ServeConfig, ServeHandle, start};
use grant_support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

fn s3s_fs_missing() -> bool {
    std::process::Command::new("s3s-fs")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
}

/// Starts s3s-fs on a free loopback port and returns it with its address.
async fn start_s3s_fs(root: &Path) -> (Child, SocketAddr) {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            "ferrytestkey",
            "--secret-key",
            "ferrytestsecret",
        ])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("s3s-fs starts");
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..200 {
        if TcpStream::connect(address).await.is_ok() {
            return (child, address);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("s3s-fs did not listen on {address} within 10 s");
}

/// Starts a TCP proxy to `upstream` that accepts connections at once,
/// reports each on the returned receiver, and forwards nothing until the
/// returned sender is set to `true`.
async fn start_gated_proxy(
    upstream: SocketAddr,
) -> (String, mpsc::UnboundedReceiver<()>, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (accepted, accepted_receiver) = mpsc::unbounded_channel();
    let (release, released) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let _ = accepted.send(());
            let mut released = released.clone();
            tokio::spawn(async move {
                if released.wait_for(|open| *open).await.is_err() {
                    return;
                }
                let mut store = TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut store).await;
            });
        }
    });
    (format!("http://{address}"), accepted_receiver, release)
}

async fn start_gateway(
    sandbox: &GrantSandbox,
    store: &str,
    data_dir: &Path,
    name: &str,
    create_bucket: bool,
) -> ServeHandle {
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
create_bucket = {create_bucket}

[grant]
verify_read_back = true

[policy]
media_types = ["application/zip"]
"#,
        data_dir = data_dir.display(),
        issuer = urls.issuer,
        audience = urls.fhir,
        discovery = urls.smart_configuration,
        credentials = credentials.display(),
    );
    let path = data_dir.join(format!("serve-{name}.toml"));
    std::fs::write(&path, config).unwrap();
    start(ServeConfig::load(&path).unwrap())
        .await
        .expect("serve starts")
}

async fn call(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn concurrent_completions_register_one_document() {
    if s3s_fs_missing() {
        eprintln!("skipping: s3s-fs is not installed; run scripts/setup");
        return;
    }
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(STAFF, STAFF_SCOPE).await;
    let store_root = tempfile::tempdir().unwrap();
    let (_s3s_fs, store_address) = start_s3s_fs(store_root.path()).await;
    let (proxy, mut proxy_connections, release_proxy) = start_gated_proxy(store_address).await;
    let data_dir = tempfile::tempdir().unwrap();
    let gateway_a = start_gateway(
        &sandbox,
        &format!("http://{store_address}"),
        data_dir.path(),
        "a",
        true,
    )
    .await;
    // B sends nothing to the store at start, so its first store request is
    // the one of its completion.
    let gateway_b = start_gateway(&sandbox, &proxy, data_dir.path(), "b", false).await;
    let client = reqwest::Client::new();

    // Upload two parts through gateway A.
    let data: Vec<u8> = (0..6 * MIB + 7).map(|index| (index % 253) as u8).collect();
    let parts: Vec<&[u8]> = data.chunks(5 * MIB).collect();
    let api_a = gateway_a.grant_api();
    let (status, grant) = call(
        &client,
        format!("{api_a}/uploads"),
        &token,
        json!({ "file_name": "ct.zip", "size": data.len(), "media_type": "application/zip",
                "patient": "pat-001", "part_size": 5 * MIB }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    let upload_id = grant["upload_id"].as_str().unwrap().to_owned();
    let checksums: Vec<Value> = parts
        .iter()
        .enumerate()
        .map(|(index, bytes)| json!({ "part_number": index + 1, "sha256": sha256_hex(bytes) }))
        .collect();
    let (status, urls) = call(
        &client,
        format!("{api_a}/uploads/{upload_id}/part-urls"),
        &token,
        json!({ "parts": checksums }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{urls}");
    let mut completed_parts = Vec::new();
    for (index, url) in urls["urls"].as_array().unwrap().iter().enumerate() {
        let mut request = client
            .put(url["url"].as_str().unwrap())
            .body(parts[index].to_vec());
        for (name, value) in url["headers"].as_object().unwrap() {
            request = request.header(name.as_str(), value.as_str().unwrap());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "part {}", index + 1);
        completed_parts.push(json!({
            "part_number": index + 1,
            "etag": response.headers()["etag"].to_str().unwrap(),
            "sha256": sha256_hex(parts[index]),
        }));
    }
    let completion = json!({ "parts": completed_parts, "sha256": sha256_hex(&data) });

    // B reads the upload as open and then waits on the store; A completes.
    let mut completion_b = tokio::spawn({
        let (client, token, completion) = (client.clone(), token.clone(), completion.clone());
        let url = format!("{}/uploads/{upload_id}/complete", gateway_b.grant_api());
        async move { call(&client, url, &token, completion).await }
    });
    proxy_connections
        .recv()
        .await
        .expect("gateway B contacts the store");
    assert!(
        !completion_b.is_finished(),
        "gateway B answered before reaching the store"
    );
    let (status_a, completed_a) = call(
        &client,
        format!("{api_a}/uploads/{upload_id}/complete"),
        &token,
        completion,
    )
    .await;
    release_proxy.send(true).unwrap();
    let (status_b, completed_b) = (&mut completion_b).await.unwrap();

    assert_eq!(status_a, StatusCode::OK, "{completed_a}");
    assert_eq!(status_b, StatusCode::OK, "{completed_b}");
    assert_eq!(completed_b["document_id"], completed_a["document_id"]);
    assert_eq!(completed_b["receipt"]["jws"], completed_a["receipt"]["jws"]);
    let database =
        rusqlite::Connection::open(data_dir.path().join(ferry_gateway::db::DATABASE_FILE)).unwrap();
    let documents: i64 = database
        .query_row("SELECT COUNT(*) FROM grant_documents", [], |row| row.get(0))
        .unwrap();
    assert_eq!(documents, 1);
}
