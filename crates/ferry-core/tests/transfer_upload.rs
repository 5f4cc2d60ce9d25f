//! Uploads through the transfer engine against the embedded S3 store
//! (`ferry-store`) on loopback. The grant API in front of it is a small
//! axum server in this file: it creates real multipart uploads, presigns
//! `UploadPart` URLs that bind `x-amz-checksum-sha256`, lists the stored
//! parts, completes through the store and signs receipts with ES256.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ferry_api::{
    CompleteUploadRequest, CompletedUpload, PartUrl, PartUrls, PartUrlsRequest, Receipt, SignedReceipt, SignedUrl,
    StoredPart, UploadGrant, UploadGrantRequest, UploadState, UploadStatus,
};
use ferry_core::grant::{GrantClient, StaticAccessToken};
use ferry_core::journal::TransferState;
use ferry_core::secrets::Secret;
use ferry_core::transfer::{Engine, EngineOptions, TransferOutcome, UploadOptions};
use ferry_store::CompletedPartRef;
use ferry_store::presign::{Addressing, S3Request, SigningParams, presign};
use sha2::{Digest, Sha256};

const BUCKET: &str = "ferry";
const PART_SIZE: u64 = 5 * 1024 * 1024;

struct Upload {
    key: String,
    size: u64,
    part_size: u64,
    part_count: u32,
    completed: Option<CompletedUpload>,
}

struct GrantServer {
    store: ferry_store::StoreHandle,
    uploads: Mutex<HashMap<String, Upload>>,
    signing_pem: String,
    jwks: serde_json::Value,
    part_url_requests: Mutex<u32>,
}

type Shared = State<Arc<GrantServer>>;

async fn create(State(server): Shared, Json(request): Json<UploadGrantRequest>) -> (StatusCode, Json<UploadGrant>) {
    let key = format!("uploads/{}", uuid::Uuid::new_v4().simple());
    let upload_id = server.store.store().create_multipart_upload(BUCKET, &key, None, &BTreeMap::new()).unwrap();
    let part_size = request.part_size.max(PART_SIZE);
    let part_count = request.size.div_ceil(part_size).max(1) as u32;
    server.uploads.lock().unwrap().insert(
        upload_id.clone(),
        Upload { key, size: request.size, part_size, part_count, completed: None },
    );
    let grant = UploadGrant {
        upload_id,
        part_size,
        part_count,
        size: request.size,
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24),
        correlation_id: "corr-upload".into(),
    };
    (StatusCode::CREATED, Json(grant))
}

async fn part_urls(State(server): Shared, Path(upload_id): Path<String>, Json(request): Json<PartUrlsRequest>) -> Json<PartUrls> {
    *server.part_url_requests.lock().unwrap() += 1;
    let key = server.uploads.lock().unwrap()[&upload_id].key.clone();
    let urls = request
        .parts
        .iter()
        .map(|part| {
            let checksum = STANDARD.encode(hex::decode(&part.sha256).unwrap());
            let number = part.part_number.to_string();
            let query = [("partNumber", number.as_str()), ("uploadId", upload_id.as_str())];
            let headers = [("x-amz-checksum-sha256", checksum.as_str())];
            let request = S3Request {
                method: "PUT",
                endpoint: server.store.endpoint(),
                addressing: Addressing::Path,
                bucket: BUCKET,
                key: &key,
                query: &query,
                headers: &headers,
            };
            let params = SigningParams {
                credentials: &server.store.credentials()[0],
                region: server.store.region(),
                now: SystemTime::now(),
            };
            PartUrl {
                part_number: part.part_number,
                method: "PUT".into(),
                url: SignedUrl::new(presign(&request, Duration::from_secs(300), &params).unwrap().into_string()),
                headers: BTreeMap::from([("x-amz-checksum-sha256".to_owned(), checksum)]),
                expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(300),
            }
        })
        .collect();
    Json(PartUrls { urls })
}

