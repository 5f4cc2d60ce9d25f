//! A sandbox with its grant API and embedded store, started in-process on
//! loopback with a temporary data folder and an optional `grant.toml`, and a
//! client that signs in through the real authorization code flow with PKCE.

#![allow(dead_code)]

// The SMART sign-in and the sandbox start are shared with the SMART flow
// tests, whose module is `common`.
#[path = "../common/mod.rs"]
mod common;

use std::sync::Arc;

use ferry_gateway::SandboxHandle;
use ferry_gateway::grant::GrantService;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use common::{sign_in, start_in_temp_dir};

/// A clinician with a patient context: `patient/` scopes on pat-001.
pub const CLINICIAN: &str = "dr-rivera:pat-001";
pub const CLINICIAN_SCOPE: &str =
    "openid fhirUser launch/patient patient/Patient.rs patient/DocumentReference.crs";
/// Imaging staff: `user/` scopes.
pub const STAFF: &str = "tech-okafor";
pub const STAFF_SCOPE: &str = "openid fhirUser user/Patient.rs user/DocumentReference.crs";

pub const MIB: usize = 1024 * 1024;

pub struct GrantSandbox {
    pub handle: SandboxHandle,
    pub http: reqwest::Client,
    pub data_dir: tempfile::TempDir,
}

impl GrantSandbox {
    /// Starts a sandbox whose data folder holds `grant_toml` as `grant.toml`.
    pub async fn start(grant_toml: &str) -> GrantSandbox {
        let (handle, http, data_dir) = start_in_temp_dir(grant_toml).await;
        GrantSandbox {
            handle,
            http,
            data_dir,
        }
    }

    pub fn service(&self) -> &Arc<GrantService> {
        &self
            .handle
            .state
            .grant
            .as_ref()
            .expect("the sandbox has a grant API")
            .service
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/grant/v1{path}", self.handle.urls.issuer)
    }

