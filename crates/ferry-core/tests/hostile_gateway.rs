//! A hostile or misconfigured gateway and store on loopback against the
//! transfer engine. The gateway sends store URLs over plain http to a
//! remote host, a grant for another document, a grant larger than any
//! object, or one-byte upload parts. The store redirects elsewhere or
//! sends ranges shorter or longer than requested. The gateway signs an upload's receipt for another
//! patient, or completes an upload naming another document than its
//! receipt. Two documents of the same name are downloaded into one folder
//! at once, and `HTTP_PROXY` is set while the store is on loopback.
//!
//! The gateway here is a stand-in, not the sandbox, because the sandbox
//! never sends such responses. It serves only the grant API calls that
//! each test makes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_api::{DownloadGrant, DownloadGrantRequest, SignedUrl};
use ferry_core::grant::{GrantClient, GrantError, StaticAccessToken};
use ferry_core::http::{HttpOptions, ProxySettings, build_client};
use ferry_core::journal::TransferState;
use ferry_core::secrets::Secret;
use ferry_core::transfer::{
    DownloadOptions, Engine, EngineOptions, RetryPolicy, TransferOutcome, UploadOptions,
};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use url::Url;

fn client() -> reqwest::Client {
    build_client(&HttpOptions {
        proxies: ProxySettings::default(),
        ..HttpOptions::default()
    })
    .expect("build the HTTP client")
}

/// A document the stand-in gateway grants: its bytes and the URL it hands
/// out for them.
#[derive(Clone)]
struct Document {
    file_name: String,
    bytes: Arc<Vec<u8>>,
    url: String,
    /// The document id the grant names; the requested id when `None`.
    granted_id: Option<String>,
    /// The size the grant names; the length of `bytes` when `None`.
    granted_size: Option<u64>,
}

#[derive(Clone, Default)]
struct Gateway {
    documents: Arc<HashMap<String, Document>>,
}

async fn grant_download(
    State(gateway): State<Gateway>,
    body: axum::Json<DownloadGrantRequest>,
) -> Response {
    let Some(document) = gateway.documents.get(&body.document_id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let grant = DownloadGrant {
        document_id: document
            .granted_id
            .clone()
            .unwrap_or_else(|| body.document_id.clone()),
        url: SignedUrl::new(document.url.clone()),
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600),
        size: document.granted_size.unwrap_or(document.bytes.len() as u64),
        sha256: hex::encode(Sha256::digest(document.bytes.as_slice())),
        file_name: document.file_name.clone(),
        media_type: "application/octet-stream".to_owned(),
        patient: "Patient/pat-001".to_owned(),
        correlation_id: "corr-hostile".to_owned(),
    };
    axum::Json(grant).into_response()
}

/// Returns one part URL per requested part, all of them `url`.
async fn grant_part_urls(
    State(url): State<String>,
    body: axum::Json<serde_json::Value>,
) -> Response {
    let urls: Vec<serde_json::Value> = body["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|part| {
            serde_json::json!({
                "part_number": part["part_number"],
                "method": "PUT",
                "url": url,
                "headers": {},
                "expires_at": jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "urls": urls })).into_response()
}

/// Serves `app` on a free loopback port and returns its base URL.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{address}")
}

async fn start_gateway(documents: HashMap<String, Document>) -> GrantClient {
    let gateway = Gateway {
        documents: Arc::new(documents),
    };
    let app = Router::new()
        .route("/grant/v1/downloads", post(grant_download))
        .with_state(gateway);
    let base = serve(app).await;
    let tokens = Arc::new(StaticAccessToken(Secret::new("bearer-secret")));
    GrantClient::new(
        Url::parse(&format!("{base}/grant/v1")).unwrap(),
        client(),
        tokens,
    )
}

