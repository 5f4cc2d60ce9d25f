//! A completion cut short after the store completed the multipart upload
//! but before the gateway recorded it. The tests build that state without
//! killing anything: they store the completion request as the gateway does
//! before it calls the store, then complete the upload on the store directly.

mod grant_support;

use ferry_api::CompleteUploadRequest;
use ferry_gateway::s3::{CompletePart, hex_to_base64};
use grant_support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Uploads every part of `data` and completes the multipart upload on the
/// store alone; returns the upload id and the completion request body.
async fn complete_on_store_only(
    sandbox: &GrantSandbox,
    token: &str,
    data: &[u8],
    record_request: bool,
) -> (String, Value) {
    let (status, grant) = sandbox.grant(token, "pat-001", data.len(), 5 * MIB).await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    let upload_id = grant["upload_id"].as_str().unwrap().to_owned();
    let completion = sandbox.upload_parts(token, &upload_id, data, 5 * MIB).await;
    let request: CompleteUploadRequest = serde_json::from_value(completion.clone()).unwrap();
    let service = sandbox.service();
    let record = service.repository.upload(&upload_id).unwrap().unwrap();

    if record_request {
        service
            .repository
            .record_completion_request(&upload_id, &request)
            .unwrap();
    }
    let parts: Vec<CompletePart> = request
        .parts
        .iter()
        .map(|part| CompletePart {
            part_number: part.part_number,
            etag: part.etag.clone(),
            checksum_sha256: hex_to_base64(&part.sha256).unwrap(),
        })
        .collect();
    service
        .store
        .complete_multipart_upload(&record.object_key, &record.store_upload_id, &parts)
        .await
        .expect("the store completes the upload");
    let listed = service
        .store
        .list_parts(&record.object_key, &record.store_upload_id)
        .await;
    assert_eq!(listed.unwrap_err().code(), Some("NoSuchUpload"));
    (upload_id, completion)
}

#[tokio::test]
async fn state_finishes_completion_the_store_already_made() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(11 * MIB, 21);
    let (upload_id, completion) = complete_on_store_only(&sandbox, &token, &data, true).await;

    let (status, state) = sandbox.get(&token, &format!("/uploads/{upload_id}")).await;

    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["status"], "completed");
    assert_eq!(state["parts"], json!([]));
    let receipt = &state["completed"]["receipt"]["receipt"];
    assert_eq!(receipt["sha256"], sha256_hex(&data));
    assert_eq!(receipt["size"], data.len());
    assert_eq!(receipt["part_count"], 3);
    assert_eq!(sandbox.document_count(), 1);

    // The client's own completion afterwards returns the same receipt.
    let (status, completed) = sandbox.complete(&token, &upload_id, &completion).await;
    assert_eq!(status, StatusCode::OK, "{completed}");
    assert_eq!(completed, state["completed"]);
    assert_eq!(sandbox.document_count(), 1);
}

#[tokio::test]
async fn completion_finishes_what_the_store_already_made() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(7 * MIB, 22);
    let (upload_id, completion) = complete_on_store_only(&sandbox, &token, &data, true).await;

    let (status, completed) = sandbox.complete(&token, &upload_id, &completion).await;

    assert_eq!(status, StatusCode::OK, "{completed}");
    assert_eq!(completed["receipt"]["receipt"]["sha256"], sha256_hex(&data));
    assert_eq!(sandbox.document_count(), 1);
    let (_, state) = sandbox.get(&token, &format!("/uploads/{upload_id}")).await;
    assert_eq!(state["status"], "completed");
    assert_eq!(state["completed"], completed);
}

#[tokio::test]
async fn other_part_list_rejected_after_store_completion() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(7 * MIB, 23);
    let (upload_id, mut completion) = complete_on_store_only(&sandbox, &token, &data, true).await;
    completion["parts"][1]["etag"] = json!("\"another-etag\"");

    let (status, body) = sandbox.complete(&token, &upload_id, &completion).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("another part list"),
        "{body}"
    );
    assert_eq!(sandbox.document_count(), 0);
}

#[tokio::test]
async fn state_without_stored_completion_request_is_conflict() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(6 * MIB, 24);
    let (upload_id, _) = complete_on_store_only(&sandbox, &token, &data, false).await;

    let (status, body) = sandbox.get(&token, &format!("/uploads/{upload_id}")).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no completion request"),
        "{body}"
    );
    assert_eq!(sandbox.document_count(), 0);
}

/// Returns whether the store contains the object of `upload_id`.
async fn object_exists(sandbox: &GrantSandbox, upload_id: &str) -> bool {
    let service = sandbox.service();
    let record = service.repository.upload(upload_id).unwrap().unwrap();
    service
        .store
        .head_object(&record.object_key)
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn abort_after_store_completion_deletes_object() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(6 * MIB, 25);
    let (upload_id, _) = complete_on_store_only(&sandbox, &token, &data, true).await;
    assert!(object_exists(&sandbox, &upload_id).await);

    let status = sandbox
        .delete(&token, &format!("/uploads/{upload_id}"))
        .await;

    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!object_exists(&sandbox, &upload_id).await);
    let (_, state) = sandbox.get(&token, &format!("/uploads/{upload_id}")).await;
    assert_eq!(state["status"], "aborted");
    assert_eq!(sandbox.document_count(), 0);
}

#[tokio::test]
async fn expiry_after_store_completion_deletes_object() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(6 * MIB, 26);
    let (upload_id, _) = complete_on_store_only(&sandbox, &token, &data, false).await;
    let service = sandbox.service();
    let record = service.repository.upload(&upload_id).unwrap().unwrap();

    let expired = ferry_gateway::cleanup::expire_upload(service, &record).await;

    assert!(expired);
    assert!(!object_exists(&sandbox, &upload_id).await);
    assert_eq!(sandbox.document_count(), 0);
}

#[tokio::test]
async fn denial_after_store_completion_deletes_object() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(6 * MIB, 27);
    let (upload_id, completion) = complete_on_store_only(&sandbox, &token, &data, true).await;
    sandbox
        .service()
        .repository
        .add_deny(ferry_gateway::policy::DenyKind::Patient, "pat-001")
        .unwrap();

    let (status, body) = sandbox.complete(&token, &upload_id, &completion).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!object_exists(&sandbox, &upload_id).await);

    // Aborting the denied upload afterwards finds nothing left to delete.
    let status = sandbox
        .delete(&token, &format!("/uploads/{upload_id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!object_exists(&sandbox, &upload_id).await);
    assert_eq!(sandbox.document_count(), 0);
}

#[tokio::test]
async fn other_sha256_rejected_after_store_completion() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(7 * MIB, 28);
    let (upload_id, mut completion) = complete_on_store_only(&sandbox, &token, &data, true).await;
    completion["sha256"] = json!(sha256_hex(b"another file"));

    let (status, body) = sandbox.complete(&token, &upload_id, &completion).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "sha256");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("recorded in the completion request"),
        "{body}"
    );
    assert!(object_exists(&sandbox, &upload_id).await);
    let (_, state) = sandbox.get(&token, &format!("/uploads/{upload_id}")).await;
    assert_eq!(state["status"], "completed", "{state}");
    assert_eq!(sandbox.document_count(), 1);
}
