//! `ferry-gateway serve` against third-party servers on loopback: s3s-fs
//! (an S3-compatible store that validates SigV4 signatures, installed by
//! `scripts/setup` with `cargo install s3s-fs`) and oidc-provider (an
//! OpenID Connect issuer on Node.js, `tests/oidc/server.mjs`, installed with
//! `npm ci --prefix tests/oidc`).
//!
//! s3s-fs 0.14.1 does not verify part checksums, so these tests do not
//! cover the store's rejection of altered part bytes; the sandbox tests do.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ferry_gateway::serve::{ServeConfig, ServeHandle, start};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

const AUDIENCE: &str = "http://gateway.test/fhir";
const MIB: usize = 1024 * 1024;

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc")
}

/// Returns why the external servers cannot run here, if they cannot.
fn missing_tools() -> Option<String> {
    let on_path = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !on_path("s3s-fs") {
        return Some("s3s-fs is not installed; run scripts/setup".into());
    }
    if !on_path("node") {
        return Some("node is not installed; run scripts/setup".into());
    }
    if !oidc_dir().join("node_modules/oidc-provider").exists() {
        return Some("oidc-provider is not installed; run `npm ci --prefix tests/oidc`".into());
    }
    None
}

struct External {
    s3s_fs: Child,
    oidc: Child,
    issuer: String,
    store_endpoint: String,
    _root: tempfile::TempDir,
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.s3s_fs.start_kill();
        let _ = self.oidc.start_kill();
    }
}

async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

async fn start_external() -> External {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("store")).unwrap();

    let port = free_port().await;
    let s3s_fs = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            "ferrytestkey",
            "--secret-key",
            "ferrytestsecret",
        ])
        .arg(root.path().join("store"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("s3s-fs starts");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut oidc = Command::new("node")
        .arg("server.mjs")
        .current_dir(oidc_dir())
        .env("FERRY_AUDIENCE", AUDIENCE)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts the OIDC issuer");
    let mut lines = BufReader::new(oidc.stdout.take().unwrap()).lines();
    let issuer = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                return value["issuer"].as_str().unwrap().to_owned();
            }
        }
        panic!("the OIDC issuer exited before printing its issuer");
    })
    .await
    .expect("the OIDC issuer starts within 30 s");

    External {
        s3s_fs,
        oidc,
        issuer,
        store_endpoint: format!("http://127.0.0.1:{port}"),
        _root: root,
    }
}

async fn start_gateway(external: &External, data_dir: &Path) -> ServeHandle {
    let credentials = data_dir.join("s3-credentials.toml");
    std::fs::create_dir_all(data_dir).unwrap();
    std::fs::write(
        &credentials,
        "access_key_id = \"ferrytestkey\"\nsecret_access_key = \"ferrytestsecret\"\n",
    )
    .unwrap();
    let config = format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{data_dir}"

[oidc]
issuer = "{issuer}"
audience = "{AUDIENCE}"

[store]
endpoint = "{endpoint}"
region = "us-east-1"
bucket = "ferry"
path_style = true
credentials_file = "{credentials}"
create_bucket = true

[grant]
verify_read_back = true

[policy]
media_types = ["application/zip"]
"#,
        data_dir = data_dir.display(),
        issuer = external.issuer,
        endpoint = external.store_endpoint,
        credentials = credentials.display(),
    );
    let path = data_dir.join("serve.toml");
    std::fs::write(&path, config).unwrap();
    start(ServeConfig::load(&path).unwrap())
        .await
        .expect("serve starts")
}

