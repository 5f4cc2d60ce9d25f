//! The grant API over real HTTP against the in-process sandbox and its
//! embedded store: uploads, completion, downloads, receipts and state.

mod grant_support;

use grant_support::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn multipart_round_trip_returns_signed_receipt_and_same_bytes() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(11 * MIB, 7);

    let (grant, completed) = sandbox.upload(&token, "pat-001", &data, 5 * MIB).await;

    assert_eq!(grant["part_count"], 3);
    assert_eq!(grant["part_size"], 5 * MIB);
    let receipt = &completed["receipt"]["receipt"];
    assert_eq!(receipt["size"], data.len());
    assert_eq!(receipt["sha256"], sha256_hex(&data));
    assert_eq!(receipt["patient"], "pat-001");
    assert_eq!(receipt["correlation_id"], grant["correlation_id"]);
    assert_eq!(sandbox.document_count(), 1);

    // The JWS verifies with the published key and carries the receipt.
    let (status, keys) = sandbox.get(&token, "/keys").await;
    assert_eq!(status, StatusCode::OK);
    let keys: JwkSet = serde_json::from_value(keys).unwrap();
    let key = DecodingKey::from_jwk(&keys.keys[0]).unwrap();
    let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let jws = completed["receipt"]["jws"].as_str().unwrap();
    let payload = jsonwebtoken::decode::<Value>(jws, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(&payload, receipt);

    // Download the document through its presigned GET.
    let document_id = completed["document_id"].as_str().unwrap();
    let (status, download) = sandbox
        .post(&token, "/downloads", &json!({ "document_id": document_id }))
        .await;
    assert_eq!(status, StatusCode::OK, "{download}");
    assert_eq!(download["size"], data.len());
    assert_eq!(download["sha256"], sha256_hex(&data));
    let bytes = sandbox
        .http
        .get(download["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.len(), data.len());
    assert!(bytes.as_ref() == data.as_slice(), "downloaded bytes differ");
}

#[tokio::test]
async fn smart_configuration_advertises_grant_api() {
    let sandbox = GrantSandbox::start("").await;

    let body: Value = sandbox
        .http
        .get(&sandbox.handle.urls.smart_configuration)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(body["ferry_grant_api"], sandbox.api(""));
}

#[tokio::test]
async fn part_with_other_bytes_is_rejected_by_store() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(6 * MIB, 1);
    let (_, grant) = sandbox.grant(&token, "pat-001", data.len(), 5 * MIB).await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    let (_, urls) = sandbox
        .part_urls(&token, upload_id, &data, 5 * MIB, &[1])
        .await;
    let url = &urls["urls"][0];

    let mut tampered = part(&data, 5 * MIB, 1).to_vec();
    tampered[100] ^= 0xff;
    let response = sandbox.put_part(url, tampered).await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("BadDigest"));
    let (_, state) = sandbox.get(&token, &format!("/uploads/{upload_id}")).await;
    assert_eq!(state["parts"], json!([]), "the store kept a rejected part");
}

#[tokio::test]
async fn wrong_part_list_or_hash_is_refused_and_creates_nothing() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(6 * MIB, 2);
    let (_, grant) = sandbox.grant(&token, "pat-001", data.len(), 5 * MIB).await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    let completion = sandbox
        .upload_parts(&token, upload_id, &data, 5 * MIB)
        .await;
    let path = format!("/uploads/{upload_id}/complete");

    let mut wrong_etag = completion.clone();
    wrong_etag["parts"][1]["etag"] = json!("\"0123456789abcdef0123456789abcdef\"");
    let (status, error) = sandbox.post(&token, &path, &wrong_etag).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["field"], "parts[1].etag");

    let mut wrong_part_hash = completion.clone();
    wrong_part_hash["parts"][0]["sha256"] = json!(sha256_hex(b"other"));
    let (status, error) = sandbox.post(&token, &path, &wrong_part_hash).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["field"], "parts[0].sha256");

    let mut missing_part = completion.clone();
    missing_part["parts"].as_array_mut().unwrap().pop();
    let (status, error) = sandbox.post(&token, &path, &missing_part).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["field"], "parts");
    assert_eq!(sandbox.document_count(), 0);

    let mut wrong_hash = completion.clone();
    wrong_hash["sha256"] = json!(sha256_hex(b"not the file"));
    let (status, error) = sandbox.post(&token, &path, &wrong_hash).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["field"], "sha256");
    assert_eq!(sandbox.document_count(), 0);
    let (_, state) = sandbox.get(&token, &format!("/uploads/{upload_id}")).await;
    assert_eq!(state["status"], "aborted");
    assert!(state.get("completed").is_none());
}

