//! Downloads through the transfer engine against the embedded S3 store
//! (`ferry-store`) on loopback. The grant API in front of it is a small
//! axum server in this file that issues real presigned `GET` URLs; it stands
//! in for the gateway's `POST /downloads`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use ferry_api::{DownloadGrant, DownloadGrantRequest, SignedUrl};
use ferry_core::grant::{GrantClient, StaticAccessToken};
use ferry_core::journal::TransferState;
use ferry_core::secrets::Secret;
use ferry_core::transfer::{DownloadOptions, Engine, EngineOptions, ExistingFile, TransferError, TransferOutcome};
use ferry_store::presign::{Addressing, S3Request, SigningParams, presign};
use sha2::{Digest, Sha256};

const BUCKET: &str = "ferry";
const TOKEN: &str = "test-access-token";

/// A document the test grant server knows: its object key, file name and
/// the SHA-256 it claims.
#[derive(Clone)]
struct Document {
    key: String,
    file_name: String,
    size: u64,
    sha256: String,
}

struct GrantServer {
    store: ferry_store::StoreHandle,
    documents: Mutex<HashMap<String, Document>>,
    url_lifetime: Duration,
    authorizations: Mutex<Vec<String>>,
    /// When set, the first grant's URL was signed two minutes ago and has
    /// already expired, although its `expires_at` claims it is valid.
    expire_first_url: bool,
}

impl GrantServer {
    fn presign(&self, method: &str, key: &str, lifetime: Duration) -> String {
        self.presign_at(method, key, lifetime, SystemTime::now())
    }

    fn presign_at(&self, method: &str, key: &str, lifetime: Duration, now: SystemTime) -> String {
        let request = S3Request {
            method,
            endpoint: self.store.endpoint(),
            addressing: Addressing::Path,
            bucket: BUCKET,
            key,
            query: &[],
            headers: &[],
        };
        let params = SigningParams {
            credentials: &self.store.credentials()[0],
            region: self.store.region(),
            now,
        };
        presign(&request, lifetime, &params).unwrap().into_string()
    }
}

async fn grant_download(
    State(server): State<Arc<GrantServer>>,
    headers: HeaderMap,
    Json(request): Json<DownloadGrantRequest>,
) -> Result<Json<DownloadGrant>, StatusCode> {
    let authorization = headers.get("authorization").and_then(|value| value.to_str().ok()).unwrap_or_default();
    let first = {
        let mut authorizations = server.authorizations.lock().unwrap();
        authorizations.push(authorization.to_owned());
        authorizations.len() == 1
    };
    let document = server.documents.lock().unwrap().get(&request.document_id).cloned().ok_or(StatusCode::NOT_FOUND)?;
    let url = if first && server.expire_first_url {
        let signed_at = SystemTime::now() - Duration::from_secs(120);
        server.presign_at("GET", &document.key, Duration::from_secs(60), signed_at)
    } else {
        server.presign("GET", &document.key, server.url_lifetime)
    };
    Ok(Json(DownloadGrant {
        document_id: request.document_id,
        url: SignedUrl::new(url),
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::try_from(server.url_lifetime).unwrap(),
        size: document.size,
        sha256: document.sha256,
        file_name: document.file_name,
        media_type: "application/octet-stream".into(),
        patient: "pat-001".into(),
        correlation_id: "corr-test".into(),
    }))
}

struct Setup {
    server: Arc<GrantServer>,
    engine: Engine,
    downloads: tempfile::TempDir,
    _state: tempfile::TempDir,
}

async fn setup(url_lifetime: Duration, range_size: u64) -> Setup {
    setup_with(url_lifetime, range_size, false).await
}

