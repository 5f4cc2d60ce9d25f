//! Policy, signed-URL and audit behaviour of the grant API against the
//! in-process sandbox and its embedded store.

mod grant_support;

use std::time::Duration;

use ferry_gateway::admin::{DenyAction, DenyArgs, DenyEntry, run_deny};
use grant_support::*;
use reqwest::StatusCode;
use serde_json::json;

/// Replaces the value of query parameter `name` in `url`.
fn with_query(url: &str, name: &str, value: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(key, old)| {
            let new = if key == name {
                value.to_owned()
            } else {
                old.into_owned()
            };
            (key.into_owned(), new)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

#[tokio::test]
async fn tampered_and_retargeted_urls_are_rejected() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(11 * MIB, 9);
    let (_, grant) = sandbox.grant(&token, "pat-001", data.len(), 5 * MIB).await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    // Parts 1 and 2 hold the same bytes (the content repeats every 256
    // bytes), so part 3 is the one with another checksum.
    let (_, urls) = sandbox
        .part_urls(&token, upload_id, &data, 5 * MIB, &[1, 3])
        .await;
    let url = urls["urls"][0]["url"].as_str().unwrap();
    let body = part(&data, 5 * MIB, 1).to_vec();
    let checksum = urls["urls"][0]["headers"]["x-amz-checksum-sha256"]
        .as_str()
        .unwrap();

    let signature = url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "X-Amz-Signature")
        .unwrap()
        .1
        .into_owned();
    let flipped = format!(
        "{}{}",
        &signature[..63],
        if signature.ends_with('0') { '1' } else { '0' }
    );
    let cases = [
        (
            "tampered signature",
            with_query(url, "X-Amz-Signature", &flipped),
        ),
        ("other part number", with_query(url, "partNumber", "3")),
        (
            "longer lifetime",
            with_query(url, "X-Amz-Expires", "604800"),
        ),
        (
            "other object",
            url.replace(upload_id, "upl_someoneelse00000000"),
        ),
    ];
    for (case, target) in cases {
        let response = sandbox
            .http
            .put(&target)
            .header("x-amz-checksum-sha256", checksum)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{case} was accepted"
        );
    }

    // The signature binds the checksum header: another value is refused too.
    let other_checksum = urls["urls"][1]["headers"]["x-amz-checksum-sha256"]
        .as_str()
        .unwrap();
    let response = sandbox
        .http
        .put(url)
        .header("x-amz-checksum-sha256", other_checksum)
        .body(part(&data, 5 * MIB, 3).to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "a re-bound checksum was accepted"
    );

    let (_, state) = sandbox.get(&token, &format!("/uploads/{upload_id}")).await;
    assert_eq!(state["parts"], json!([]));
}