#[tokio::test]
async fn completing_twice_returns_same_receipt() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(MIB, 3);
    let (grant, first) = sandbox.upload(&token, "pat-001", &data, 5 * MIB).await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    let completion = json!({
        "parts": [{ "part_number": 1, "etag": "\"ignored-once-completed\"", "sha256": sha256_hex(&data) }],
        "sha256": sha256_hex(&data),
    });

    let (status, second) = sandbox
        .post(
            &token,
            &format!("/uploads/{upload_id}/complete"),
            &completion,
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second, first);
    assert_eq!(sandbox.document_count(), 1);
    let (_, state) = sandbox.get(&token, &format!("/uploads/{upload_id}")).await;
    assert_eq!(state["status"], "completed");
    assert_eq!(state["completed"], first);
}

#[tokio::test]
async fn state_lists_stored_parts_past_one_thousand() {
    // Test-only: parts of 16 bytes, so that 1,005 parts fit in 16 KiB.
    let sandbox = GrantSandbox::start("[grant]\nmin_part_size = 1\n").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let part_size = 16;
    let data = content(1005 * part_size, 4);
    let (status, grant) = sandbox
        .grant(&token, "pat-001", data.len(), part_size)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    assert_eq!(grant["part_count"], 1005);
    let upload_id = grant["upload_id"].as_str().unwrap();

    // Send every part but 7 and 1002, as a client killed midway would have.
    let sent: Vec<usize> = (1..=1005)
        .filter(|number| *number != 7 && *number != 1002)
        .collect();
    for chunk in sent.chunks(100) {
        let (status, urls) = sandbox
            .part_urls(&token, upload_id, &data, part_size, chunk)
            .await;
        assert_eq!(status, StatusCode::OK, "{urls}");
        for url in urls["urls"].as_array().unwrap() {
            let number = url["part_number"].as_u64().unwrap() as usize;
            let response = sandbox
                .put_part(url, part(&data, part_size, number).to_vec())
                .await;
            assert_eq!(response.status(), StatusCode::OK);
        }
    }

    let (status, state) = sandbox.get(&token, &format!("/uploads/{upload_id}")).await;

    assert_eq!(status, StatusCode::OK, "{state}");
    let listed: Vec<usize> = state["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|part| part["part_number"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(listed, sent);
    // Index 1000 is past the first page of ListParts: part 1003, because 7 and 1002 are missing.
    assert_eq!(state["parts"][1000]["part_number"], 1003);
    assert_eq!(
        state["parts"][1000]["sha256"],
        sha256_hex(part(&data, part_size, 1003))
    );
    assert_eq!(state["parts"][0]["size"], part_size);
}

#[tokio::test]
async fn abort_deletes_parts_and_is_idempotent() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(MIB, 5);
    let (_, grant) = sandbox.grant(&token, "pat-001", data.len(), 5 * MIB).await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    sandbox
        .upload_parts(&token, upload_id, &data, 5 * MIB)
        .await;
    let record = sandbox
        .service()
        .repository
        .upload(upload_id)
        .unwrap()
        .unwrap();

    let first = sandbox
        .delete(&token, &format!("/uploads/{upload_id}"))
        .await;
    let second = sandbox
        .delete(&token, &format!("/uploads/{upload_id}"))
        .await;

    assert_eq!(first, StatusCode::NO_CONTENT);
    assert_eq!(second, StatusCode::NO_CONTENT);
    let listed = sandbox
        .service()
        .store
        .list_parts(&record.object_key, &record.store_upload_id)
        .await;
    assert_eq!(listed.unwrap_err().code(), Some("NoSuchUpload"));
    let (status, _) = sandbox
        .part_urls(&token, upload_id, &data, 5 * MIB, &[1])
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn another_users_upload_is_not_found() {
    let sandbox = GrantSandbox::start("").await;
    let owner = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let other = sandbox.login(STAFF, STAFF_SCOPE).await;
    let (_, grant) = sandbox.grant(&owner, "pat-001", 10, 5 * MIB).await;
    let upload_id = grant["upload_id"].as_str().unwrap();

    let (status, error) = sandbox.get(&other, &format!("/uploads/{upload_id}")).await;

    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert_eq!(error["error"], "not_found");
}

#[tokio::test]
async fn checkpoints_are_countersigned_and_listed_in_order() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(STAFF, STAFF_SCOPE).await;
    let checkpoint = |seq: u64| {
        json!({ "device_id": "dev-2b7f", "seq": seq, "head_sha256": sha256_hex(&seq.to_be_bytes()),
                "epoch": 1, "epoch_public_key": "MCowBQYDK2VwAyEA" })
    };

    let (_, first) = sandbox.post(&token, "/checkpoints", &checkpoint(1)).await;
    let (status, second) = sandbox.post(&token, "/checkpoints", &checkpoint(2)).await;
    let (again_status, again) = sandbox.post(&token, "/checkpoints", &checkpoint(2)).await;
    let mut changed = checkpoint(2);
    changed["epoch"] = json!(2);
    let (conflict, _) = sandbox.post(&token, "/checkpoints", &changed).await;
    let (_, list) = sandbox.get(&token, "/checkpoints?device_id=dev-2b7f").await;

    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["subject"], "tech-okafor");
    assert_eq!(second["jws"].as_str().unwrap().split('.').count(), 3);
    assert_eq!(again_status, StatusCode::OK);
    assert_eq!(again, second);
    assert_eq!(conflict, StatusCode::CONFLICT);
    assert_eq!(list, json!([first, second]));
}