async fn upload_state(State(server): Shared, Path(upload_id): Path<String>) -> Json<UploadState> {
    let uploads = server.uploads.lock().unwrap();
    let upload = &uploads[&upload_id];
    let parts = match &upload.completed {
        Some(_) => Vec::new(),
        None => server
            .store
            .store()
            .list_parts(BUCKET, &upload.key, &upload_id, 0, 10_000)
            .unwrap()
            .parts
            .into_iter()
            .map(|part| StoredPart {
                part_number: part.part_number,
                etag: part.etag,
                size: part.size,
                sha256: hex::encode(STANDARD.decode(part.checksum_sha256).unwrap()),
            })
            .collect(),
    };
    Json(UploadState {
        upload_id: upload_id.clone(),
        status: if upload.completed.is_some() { UploadStatus::Completed } else { UploadStatus::Open },
        file_name: "file".into(),
        size: upload.size,
        part_size: upload.part_size,
        part_count: upload.part_count,
        parts,
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24),
        correlation_id: "corr-upload".into(),
        completed: upload.completed.clone(),
    })
}

async fn complete(
    State(server): Shared,
    Path(upload_id): Path<String>,
    Json(request): Json<CompleteUploadRequest>,
) -> Result<Json<CompletedUpload>, StatusCode> {
    let (key, size, part_count) = {
        let uploads = server.uploads.lock().unwrap();
        let upload = &uploads[&upload_id];
        if let Some(completed) = &upload.completed {
            return Ok(Json(completed.clone()));
        }
        (upload.key.clone(), upload.size, upload.part_count)
    };
    let parts: Vec<CompletedPartRef> = request
        .parts
        .iter()
        .map(|part| CompletedPartRef {
            part_number: part.part_number,
            etag: part.etag.clone(),
            checksum_sha256: Some(STANDARD.encode(hex::decode(&part.sha256).unwrap())),
        })
        .collect();
    server
        .store
        .store()
        .complete_multipart_upload(BUCKET, &key, &upload_id, &parts)
        .await
        .map_err(|_| StatusCode::CONFLICT)?;

    let mut composite = Sha256::new();
    for part in &request.parts {
        composite.update(hex::decode(&part.sha256).unwrap());
    }
    let receipt = Receipt {
        upload_id: upload_id.clone(),
        document_id: format!("doc-{upload_id}"),
        object: key,
        size,
        sha256: request.sha256.clone(),
        parts_sha256: hex::encode(composite.finalize()),
        part_count,
        patient: "pat-001".into(),
        completed_at: jiff::Timestamp::now(),
        correlation_id: "corr-upload".into(),
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("test-key".into());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(server.signing_pem.as_bytes()).unwrap();
    let jws = jsonwebtoken::encode(&header, &receipt, &key).unwrap();
    let completed = CompletedUpload {
        document_id: receipt.document_id.clone(),
        receipt: SignedReceipt { receipt, jws },
    };
    server.uploads.lock().unwrap().get_mut(&upload_id).unwrap().completed = Some(completed.clone());
    Ok(Json(completed))
}

async fn abort(State(server): Shared, Path(upload_id): Path<String>) -> StatusCode {
    let key = server.uploads.lock().unwrap()[&upload_id].key.clone();
    let _ = server.store.store().abort_multipart_upload(BUCKET, &key, &upload_id);
    StatusCode::NO_CONTENT
}

async fn keys(State(server): Shared) -> Json<serde_json::Value> {
    Json(server.jwks.clone())
}

struct Setup {
    server: Arc<GrantServer>,
    engine: Engine,
    files: tempfile::TempDir,
    _state: tempfile::TempDir,
}

async fn setup() -> Setup {
    let state = tempfile::tempdir().unwrap();
    let mut config = ferry_store::StoreConfig::new(state.path().join("store"));
    config.buckets.push(BUCKET.to_owned());
    let store = ferry_store::serve(config).await.unwrap();

    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = key_pair.public_key_raw();
    let jwks = serde_json::json!({ "keys": [{
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "test-key",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]});
    let server = Arc::new(GrantServer {
        store,
        uploads: Mutex::new(HashMap::new()),
        signing_pem: key_pair.serialize_pem(),
        jwks,
        part_url_requests: Mutex::new(0),
    });

    let app = Router::new()
        .route("/grant/v1/uploads", post(create))
        .route("/grant/v1/uploads/{id}", get(upload_state).delete(abort))
        .route("/grant/v1/uploads/{id}/part-urls", post(part_urls))
        .route("/grant/v1/uploads/{id}/complete", post(complete))
        .route("/grant/v1/keys", get(keys))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let base = url::Url::parse(&format!("http://{address}/grant/v1")).unwrap();
    let grants = GrantClient::new(base, reqwest::Client::new(), Arc::new(StaticAccessToken(Secret::new("token"))));
    let options = EngineOptions { part_size: PART_SIZE, ..EngineOptions::default() };
    let engine = Engine::new(state.path().join("journal.sqlite"), grants, options).unwrap();
    Setup { server, engine, files: tempfile::tempdir().unwrap(), _state: state }
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|index| (index % 253) as u8 ^ (index / 4096) as u8).collect()
}

async fn upload_and_check(setup: &Setup, name: &str, bytes: &[u8]) -> String {
    let path = setup.files.path().join(name);
    std::fs::write(&path, bytes).unwrap();

    let handle = setup.engine.upload(&path, "pat-001", UploadOptions::default()).await.unwrap();
    let outcome = handle.wait().await.unwrap();

    let TransferOutcome::Uploaded { document_id, receipt } = outcome else { panic!("unexpected outcome {outcome:?}") };
    assert_eq!(receipt.receipt.sha256, hex::encode(Sha256::digest(bytes)), "{name}");
    assert_eq!(receipt.receipt.size, bytes.len() as u64, "{name}");
    let record = setup.engine.get(handle.id()).unwrap();
    assert_eq!(record.state, TransferState::Completed, "{name}");
    assert_eq!(record.document_id.as_deref(), Some(document_id.as_str()));

    let object = setup.server.store.store().read_object_sha256(BUCKET, &receipt.receipt.object).await;
    assert!(object.is_ok(), "{name}: the store has no object {}", receipt.receipt.object);
    document_id
}

#[tokio::test]
async fn multi_part_file_uploads_with_verified_receipt() {
    let setup = setup().await;
    let bytes = pattern(3 * PART_SIZE as usize + 7);

    upload_and_check(&setup, "study.zip", &bytes).await;

    let uploads = setup.server.uploads.lock().unwrap();
    let upload = uploads.values().next().unwrap();
    assert_eq!(upload.part_count, 4);
}

#[tokio::test]
async fn small_files_upload_as_one_part() {
    let setup = setup().await;
    for (name, bytes) in [("empty.bin", Vec::new()), ("one.bin", vec![7u8]), ("exact.bin", pattern(PART_SIZE as usize))] {
        upload_and_check(&setup, name, &bytes).await;
    }
}

#[tokio::test]
async fn changed_source_fails_on_resume() {
    let setup = setup().await;
    let path = setup.files.path().join("changing.bin");
    std::fs::write(&path, pattern(2 * PART_SIZE as usize)).unwrap();
    let handle = setup.engine.upload(&path, "pat-001", UploadOptions::default()).await.unwrap();
    setup.engine.pause(handle.id()).unwrap();
    let paused = handle.wait().await.unwrap();
    if paused != TransferOutcome::Paused {
        // The upload finished before the pause took effect; nothing to check.
        return;
    }

    std::fs::write(&path, pattern(2 * PART_SIZE as usize + 1)).unwrap();
    let resumed = setup.engine.resume(handle.id()).unwrap();
    let error = resumed.wait().await.unwrap_err();

    assert!(error.to_string().contains("changed since the transfer began"), "{error}");
    assert_eq!(setup.engine.get(handle.id()).unwrap().state, TransferState::Failed);
}