/// Serves an object by name with `Range` support, as S3 does for a
/// presigned `GET`.
async fn serve_range(
    State(objects): State<Arc<HashMap<String, Arc<Vec<u8>>>>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let Some(bytes) = objects.get(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(range) = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
    else {
        return (StatusCode::OK, bytes.as_slice().to_vec()).into_response();
    };
    let (first, last) = range.trim_start_matches("bytes=").split_once('-').unwrap();
    let first: usize = first.parse().unwrap();
    let last: usize = last.parse::<usize>().unwrap().min(bytes.len() - 1);
    // A short pause per range lets the ranges of two downloads interleave.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let content_range = format!("bytes {first}-{last}/{}", bytes.len());
    (
        StatusCode::PARTIAL_CONTENT,
        [
            (header::CONTENT_RANGE, content_range),
            (header::ETAG, format!("\"{name}\"")),
        ],
        bytes[first..=last].to_vec(),
    )
        .into_response()
}

fn engine_options() -> EngineOptions {
    EngineOptions {
        range_size: 256 * 1024,
        retry: RetryPolicy {
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        ..EngineOptions::default()
    }
}

/// Bytes derived from `seed`, different for every seed.
fn content(seed: u8, size: usize) -> Arc<Vec<u8>> {
    Arc::new((0..size).map(|index| (index % 241) as u8 ^ seed).collect())
}

#[tokio::test]
async fn download_grant_to_remote_plain_http_is_rejected() {
    let document = Document {
        file_name: "scan.zip".to_owned(),
        bytes: content(1, 10),
        url: "http://store.example/bucket/scan.zip?X-Amz-Signature=leak".to_owned(),
        granted_id: None,
        granted_size: None,
    };
    let grants = start_gateway(HashMap::from([("doc-1".to_owned(), document)])).await;

    let error = grants
        .download("doc-1")
        .await
        .expect_err("a plain http store URL was accepted");

    assert!(
        matches!(error, GrantError::InsecureStoreUrl { .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable(), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("http://store.example/bucket/scan.zip"),
        "{message}"
    );
    assert!(!message.contains("X-Amz-Signature"), "{message}");
}

#[tokio::test]
async fn download_grant_with_other_scheme_is_rejected() {
    let document = Document {
        file_name: "scan.zip".to_owned(),
        bytes: content(1, 10),
        url: "file:///etc/passwd".to_owned(),
        granted_id: None,
        granted_size: None,
    };
    let grants = start_gateway(HashMap::from([("doc-1".to_owned(), document)])).await;

    let error = grants
        .download("doc-1")
        .await
        .expect_err("a file URL was accepted");

    assert!(
        matches!(error, GrantError::InsecureStoreUrl { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn download_grant_for_another_document_is_rejected() {
    let document = Document {
        file_name: "scan.zip".to_owned(),
        bytes: content(1, 10),
        url: "http://127.0.0.1:9/bucket/scan.zip".to_owned(),
        granted_id: Some("doc-of-another-patient".to_owned()),
        granted_size: None,
    };
    let grants = start_gateway(HashMap::from([("doc-1".to_owned(), document)])).await;

    let error = grants
        .download("doc-1")
        .await
        .expect_err("a grant for another document was accepted");

    assert!(
        matches!(
            error,
            GrantError::MismatchedAnswer {
                field: "document_id",
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("doc-of-another-patient"), "{message}");
    assert!(message.contains("doc-1"), "{message}");
}

#[tokio::test]
async fn download_larger_than_an_object_is_rejected() {
    let document = Document {
        file_name: "scan.zip".to_owned(),
        bytes: content(1, 10),
        url: "http://127.0.0.1:9/bucket/scan.zip".to_owned(),
        granted_id: None,
        granted_size: Some(1 << 50),
    };
    let grants = start_gateway(HashMap::from([("doc-1".to_owned(), document)])).await;
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let engine = Engine::new(home.path().join("journal.sqlite"), grants, engine_options()).unwrap();

    let handle = engine
        .download("doc-1", folder.path(), DownloadOptions::default())
        .await
        .unwrap();
    let error = handle
        .wait()
        .await
        .expect_err("a 1 PiB download was planned");

    assert!(error.to_string().contains("5 TiB"), "{error}");
    assert_eq!(
        std::fs::read_dir(folder.path()).unwrap().count(),
        0,
        "a file was created"
    );
}

/// Returns an upload grant of one-byte parts.
async fn grant_one_byte_parts(body: axum::Json<ferry_api::UploadGrantRequest>) -> Response {
    let grant = ferry_api::UploadGrant {
        upload_id: "upl-tiny".to_owned(),
        part_size: 1,
        part_count: u32::try_from(body.size).unwrap_or(u32::MAX),
        size: body.size,
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600),
        correlation_id: "corr-hostile".to_owned(),
    };
    (StatusCode::CREATED, axum::Json(grant)).into_response()
}

#[tokio::test]
async fn upload_grant_of_one_byte_parts_is_rejected() {
    let app = Router::new().route("/grant/v1/uploads", post(grant_one_byte_parts));
    let base = serve(app).await;
    let tokens = Arc::new(StaticAccessToken(Secret::new("bearer-secret")));
    let grants = GrantClient::new(
        Url::parse(&format!("{base}/grant/v1")).unwrap(),
        client(),
        tokens,
    );
    let request = ferry_api::UploadGrantRequest {
        file_name: "ct.zip".to_owned(),
        size: 3_000_000_000,
        media_type: "application/zip".to_owned(),
        patient: "pat-001".to_owned(),
        part_size: 16 * 1024 * 1024,
        study: None,
        patient_mismatch_confirmation: None,
    };

    let error = grants
        .create_upload(&request)
        .await
        .expect_err("one-byte parts were accepted");

    assert!(!error.is_retryable(), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("a part size of 1 bytes, below the 16777216 bytes requested"),
        "{message}"
    );
}

#[tokio::test]
async fn part_urls_to_remote_plain_http_are_rejected() {
    let url =
        "http://10.0.0.5:9000/bucket/key?partNumber=1&uploadId=u&X-Amz-Signature=leak".to_owned();
    let app = Router::new()
        .route(
            "/grant/v1/uploads/{upload_id}/part-urls",
            post(grant_part_urls),
        )
        .with_state(url);
    let base = serve(app).await;
    let tokens = Arc::new(StaticAccessToken(Secret::new("bearer-secret")));
    let grants = GrantClient::new(
        Url::parse(&format!("{base}/grant/v1")).unwrap(),
        client(),
        tokens,
    );
    let parts = [ferry_api::PartChecksum {
        part_number: 1,
        sha256: "00".repeat(32),
    }];

    let error = grants
        .part_urls("upl-1", &parts)
        .await
        .expect_err("a plain http part URL was accepted");

    assert!(
        matches!(error, GrantError::InsecureStoreUrl { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("X-Amz-Signature"), "{error}");
}

#[tokio::test]
async fn store_redirect_is_not_followed() {
    let other_requests = Arc::new(AtomicU64::new(0));
    let counter = other_requests.clone();
    let other = serve(Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            (StatusCode::OK, "elsewhere")
        }
    }))
    .await;
    let redirect_to = format!("{other}/collected");
    let store = serve(Router::new().fallback(move || {
        let location = redirect_to.clone();
        async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
            )
        }
    }))
    .await;
    let document = Document {
        file_name: "scan.zip".to_owned(),
        bytes: content(1, 1024),
        url: format!("{store}/bucket/scan.zip?X-Amz-Signature=s"),
        granted_id: None,
        granted_size: None,
    };
    let grants = start_gateway(HashMap::from([("doc-1".to_owned(), document)])).await;
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let engine = Engine::new(home.path().join("journal.sqlite"), grants, engine_options()).unwrap();

    let handle = engine
        .download("doc-1", folder.path(), DownloadOptions::default())
        .await
        .unwrap();
    let result = handle.wait().await;

    let error = result.expect_err("a download through a redirect completed");
    assert!(error.to_string().contains("307"), "{error}");
    assert_eq!(
        other_requests.load(Ordering::Relaxed),
        0,
        "the engine followed the store's redirect"
    );
    assert!(
        !folder.path().join("scan.zip").exists(),
        "the download was placed"
    );
}

#[tokio::test]
async fn same_name_downloads_into_one_folder_both_complete() {
    let size = 2 * 1024 * 1024 + 17;
    let first = content(1, size);
    let second = content(2, size);
    let objects = Arc::new(HashMap::from([
        ("first".to_owned(), first.clone()),
        ("second".to_owned(), second.clone()),
    ]));
    let store = serve(
        Router::new()
            .route("/bucket/{name}", get(serve_range))
            .with_state(objects),
    )
    .await;
    let document = |name: &str, bytes: &Arc<Vec<u8>>| Document {
        file_name: "study.zip".to_owned(),
        bytes: bytes.clone(),
        url: format!("{store}/bucket/{name}?X-Amz-Signature=s"),
        granted_id: None,
        granted_size: None,
    };
    let grants = start_gateway(HashMap::from([
        ("doc-first".to_owned(), document("first", &first)),
        ("doc-second".to_owned(), document("second", &second)),
    ]))
    .await;
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let engine = Engine::new(home.path().join("journal.sqlite"), grants, engine_options()).unwrap();

    let first_handle = engine
        .download("doc-first", folder.path(), DownloadOptions::default())
        .await
        .unwrap();
    let second_handle = engine
        .download("doc-second", folder.path(), DownloadOptions::default())
        .await
        .unwrap();
    let (first_result, second_result) = tokio::join!(first_handle.wait(), second_handle.wait());

    let placed = |result: ferry_core::transfer::TransferResult| match result {
        Ok(TransferOutcome::Downloaded { path, .. }) => path,
        other => panic!("the download did not complete: {other:?}"),
    };
    let first_path = placed(first_result);
    let second_path = placed(second_result);
    assert_ne!(first_path, second_path);
    assert_eq!(
        std::fs::read(&first_path).unwrap(),
        *first,
        "{}",
        first_path.display()
    );
    assert_eq!(
        std::fs::read(&second_path).unwrap(),
        *second,
        "{}",
        second_path.display()
    );
    let mut names: Vec<String> = std::fs::read_dir(folder.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["study (1).zip", "study.zip"],
        "temporary files were left behind"
    );
}

/// Downloads `FERRY_TEST_DOCUMENT` from the grant API at
/// `FERRY_TEST_GRANT_API` into `FERRY_TEST_FOLDER` with the engine's
/// default store client. It runs in a child process that
/// [`loopback_store_is_reached_without_proxy`] starts with `HTTP_PROXY` set,
/// and returns at once in a normal run.
#[tokio::test]
async fn child_downloads_with_default_store_client() {
    let Ok(grant_api) = std::env::var("FERRY_TEST_GRANT_API") else {
        return;
    };
    let document = std::env::var("FERRY_TEST_DOCUMENT").unwrap();
    let folder = std::env::var("FERRY_TEST_FOLDER").unwrap();
    let tokens = Arc::new(StaticAccessToken(Secret::new("bearer-secret")));
    let grants = GrantClient::new(Url::parse(&grant_api).unwrap(), client(), tokens);
    let home = tempfile::tempdir().unwrap();
    let engine = Engine::new(home.path().join("journal.sqlite"), grants, engine_options()).unwrap();

    let handle = engine
        .download(&document, &folder, DownloadOptions::default())
        .await
        .unwrap();
    let outcome = handle.wait().await;

    assert!(
        matches!(outcome, Ok(TransferOutcome::Downloaded { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn loopback_store_is_reached_without_proxy() {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_address = proxy.local_addr().unwrap();
    let proxy_connections = Arc::new(AtomicU64::new(0));
    let counter = proxy_connections.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = proxy.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let response =
                b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = tokio::io::AsyncWriteExt::write_all(&mut socket, response).await;
        }
    });
    let bytes = content(4, 300 * 1024);
    let objects = Arc::new(HashMap::from([("direct".to_owned(), bytes.clone())]));
    let store = serve(
        Router::new()
            .route("/bucket/{name}", get(serve_range))
            .with_state(objects),
    )
    .await;
    let document = Document {
        file_name: "direct.zip".to_owned(),
        bytes: bytes.clone(),
        url: format!("{store}/bucket/direct?X-Amz-Signature=s"),
        granted_id: None,
        granted_size: None,
    };
    let gateway = Gateway {
        documents: Arc::new(HashMap::from([("doc-direct".to_owned(), document)])),
    };
    let grant_api = serve(
        Router::new()
            .route("/grant/v1/downloads", post(grant_download))
            .with_state(gateway),
    )
    .await;
    let folder = tempfile::tempdir().unwrap();

    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child_downloads_with_default_store_client",
            "--exact",
            "--nocapture",
        ])
        .env("FERRY_TEST_GRANT_API", format!("{grant_api}/grant/v1"))
        .env("FERRY_TEST_DOCUMENT", "doc-direct")
        .env("FERRY_TEST_FOLDER", folder.path())
        .env("HTTP_PROXY", format!("http://{proxy_address}"))
        .env("HTTPS_PROXY", format!("http://{proxy_address}"))
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "child did not run:\n{stdout}");
    assert_eq!(
        proxy_connections.load(Ordering::Relaxed),
        0,
        "a loopback store request went through the proxy"
    );
    assert_eq!(
        std::fs::read(folder.path().join("direct.zip")).unwrap(),
        *bytes
    );
}

/// Serves every range request with a complete `206` response that carries
/// only the first half of the requested bytes, so the response is well
/// formed and no connection fails.
async fn serve_half_range(State(bytes): State<Arc<Vec<u8>>>, headers: HeaderMap) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("bytes=0-0");
    let (first, last) = range.trim_start_matches("bytes=").split_once('-').unwrap();
    let first: usize = first.parse().unwrap();
    let last: usize = last.parse::<usize>().unwrap().min(bytes.len() - 1);
    let half = first + (last - first + 1) / 2;
    let content_range = format!("bytes {first}-{last}/{}", bytes.len());
    (
        StatusCode::PARTIAL_CONTENT,
        [(header::CONTENT_RANGE, content_range)],
        bytes[first..half].to_vec(),
    )
        .into_response()
}

#[tokio::test]
async fn short_ranges_from_store_fail_the_download() {
    let bytes = content(3, 600 * 1024);
    let store = serve(
        Router::new()
            .route("/bucket/short", get(serve_half_range))
            .with_state(bytes.clone()),
    )
    .await;
    let document = Document {
        file_name: "short.zip".to_owned(),
        bytes,
        url: format!("{store}/bucket/short?X-Amz-Signature=s"),
        granted_id: None,
        granted_size: None,
    };
    let grants = start_gateway(HashMap::from([("doc-short".to_owned(), document)])).await;
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let engine = Engine::new(home.path().join("journal.sqlite"), grants, engine_options()).unwrap();

    let handle = engine
        .download("doc-short", folder.path(), DownloadOptions::default())
        .await
        .unwrap();
    // Ten attempts with backoff capped at 50 ms end well within this
    // bound. A download that retries short ranges without limit waits here
    // for a network that already works.
    let result = tokio::time::timeout(Duration::from_secs(60), handle.wait()).await;

    let result = result.expect("the download was still retrying after 60 s");
    let error = result.expect_err("a download of short ranges completed");
    let message = error.to_string();
    assert!(message.contains("gave up after 10 attempts"), "{message}");
    // Three ranges are in flight, so whichever exhausts its attempts first
    // names the failure: one of the two full ranges or the shorter last one.
    let expected = [
        "the store sent 131072 bytes for a range of 262144 bytes (range 1)",
        "the store sent 131072 bytes for a range of 262144 bytes (range 2)",
        "the store sent 45056 bytes for a range of 90112 bytes (range 3)",
    ];
    assert!(
        expected.iter().any(|failure| message.contains(failure)),
        "{message}"
    );
    assert!(message.contains("report this to the platform's operators"), "{message}");
    assert!(!message.contains("X-Amz-Signature"), "{message}");
    let record = engine.get(handle.id()).unwrap();
    assert_eq!(record.state, TransferState::Failed);
}

/// Serves every range request with a complete `206` response whose
/// `Content-Range` matches the request but whose body carries the requested
/// bytes and 1000 more.
async fn serve_long_range(State(bytes): State<Arc<Vec<u8>>>, headers: HeaderMap) -> Response {
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("bytes=0-0");
    let (first, last) = range.trim_start_matches("bytes=").split_once('-').unwrap();
    let first: usize = first.parse().unwrap();
    let last: usize = last.parse::<usize>().unwrap().min(bytes.len() - 1);
    let content_range = format!("bytes {first}-{last}/{}", bytes.len());
    let mut body = bytes[first..=last].to_vec();
    body.extend_from_slice(&[0xAB; 1000]);
    (
        StatusCode::PARTIAL_CONTENT,
        [(header::CONTENT_RANGE, content_range)],
        body,
    )
        .into_response()
}

#[tokio::test]
async fn long_ranges_from_store_fail_the_download() {
    let bytes = content(4, 600 * 1024);
    let store = serve(
        Router::new()
            .route("/bucket/long", get(serve_long_range))
            .with_state(bytes.clone()),
    )
    .await;
    let document = Document {
        file_name: "long.zip".to_owned(),
        bytes,
        url: format!("{store}/bucket/long?X-Amz-Signature=s"),
        granted_id: None,
        granted_size: None,
    };
    let grants = start_gateway(HashMap::from([("doc-long".to_owned(), document)])).await;
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let engine = Engine::new(home.path().join("journal.sqlite"), grants, engine_options()).unwrap();

    let handle = engine
        .download("doc-long", folder.path(), DownloadOptions::default())
        .await
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), handle.wait()).await;

    let result = result.expect("the download was still retrying after 60 s");
    let error = result.expect_err("a download of long ranges completed");
    let message = error.to_string();
    assert!(message.contains("gave up after 10 attempts"), "{message}");
    assert!(message.contains("bytes for a range of"), "{message}");
    assert!(message.contains("the store sent at least"), "{message}");
    let record = engine.get(handle.id()).unwrap();
    assert_eq!(record.state, TransferState::Failed);
    assert!(
        !folder.path().join("long.zip").exists(),
        "a download of long ranges was saved"
    );
}

/// A stand-in grant API that takes an upload of one part and completes it
/// with a correctly signed receipt whose patient or document id differs from
/// the upload's.
struct MisfilingGateway {
    /// The patient the receipt names.
    receipt_patient: String,
    /// The document id of the completion response, outside the receipt.
    completed_document_id: String,
    store_url: String,
    signing_pem: String,
    jwks: serde_json::Value,
}

const MISFILED_UPLOAD: &str = "upl-misfiled";
const MISFILED_DOCUMENT: &str = "doc-misfiled";

async fn create_misfiled_upload(body: axum::Json<ferry_api::UploadGrantRequest>) -> Response {
    let grant = ferry_api::UploadGrant {
        upload_id: MISFILED_UPLOAD.to_owned(),
        part_size: body.part_size,
        part_count: 1,
        size: body.size,
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600),
        correlation_id: "corr-hostile".to_owned(),
    };
    (StatusCode::CREATED, axum::Json(grant)).into_response()
}

async fn open_upload_state(UrlPath(upload_id): UrlPath<String>) -> Response {
    let state = ferry_api::UploadState {
        upload_id,
        status: ferry_api::UploadStatus::Open,
        file_name: "ct.zip".to_owned(),
        size: 0,
        part_size: 16 * 1024 * 1024,
        part_count: 1,
        parts: Vec::new(),
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600),
        correlation_id: "corr-hostile".to_owned(),
        completed: None,
    };
    axum::Json(state).into_response()
}