#[tokio::test]
async fn study_and_mismatch_confirmation_are_recorded() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(2000, 12);
    let request = json!({
        "file_name": "ct.zip", "size": data.len(), "media_type": "application/zip",
        "patient": "pat-001", "part_size": 5 * MIB,
        "study": { "study_instance_uid": "1.2.840.113619.2.55.3", "description": "CT chest",
                   "series": [{ "series_instance_uid": "1.2.840.113619.2.55.3.1", "modality": "CT",
                                "instance_count": 120 }] },
        "patient_mismatch_confirmation": { "reason": "outside study, verified by phone",
                                           "findings": ["Patient ID 8812 in the study does not match Patient/pat-001"] },
    });

    let (status, grant) = sandbox.post(&token, "/uploads", &request).await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    let upload_id = grant["upload_id"].as_str().unwrap();
    let completion = sandbox.upload_parts(&token, upload_id, &data, 5 * MIB).await;
    let (status, completed) = sandbox
        .post(&token, &format!("/uploads/{upload_id}/complete"), &completion)
        .await;
    assert_eq!(status, StatusCode::OK, "{completed}");

    let resource: String = sandbox
        .handle
        .state
        .db
        .lock()
        .query_row(
            "SELECT resource FROM grant_documents WHERE id = ?1",
            [completed["document_id"].as_str().unwrap()],
            |row| row.get(0),
        )
        .unwrap();
    let resource: Value = serde_json::from_str(&resource).unwrap();
    assert_eq!(resource["contained"][0]["resourceType"], "ImagingStudy");
    assert_eq!(resource["contained"][0]["numberOfInstances"], 120);
    assert_eq!(resource["context"]["related"][0]["reference"], "#study");
    let steps = sandbox
        .audit_steps(&token, grant["correlation_id"].as_str().unwrap())
        .await;
    assert!(
        steps.iter().any(|(step, _)| step == "patient-mismatch-confirmed"),
        "{steps:?}"
    );
}