async fn setup_with(url_lifetime: Duration, range_size: u64, expire_first_url: bool) -> Setup {
    let state = tempfile::tempdir().unwrap();
    let mut config = ferry_store::StoreConfig::new(state.path().join("store"));
    config.buckets.push(BUCKET.to_owned());
    let store = ferry_store::serve(config).await.unwrap();
    let server = Arc::new(GrantServer {
        store,
        documents: Mutex::new(HashMap::new()),
        url_lifetime,
        authorizations: Mutex::new(Vec::new()),
        expire_first_url,
    });

    let app = Router::new().route("/grant/v1/downloads", post(grant_download)).with_state(server.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let base = url::Url::parse(&format!("http://{address}/grant/v1")).unwrap();
    let grants = GrantClient::new(base, reqwest::Client::new(), Arc::new(StaticAccessToken(Secret::new(TOKEN))));
    let options = EngineOptions { range_size, ranges_in_flight: 3, ..EngineOptions::default() };
    let engine = Engine::new(state.path().join("journal.sqlite"), grants, options).unwrap();
    Setup { server, engine, downloads: tempfile::tempdir().unwrap(), _state: state }
}

/// Stores `bytes` under `document_id` with a presigned `PutObject`; the
/// grant server then claims `claimed_sha256` (the real hash when `None`).
async fn put_document(server: &GrantServer, document_id: &str, file_name: &str, bytes: Vec<u8>, claimed_sha256: Option<String>) {
    let key = format!("uploads/{document_id}");
    let url = server.presign("PUT", &key, Duration::from_secs(60));
    let size = bytes.len() as u64;
    let sha256 = claimed_sha256.unwrap_or_else(|| hex::encode(Sha256::digest(&bytes)));
    let response = reqwest::Client::new().put(url).body(bytes).send().await.unwrap();
    assert!(response.status().is_success(), "PutObject returned {}", response.status());
    server.documents.lock().unwrap().insert(
        document_id.to_owned(),
        Document { key, file_name: file_name.to_owned(), size, sha256 },
    );
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|index| (index % 251) as u8 ^ (index / 65_536) as u8).collect()
}