async fn misfiled_part_urls(
    State(gateway): State<Arc<MisfilingGateway>>,
    body: axum::Json<serde_json::Value>,
) -> Response {
    grant_part_urls(State(gateway.store_url.clone()), body).await
}

async fn complete_misfiled(
    State(gateway): State<Arc<MisfilingGateway>>,
    body: axum::Json<ferry_api::CompleteUploadRequest>,
) -> Response {
    let mut composite = Sha256::new();
    for part in &body.parts {
        composite.update(hex::decode(&part.sha256).unwrap());
    }
    let receipt = ferry_api::Receipt {
        upload_id: MISFILED_UPLOAD.to_owned(),
        document_id: MISFILED_DOCUMENT.to_owned(),
        object: "uploads/misfiled".to_owned(),
        size: 4096,
        sha256: body.sha256.clone(),
        parts_sha256: hex::encode(composite.finalize()),
        part_count: u32::try_from(body.parts.len()).unwrap(),
        patient: gateway.receipt_patient.clone(),
        completed_at: jiff::Timestamp::now(),
        correlation_id: "corr-hostile".to_owned(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("hostile-key".to_owned());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(gateway.signing_pem.as_bytes()).unwrap();
    let jws = jsonwebtoken::encode(&header, &receipt, &key).unwrap();
    let completed = ferry_api::CompletedUpload {
        document_id: gateway.completed_document_id.clone(),
        receipt: ferry_api::SignedReceipt { receipt, jws },
    };
    axum::Json(completed).into_response()
}

/// Uploads 4 KiB for patient `pat-001` through a [`MisfilingGateway`] and
/// returns the error with its causes, one per line.
async fn upload_through_misfiling_gateway(
    receipt_patient: &str,
    completed_document_id: &str,
) -> String {
    let store = serve(
        Router::new().fallback(|| async { (StatusCode::OK, [(header::ETAG, "\"etag-1\"")]) }),
    )
    .await;
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = key_pair.public_key_raw();
    let jwks = serde_json::json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "hostile-key",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let gateway = Arc::new(MisfilingGateway {
        receipt_patient: receipt_patient.to_owned(),
        completed_document_id: completed_document_id.to_owned(),
        store_url: format!("{store}/bucket/ct.zip?partNumber=1&uploadId=u&X-Amz-Signature=s"),
        signing_pem: key_pair.serialize_pem(),
        jwks,
    });
    let keys = gateway.jwks.clone();
    let app = Router::new()
        .route("/grant/v1/uploads", post(create_misfiled_upload))
        .route("/grant/v1/uploads/{upload_id}", get(open_upload_state))
        .route(
            "/grant/v1/uploads/{upload_id}/part-urls",
            post(misfiled_part_urls),
        )
        .route(
            "/grant/v1/uploads/{upload_id}/complete",
            post(complete_misfiled),
        )
        .route(
            "/grant/v1/keys",
            get(move || async move { axum::Json(keys) }),
        )
        .with_state(gateway);
    let base = serve(app).await;
    let tokens = Arc::new(StaticAccessToken(Secret::new("bearer-secret")));
    let grants = GrantClient::new(
        Url::parse(&format!("{base}/grant/v1")).unwrap(),
        client(),
        tokens,
    );
    let home = tempfile::tempdir().unwrap();
    let source = home.path().join("ct.zip");
    std::fs::write(&source, content(7, 4096).as_slice()).unwrap();
    let engine = Engine::new(home.path().join("journal.sqlite"), grants, engine_options()).unwrap();

    let handle = engine
        .upload(&source, "pat-001", UploadOptions::default())
        .await
        .unwrap();
    let error = handle
        .wait()
        .await
        .expect_err("an upload with a misfiled receipt completed");

    let record = engine.get(handle.id()).unwrap();
    assert_ne!(
        record.state,
        TransferState::Completed,
        "the journal records the upload as completed"
    );
    assert_eq!(
        record.document_id, None,
        "the journal records the misfiled document"
    );
    let mut message = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        message.push('\n');
        message.push_str(&inner.to_string());
        cause = inner.source();
    }
    message
}

#[tokio::test]
async fn upload_receipt_for_another_patient_is_rejected() {
    let message = upload_through_misfiling_gateway("pat-002", MISFILED_DOCUMENT).await;

    assert!(
        message.contains("under patient pat-002, but the upload was for patient pat-001"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "report document {MISFILED_DOCUMENT} to the platform's administrators"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn upload_completion_naming_another_document_is_rejected() {
    let message = upload_through_misfiling_gateway("pat-001", "doc-other").await;

    assert!(
        message.contains(&format!(
            "names document doc-other but its signed receipt names document {MISFILED_DOCUMENT}"
        )),
        "{message}"
    );
}