#[tokio::test]
async fn expired_part_url_is_rejected() {
    let sandbox = GrantSandbox::start("[policy.lifetimes]\npart_url = 1\n").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(1000, 3);
    let (_, grant) = sandbox.grant(&token, "pat-001", data.len(), 5 * MIB).await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    let (_, urls) = sandbox
        .part_urls(&token, upload_id, &data, 5 * MIB, &[1])
        .await;

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = sandbox.put_part(&urls["urls"][0], data.clone()).await;

    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // A fresh URL for the same part works.
    let (_, urls) = sandbox
        .part_urls(&token, upload_id, &data, 5 * MIB, &[1])
        .await;
    let response = sandbox.put_part(&urls["urls"][0], data.clone()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn scope_and_compartment_violations_are_rejected_and_audited() {
    let sandbox = GrantSandbox::start("").await;
    let clinician = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let read_only = sandbox
        .login(
            STAFF,
            "openid fhirUser user/Patient.rs user/DocumentReference.rs",
        )
        .await;

    let (status, error) = sandbox.grant(&clinician, "pat-002", 100, 5 * MIB).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["error"], "forbidden");
    assert_eq!(error["field"], "patient");
    let correlation_id = error["correlation_id"].as_str().unwrap();
    let (_, bundle) = sandbox
        .get(
            &clinician,
            &format!("/audit?correlation_id={correlation_id}"),
        )
        .await;
    let event = &bundle["entry"][0]["resource"];
    assert_eq!(event["outcome"], "4");
    assert_eq!(
        event["agent"][0]["policy"][0],
        "urn:ferry:policy:patient-compartment"
    );
    assert_eq!(event["entity"][1]["what"]["reference"], "Patient/pat-002");

    let (status, error) = sandbox.grant(&read_only, "pat-001", 100, 5 * MIB).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["error"], "insufficient_scope");
    let correlation_id = error["correlation_id"].as_str().unwrap();
    let steps = sandbox.audit_steps(&read_only, correlation_id).await;
    assert_eq!(steps, vec![("authorize-upload".to_owned(), "4".to_owned())]);

    // Downloads are checked against the compartment too.
    let (_, completed) = sandbox
        .upload(
            &read_only_uploader(&sandbox).await,
            "pat-002",
            b"x-ray",
            5 * MIB,
        )
        .await;
    let (status, error) = sandbox
        .post(
            &clinician,
            "/downloads",
            &json!({ "document_id": completed["document_id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");

    let (status, _) = sandbox.get("not-a-token", "/uploads/upl_x").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A staff token that may upload for any sandbox patient.
async fn read_only_uploader(sandbox: &GrantSandbox) -> String {
    sandbox.login(STAFF, STAFF_SCOPE).await
}

#[tokio::test]
async fn deny_list_takes_effect_on_next_request() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(6 * MIB, 6);
    let (_, grant) = sandbox.grant(&token, "pat-001", data.len(), 5 * MIB).await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    let (_, urls) = sandbox
        .part_urls(&token, upload_id, &data, 5 * MIB, &[1, 2])
        .await;
    let response = sandbox
        .put_part(&urls["urls"][0], part(&data, 5 * MIB, 1).to_vec())
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    run_deny(
        DenyArgs {
            action: DenyAction::Add(DenyEntry {
                user: None,
                patient: Some("pat-001".into()),
                object: None,
            }),
            data_dir: Some(sandbox.data_dir.path().to_owned()),
        },
        None,
    )
    .unwrap();

    // The URL issued before the entry is refused by the embedded store.
    let response = sandbox
        .put_part(&urls["urls"][1], part(&data, 5 * MIB, 2).to_vec())
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // No more URLs, and the upload ends as denied.
    let (status, error) = sandbox
        .part_urls(&token, upload_id, &data, 5 * MIB, &[2])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["field"], "patient");
    let (status, _) = sandbox
        .post(&token, &format!("/uploads/{upload_id}/complete"), &json!({
            "parts": [
                { "part_number": 1, "etag": "\"a\"", "sha256": sha256_hex(part(&data, 5 * MIB, 1)) },
                { "part_number": 2, "etag": "\"b\"", "sha256": sha256_hex(part(&data, 5 * MIB, 2)) },
            ],
            "sha256": sha256_hex(&data),
        }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, state) = sandbox.get(&token, &format!("/uploads/{upload_id}")).await;
    assert_eq!(state["status"], "denied");
    let (status, _) = sandbox.grant(&token, "pat-001", 10, 5 * MIB).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(sandbox.document_count(), 0);

    let steps = sandbox
        .audit_steps(&token, grant["correlation_id"].as_str().unwrap())
        .await;
    assert!(
        steps.contains(&("store-access".to_owned(), "4".to_owned())),
        "the store's refusal was not audited: {steps:?}"
    );
}

#[tokio::test]
async fn cleanup_task_aborts_abandoned_upload() {
    let sandbox = GrantSandbox::start(
        "[grant]\ncleanup_interval_seconds = 1\n[policy.lifetimes]\nupload = 2\n",
    )
    .await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(1000, 8);
    let (_, grant) = sandbox.grant(&token, "pat-001", data.len(), 5 * MIB).await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    sandbox
        .upload_parts(&token, upload_id, &data, 5 * MIB)
        .await;
    let service = sandbox.service();

    let mut status = ferry_api::UploadStatus::Open;
    for _ in 0..100 {
        status = service
            .repository
            .upload(upload_id)
            .unwrap()
            .unwrap()
            .status;
        if status != ferry_api::UploadStatus::Open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    assert_eq!(status, ferry_api::UploadStatus::Expired);
    let record = service.repository.upload(upload_id).unwrap().unwrap();
    let listed = service
        .store
        .list_parts(&record.object_key, &record.store_upload_id)
        .await;
    assert_eq!(listed.unwrap_err().code(), Some("NoSuchUpload"));
    let (status, error) = sandbox
        .part_urls(&token, upload_id, &data, 5 * MIB, &[1])
        .await;
    assert_eq!(status, StatusCode::GONE, "{error}");
    let steps = sandbox
        .audit_steps(&token, grant["correlation_id"].as_str().unwrap())
        .await;
    assert!(steps.iter().any(|(step, _)| step == "expire"), "{steps:?}");
}

#[tokio::test]
async fn audit_joins_upload_and_download_steps_by_correlation_id() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(1000, 11);
    let (grant, completed) = sandbox.upload(&token, "pat-001", &data, 5 * MIB).await;
    let (_, download) = sandbox
        .post(
            &token,
            "/downloads",
            &json!({ "document_id": completed["document_id"] }),
        )
        .await;
    let response = sandbox
        .http
        .get(download["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.bytes().await.unwrap();

    let upload_steps: Vec<String> = sandbox
        .audit_steps(&token, grant["correlation_id"].as_str().unwrap())
        .await
        .into_iter()
        .map(|(step, _)| step)
        .collect();
    let download_steps: Vec<String> = sandbox
        .audit_steps(&token, download["correlation_id"].as_str().unwrap())
        .await
        .into_iter()
        .map(|(step, _)| step)
        .collect();

    for step in [
        "authorize-upload",
        "authorize-upload-use",
        "part-urls",
        "store-access",
        "complete",
    ] {
        assert!(
            upload_steps.iter().any(|seen| seen == step),
            "{step} missing from {upload_steps:?}"
        );
    }
    assert_eq!(upload_steps[0], "authorize-upload");
    assert_eq!(
        download_steps,
        vec!["authorize-download", "download-url", "store-access"]
    );

    // The NDJSON file holds the same events, and no signed query string.
    let file = std::fs::read_to_string(sandbox.data_dir.path().join("audit.ndjson")).unwrap();
    assert!(file.lines().count() >= upload_steps.len() + download_steps.len());
    assert!(!file.contains("X-Amz-Signature"));
    assert!(!file.contains(&token));

    // Another user sees nothing of this transfer.
    let other = sandbox.login(STAFF, STAFF_SCOPE).await;
    let steps = sandbox
        .audit_steps(&other, grant["correlation_id"].as_str().unwrap())
        .await;
    assert!(steps.is_empty());
}

#[tokio::test]
async fn bad_input_names_the_field_and_stores_nothing() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let valid = json!({ "file_name": "a.zip", "size": 100, "media_type": "application/zip",
                        "patient": "pat-001", "part_size": 5242880 });
    let with = |field: &str, value: serde_json::Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };

    let cases = [
        (
            "negative size",
            with("size", json!(-1)),
            StatusCode::BAD_REQUEST,
            "size",
        ),
        (
            "absurd size",
            with("size", json!(10u64 << 40)),
            StatusCode::BAD_REQUEST,
            "size",
        ),
        (
            "size past u64",
            with("size", json!(1e30)),
            StatusCode::BAD_REQUEST,
            "size",
        ),
        (
            "path in name",
            with("file_name", json!("../../etc/passwd")),
            StatusCode::BAD_REQUEST,
            "file_name",
        ),
        (
            "unknown field",
            with("sizee", json!(2)),
            StatusCode::BAD_REQUEST,
            "sizee",
        ),
        (
            "string size",
            with("size", json!("100")),
            StatusCode::BAD_REQUEST,
            "size",
        ),
        (
            "bad patient",
            with("patient", json!("pat/../1")),
            StatusCode::BAD_REQUEST,
            "patient",
        ),
        (
            "bad media type",
            with("media_type", json!("zip")),
            StatusCode::BAD_REQUEST,
            "media_type",
        ),
        (
            "media type not allowed",
            with("media_type", json!("application/x-msdownload")),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "media_type",
        ),
        (
            "huge part size",
            with("part_size", json!(6u64 << 30)),
            StatusCode::BAD_REQUEST,
            "part_size",
        ),
    ];
    for (case, body, expected, field) in cases {
        let (status, error) = sandbox.post(&token, "/uploads", &body).await;
        assert_eq!(status, expected, "{case}: {error}");
        assert_eq!(error["field"], field, "{case}: {error}");
        assert_eq!(
            error["error"],
            if expected == StatusCode::BAD_REQUEST {
                "invalid_request"
            } else {
                "unsupported_media_type"
            }
        );
    }

    let (status, error) = sandbox
        .post_raw(&token, "/uploads", b"{\"file_name\": ".to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"], "invalid_request");
    let response = sandbox
        .http
        .post(sandbox.api("/uploads"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(valid.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, error) = sandbox
        .post_raw(&token, "/uploads", vec![b' '; 2 * MIB])
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(error["error"], "too_large");

    // Part numbers out of range and malformed hashes.
    let (_, grant) = sandbox.post(&token, "/uploads", &valid).await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    let path = format!("/uploads/{upload_id}/part-urls");
    let good_hash = sha256_hex(b"x");
    let part_cases = [
        (
            json!({ "parts": [{ "part_number": 0, "sha256": good_hash }] }),
            "parts[0].part_number",
        ),
        (
            json!({ "parts": [{ "part_number": 1, "sha256": good_hash }, { "part_number": 2, "sha256": good_hash }] }),
            "parts[1].part_number",
        ),
        (
            json!({ "parts": [{ "part_number": 4294967296u64, "sha256": good_hash }] }),
            "parts[0].part_number",
        ),
        (
            json!({ "parts": [{ "part_number": 1, "sha256": "ABC" }] }),
            "parts[0].sha256",
        ),
        (json!({ "parts": [] }), "parts"),
    ];
    for (body, field) in part_cases {
        let (status, error) = sandbox.post(&token, &path, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["field"], field, "{body}: {error}");
    }
    let (status, error) = sandbox
        .post(&token, "/downloads", &json!({ "document_id": "../doc" }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["field"], "document_id");

    let uploads: i64 = sandbox
        .handle
        .state
        .db
        .lock()
        .query_row("SELECT count(*) FROM grant_uploads", [], |row| row.get(0))
        .unwrap();
    assert_eq!(uploads, 1, "only the one valid request stored an upload");
}

#[tokio::test]
async fn upload_grant_for_unknown_patient_is_rejected() {
    let sandbox = GrantSandbox::start("").await;
    let staff = sandbox.login(STAFF, STAFF_SCOPE).await;

    let (status, error) = sandbox.grant(&staff, "pat-999", 100, 5 * MIB).await;

    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert_eq!(error["error"], "not_found");
    assert_eq!(error["field"], "patient");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("Patient/pat-999 does not exist"),
        "{message}"
    );

    let (status, error) = sandbox.grant(&staff, "pat-001", 100, 5 * MIB).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a known patient still gets a grant: {error}"
    );
}