#[tokio::test]
async fn download_in_ranges_matches_the_object() {
    let setup = setup(Duration::from_secs(300), 1024 * 1024).await;
    let bytes = pattern(5 * 1024 * 1024 + 123);
    put_document(&setup.server, "doc-1", "ct-study.zip", bytes.clone(), None).await;

    let handle = setup.engine.download("doc-1", setup.downloads.path(), DownloadOptions::default()).await.unwrap();
    let outcome = handle.wait().await.unwrap();

    let TransferOutcome::Downloaded { path, size, sha256 } = outcome else { panic!("unexpected outcome {outcome:?}") };
    assert_eq!(path, setup.downloads.path().join("ct-study.zip"));
    assert_eq!(size, bytes.len() as u64);
    assert_eq!(sha256, hex::encode(Sha256::digest(&bytes)));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let record = setup.engine.get(handle.id()).unwrap();
    assert_eq!(record.state, TransferState::Completed);
    assert_eq!(record.part_count, Some(6));
    let names: Vec<_> = std::fs::read_dir(setup.downloads.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert_eq!(names, ["ct-study.zip"], "the temporary file was left behind");
    assert_eq!(setup.server.authorizations.lock().unwrap().as_slice(), [format!("Bearer {TOKEN}")]);
}

#[tokio::test]
async fn zero_byte_and_one_byte_documents_download() {
    let setup = setup(Duration::from_secs(300), 1024 * 1024).await;
    put_document(&setup.server, "doc-empty", "empty.bin", Vec::new(), None).await;
    put_document(&setup.server, "doc-one", "one.bin", vec![42], None).await;

    for (document_id, name, expected) in [("doc-empty", "empty.bin", vec![]), ("doc-one", "one.bin", vec![42u8])] {
        let handle = setup.engine.download(document_id, setup.downloads.path(), DownloadOptions::default()).await.unwrap();
        handle.wait().await.unwrap();
        assert_eq!(std::fs::read(setup.downloads.path().join(name)).unwrap(), expected, "{document_id}");
    }
}

#[tokio::test]
async fn mismatched_bytes_leave_nothing_at_destination() {
    let setup = setup(Duration::from_secs(300), 1024 * 1024).await;
    let wrong = hex::encode(Sha256::digest(b"other content"));
    put_document(&setup.server, "doc-bad", "scan.zip", pattern(2 * 1024 * 1024), Some(wrong)).await;

    let handle = setup.engine.download("doc-bad", setup.downloads.path(), DownloadOptions::default()).await.unwrap();
    let error = handle.wait().await.unwrap_err();

    assert!(matches!(*error, TransferError::DigestMismatch { .. }), "{error}");
    assert!(error.to_string().contains("nothing was saved"), "{error}");
    let left: Vec<_> = std::fs::read_dir(setup.downloads.path()).unwrap().collect();
    assert!(left.is_empty(), "files left in the destination: {left:?}");
    assert_eq!(setup.engine.get(handle.id()).unwrap().state, TransferState::Failed);
}

#[tokio::test]
async fn existing_file_gets_a_numbered_name() {
    let setup = setup(Duration::from_secs(300), 1024 * 1024).await;
    put_document(&setup.server, "doc-2", "report.pdf", b"new report".to_vec(), None).await;
    std::fs::write(setup.downloads.path().join("report.pdf"), b"old report").unwrap();

    let handle = setup.engine.download("doc-2", setup.downloads.path(), DownloadOptions::default()).await.unwrap();
    handle.wait().await.unwrap();

    assert_eq!(std::fs::read(setup.downloads.path().join("report.pdf")).unwrap(), b"old report");
    assert_eq!(std::fs::read(setup.downloads.path().join("report (1).pdf")).unwrap(), b"new report");
}

#[tokio::test]
async fn existing_file_fails_when_asked() {
    let setup = setup(Duration::from_secs(300), 1024 * 1024).await;
    put_document(&setup.server, "doc-3", "report.pdf", b"new report".to_vec(), None).await;
    std::fs::write(setup.downloads.path().join("report.pdf"), b"old report").unwrap();

    let options = DownloadOptions { existing_file: ExistingFile::Fail };
    let handle = setup.engine.download("doc-3", setup.downloads.path(), options).await.unwrap();
    let error = handle.wait().await.unwrap_err();

    assert!(matches!(*error, TransferError::DestinationExists { .. }), "{error}");
    assert_eq!(std::fs::read(setup.downloads.path().join("report.pdf")).unwrap(), b"old report");
}

#[tokio::test]
async fn server_name_cannot_escape_the_folder() {
    let setup = setup(Duration::from_secs(300), 1024 * 1024).await;
    put_document(&setup.server, "doc-4", "../../escape.txt", b"contained".to_vec(), None).await;

    let handle = setup.engine.download("doc-4", setup.downloads.path(), DownloadOptions::default()).await.unwrap();
    let TransferOutcome::Downloaded { path, .. } = handle.wait().await.unwrap() else { panic!("not downloaded") };

    assert_eq!(path, setup.downloads.path().join("escape.txt"));
    assert!(!setup.downloads.path().parent().unwrap().join("escape.txt").exists());
}

#[tokio::test]
async fn expired_download_url_is_renewed() {
    let setup = setup_with(Duration::from_secs(300), 1024 * 1024, true).await;
    let bytes = pattern(3 * 1024 * 1024);
    put_document(&setup.server, "doc-5", "renewed.bin", bytes.clone(), None).await;

    let handle = setup.engine.download("doc-5", setup.downloads.path(), DownloadOptions::default()).await.unwrap();
    handle.wait().await.unwrap();

    assert_eq!(std::fs::read(setup.downloads.path().join("renewed.bin")).unwrap(), bytes);
    assert_eq!(setup.server.authorizations.lock().unwrap().len(), 2, "one grant, then one renewal");
}

#[cfg(unix)]
#[tokio::test]
async fn download_is_readable_by_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let setup = setup(Duration::from_secs(300), 1024 * 1024).await;
    let bytes = pattern(2 * 1024 * 1024 + 7);
    put_document(&setup.server, "doc-6", "private.zip", bytes.clone(), None).await;

    let handle = setup.engine.download("doc-6", setup.downloads.path(), DownloadOptions::default()).await.unwrap();
    let TransferOutcome::Downloaded { path, .. } = handle.wait().await.unwrap() else { panic!("not downloaded") };

    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

/// A download whose object is missing at first fails with its temporary
/// file left for a resume. A symbolic link then replaces that file, and the
/// resumed download must not write through it.
#[cfg(unix)]
#[tokio::test]
async fn resume_does_not_follow_planted_symlink() {
    let setup = setup(Duration::from_secs(300), 1024 * 1024).await;
    let bytes = pattern(1024 * 1024 + 5);
    let document = Document {
        key: "uploads/doc-7".to_owned(),
        file_name: "linked.zip".to_owned(),
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
    };
    setup.server.documents.lock().unwrap().insert("doc-7".to_owned(), document);
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target.txt");
    std::fs::write(&target, b"not for patient data").unwrap();

    let handle = setup.engine.download("doc-7", setup.downloads.path(), DownloadOptions::default()).await.unwrap();
    let first = handle.wait().await.unwrap_err();
    assert!(matches!(*first, TransferError::StoreRejected { status: 404, .. }), "{first}");
    let temp = setup.engine.get(handle.id()).unwrap().temp_path.expect("a recorded temporary file");
    assert!(temp.is_file(), "{} was not left for a resume", temp.display());
    std::fs::remove_file(&temp).unwrap();
    std::os::unix::fs::symlink(&target, &temp).unwrap();
    put_document(&setup.server, "doc-7", "linked.zip", bytes, None).await;

    let resumed = setup.engine.resume(handle.id()).unwrap();
    let error = resumed.wait().await.unwrap_err();

    assert!(error.to_string().contains("reopening the temporary file"), "{error}");
    assert_eq!(std::fs::read(&target).unwrap(), b"not for patient data");
    assert!(std::fs::symlink_metadata(&temp).unwrap().file_type().is_symlink());
    assert!(!setup.downloads.path().join("linked.zip").exists());
}