async fn client_token(external: &External, client: &str, secret: &str, scope: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/token", external.issuer))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", secret),
            ("scope", scope),
            ("resource", AUDIENCE),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {body}"))
        .to_owned()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn serve_round_trip_with_s3s_fs_and_oidc_provider() {
    if let Some(reason) = missing_tools() {
        eprintln!("skipping: {reason}");
        return;
    }
    let external = start_external().await;
    let data_dir = tempfile::tempdir().unwrap();
    let gateway = start_gateway(&external, data_dir.path()).await;
    let api = gateway.grant_api();
    let token = client_token(
        &external,
        "ferry-user",
        "user-secret",
        "user/DocumentReference.crs",
    )
    .await;
    let data: Vec<u8> = (0..6 * MIB + 123)
        .map(|index| (index % 251) as u8)
        .collect();

    let (status, grant) = call(
        reqwest::Method::POST,
        format!("{api}/uploads"),
        &token,
        Some(
            json!({ "file_name": "scan.zip", "size": data.len(), "media_type": "application/zip",
                     "patient": "pat-001", "part_size": 5 * MIB }),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    let upload_id = grant["upload_id"].as_str().unwrap();
    let parts: Vec<&[u8]> = data.chunks(5 * MIB).collect();
    let request_parts: Vec<Value> = parts
        .iter()
        .enumerate()
        .map(|(index, bytes)| json!({ "part_number": index + 1, "sha256": sha256_hex(bytes) }))
        .collect();
    let (status, urls) = call(
        reqwest::Method::POST,
        format!("{api}/uploads/{upload_id}/part-urls"),
        &token,
        Some(json!({ "parts": request_parts })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{urls}");

    let http = reqwest::Client::new();
    let mut completed_parts = Vec::new();
    for (index, url) in urls["urls"].as_array().unwrap().iter().enumerate() {
        let mut request = http
            .put(url["url"].as_str().unwrap())
            .body(parts[index].to_vec());
        for (name, value) in url["headers"].as_object().unwrap() {
            request = request.header(name.as_str(), value.as_str().unwrap());
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "s3s-fs refused part {}",
            index + 1
        );
        completed_parts.push(json!({
            "part_number": index + 1,
            "etag": response.headers()["etag"].to_str().unwrap(),
            "sha256": sha256_hex(parts[index]),
        }));
    }

    // A re-targeted URL is refused by s3s-fs's signature check. The body is
    // small because s3s-fs answers before reading it and closes the connection.
    let tampered = urls["urls"][0]["url"]
        .as_str()
        .unwrap()
        .replace("partNumber=1", "partNumber=2");
    let response = http
        .put(&tampered)
        .header(
            "x-amz-checksum-sha256",
            urls["urls"][0]["headers"]["x-amz-checksum-sha256"]
                .as_str()
                .unwrap(),
        )
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let (status, state) = call(
        reqwest::Method::GET,
        format!("{api}/uploads/{upload_id}"),
        &token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["parts"].as_array().unwrap().len(), 2);

    let (status, wrong) = call(
        reqwest::Method::POST,
        format!("{api}/uploads/{upload_id}/complete"),
        &token,
        Some(json!({ "parts": completed_parts.clone(), "sha256": sha256_hex(b"another file") })),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{wrong}");
    assert_eq!(wrong["field"], "sha256");

    // The refused completion discarded the upload; start again and complete.
    let (_, grant) = call(
        reqwest::Method::POST,
        format!("{api}/uploads"),
        &token,
        Some(
            json!({ "file_name": "scan.zip", "size": data.len(), "media_type": "application/zip",
                     "patient": "pat-001", "part_size": 5 * MIB }),
        ),
    )
    .await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    let (_, urls) = call(
        reqwest::Method::POST,
        format!("{api}/uploads/{upload_id}/part-urls"),
        &token,
        Some(json!({ "parts": request_parts })),
    )
    .await;
    let mut completed_parts = Vec::new();
    for (index, url) in urls["urls"].as_array().unwrap().iter().enumerate() {
        let mut request = http
            .put(url["url"].as_str().unwrap())
            .body(parts[index].to_vec());
        for (name, value) in url["headers"].as_object().unwrap() {
            request = request.header(name.as_str(), value.as_str().unwrap());
        }
        let response = request.send().await.unwrap();
        completed_parts.push(json!({
            "part_number": index + 1,
            "etag": response.headers()["etag"].to_str().unwrap(),
            "sha256": sha256_hex(parts[index]),
        }));
    }
    let (status, completed) = call(
        reqwest::Method::POST,
        format!("{api}/uploads/{upload_id}/complete"),
        &token,
        Some(json!({ "parts": completed_parts, "sha256": sha256_hex(&data) })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{completed}");
    assert_eq!(completed["receipt"]["receipt"]["sha256"], sha256_hex(&data));

    let (status, download) = call(
        reqwest::Method::POST,
        format!("{api}/downloads"),
        &token,
        Some(json!({ "document_id": completed["document_id"] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{download}");
    let bytes = http
        .get(download["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bytes.as_ref() == data.as_slice(), "downloaded bytes differ");
}

#[tokio::test]
async fn serve_checks_external_tokens_and_compartment() {
    if let Some(reason) = missing_tools() {
        eprintln!("skipping: {reason}");
        return;
    }
    let external = start_external().await;
    let data_dir = tempfile::tempdir().unwrap();
    let gateway = start_gateway(&external, data_dir.path()).await;
    let api = gateway.grant_api();
    let patient_token = client_token(
        &external,
        "ferry-patient",
        "patient-secret",
        "patient/DocumentReference.crs",
    )
    .await;
    let upload = |patient: &str| {
        json!({ "file_name": "a.zip", "size": 10, "media_type": "application/zip",
                "patient": patient, "part_size": 5 * MIB })
    };

    let (own, _) = call(
        reqwest::Method::POST,
        format!("{api}/uploads"),
        &patient_token,
        Some(upload("pat-001")),
    )
    .await;
    let (other, error) = call(
        reqwest::Method::POST,
        format!("{api}/uploads"),
        &patient_token,
        Some(upload("pat-002")),
    )
    .await;

    assert_eq!(own, StatusCode::CREATED);
    assert_eq!(other, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["field"], "patient");

    // A token whose payload was altered fails the signature check.
    let mut pieces: Vec<String> = patient_token.split('.').map(str::to_owned).collect();
    let mut payload: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &pieces[1],
        )
        .unwrap(),
    )
    .unwrap();
    payload["patient"] = json!("pat-002");
    pieces[1] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        payload.to_string(),
    );
    let forged = pieces.join(".");
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{api}/uploads"),
        &forged,
        Some(upload("pat-002")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The media-type allow-list of the configuration applies.
    let mut pdf = upload("pat-001");
    pdf["media_type"] = json!("application/pdf");
    let (status, error) = call(
        reqwest::Method::POST,
        format!("{api}/uploads"),
        &patient_token,
        Some(pdf),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{error}");
}