    /// Signs in through `/authorize` (the `login_hint` skips the sign-in
    /// page) and `/token` with PKCE; returns the access token.
    pub async fn login(&self, login_hint: &str, scope: &str) -> String {
        let tokens = sign_in(&self.http, &self.handle, login_hint, scope).await;
        tokens["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn post(&self, token: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post_raw(token, path, body.to_string().into_bytes())
            .await
    }

    pub async fn post_raw(&self, token: &str, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.api(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(self.api(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    pub async fn delete(&self, token: &str, path: &str) -> StatusCode {
        self.http
            .delete(self.api(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// Asks for an upload grant of `data`.
    pub async fn grant(
        &self,
        token: &str,
        patient: &str,
        size: usize,
        part_size: usize,
    ) -> (StatusCode, Value) {
        self.post(
            token,
            "/uploads",
            &json!({
                "file_name": "ct-study.zip",
                "size": size,
                "media_type": "application/zip",
                "patient": patient,
                "part_size": part_size,
            }),
        )
        .await
    }

    /// Asks for URLs of `numbers` (1-based) of `data` split in `part_size` parts.
    pub async fn part_urls(
        &self,
        token: &str,
        upload_id: &str,
        data: &[u8],
        part_size: usize,
        numbers: &[usize],
    ) -> (StatusCode, Value) {
        let parts: Vec<Value> = numbers
            .iter()
            .map(|number| json!({ "part_number": number, "sha256": sha256_hex(part(data, part_size, *number)) }))
            .collect();
        self.post(
            token,
            &format!("/uploads/{upload_id}/part-urls"),
            &json!({ "parts": parts }),
        )
        .await
    }

    /// Sends one part as a part URL says: its method, URL and headers.
    pub async fn put_part(&self, part_url: &Value, body: Vec<u8>) -> reqwest::Response {
        let mut request = self.http.put(part_url["url"].as_str().unwrap()).body(body);
        for (name, value) in part_url["headers"].as_object().unwrap() {
            request = request.header(name.as_str(), value.as_str().unwrap());
        }
        request.send().await.unwrap()
    }

    /// Uploads every part of `data` and returns the completion request body.
    pub async fn upload_parts(
        &self,
        token: &str,
        upload_id: &str,
        data: &[u8],
        part_size: usize,
    ) -> Value {
        let count = data.len().div_ceil(part_size);
        let mut parts = Vec::new();
        for chunk in (1..=count).collect::<Vec<_>>().chunks(100) {
            let (status, urls) = self
                .part_urls(token, upload_id, data, part_size, chunk)
                .await;
            assert_eq!(status, StatusCode::OK, "part-urls failed: {urls}");
            for url in urls["urls"].as_array().unwrap() {
                let number = url["part_number"].as_u64().unwrap() as usize;
                let bytes = part(data, part_size, number).to_vec();
                let response = self.put_part(url, bytes).await;
                assert_eq!(
                    response.status(),
                    StatusCode::OK,
                    "part {number} was not stored"
                );
                let etag = response.headers()["etag"].to_str().unwrap().to_owned();
                parts.push(json!({
                    "part_number": number,
                    "etag": etag,
                    "sha256": sha256_hex(part(data, part_size, number)),
                }));
            }
        }
        json!({ "parts": parts, "sha256": sha256_hex(data) })
    }

    /// Sends the completion request `completion` of `upload_id`.
    pub async fn complete(
        &self,
        token: &str,
        upload_id: &str,
        completion: &Value,
    ) -> (StatusCode, Value) {
        self.post(token, &format!("/uploads/{upload_id}/complete"), completion)
            .await
    }

    /// Sends `checkpoint`, a transfer log's checkpoint, to be countersigned.
    pub async fn post_checkpoint(&self, token: &str, checkpoint: &Value) -> (StatusCode, Value) {
        self.post(token, "/checkpoints", checkpoint).await
    }

    /// Grants, uploads and completes `data` for `patient`; returns grant and completion.
    pub async fn upload(
        &self,
        token: &str,
        patient: &str,
        data: &[u8],
        part_size: usize,
    ) -> (Value, Value) {
        let (status, grant) = self.grant(token, patient, data.len(), part_size).await;
        assert_eq!(status, StatusCode::CREATED, "grant failed: {grant}");
        let upload_id = grant["upload_id"].as_str().unwrap();
        let part_size = grant["part_size"].as_u64().unwrap() as usize;
        let completion = self.upload_parts(token, upload_id, data, part_size).await;
        let (status, completed) = self.complete(token, upload_id, &completion).await;
        assert_eq!(status, StatusCode::OK, "completion failed: {completed}");
        (grant, completed)
    }

    /// Number of DocumentReferences the sandbox FHIR server holds.
    pub fn document_count(&self) -> i64 {
        self.handle
            .state
            .db
            .lock()
            .query_row("SELECT count(*) FROM document_references", [], |row| {
                row.get(0)
            })
            .unwrap()
    }

    /// The `urn:ferry:audit-step` codes of one correlation id's events, in order.
    pub async fn audit_steps(&self, token: &str, correlation_id: &str) -> Vec<(String, String)> {
        let (status, bundle) = self
            .get(token, &format!("/audit?correlation_id={correlation_id}"))
            .await;
        assert_eq!(status, StatusCode::OK, "audit query failed: {bundle}");
        assert_eq!(bundle["resourceType"], "Bundle");
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| {
                let event = &entry["resource"];
                let step = event["subtype"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|coding| coding["system"] == "urn:ferry:audit-step")
                    .map(|coding| coding["code"].as_str().unwrap().to_owned())
                    .unwrap();
                (step, event["outcome"].as_str().unwrap().to_owned())
            })
            .collect()
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Part `number` (1-based) of `data`.
pub fn part(data: &[u8], part_size: usize, number: usize) -> &[u8] {
    let start = (number - 1) * part_size;
    &data[start..(start + part_size).min(data.len())]
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic test content.
pub fn content(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|index| (index as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
