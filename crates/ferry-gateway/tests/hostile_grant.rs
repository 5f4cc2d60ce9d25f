//! Hostile input to the grant API and the FHIR server: each case gets a 4xx
//! that names the problem, and nothing is stored.

mod grant_support;

use grant_support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Rows of the tables that record uploads and documents.
fn stored_rows(sandbox: &GrantSandbox) -> i64 {
    let connection = sandbox.handle.state.db.lock();
    let mut total = 0;
    for table in ["grant_uploads", "document_references"] {
        total += connection
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get::<_, i64>(0)
            })
            .unwrap();
    }
    total
}

fn upload_request() -> Value {
    json!({
        "file_name": "ct-study.zip",
        "size": 11 * MIB,
        "media_type": "application/zip",
        "patient": "pat-001",
        "part_size": 5 * MIB,
    })
}

fn with_field(field: &str, value: Value) -> Value {
    let mut request = upload_request();
    request[field] = value;
    request
}

#[tokio::test]
async fn hostile_upload_requests_are_rejected() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let cases: Vec<(Value, &str)> = vec![
        (with_field("size", json!(-1)), "size"),
        (with_field("size", json!(1.5)), "size"),
        (with_field("size", json!("1024")), "size"),
        (with_field("size", json!(18446744073709551616_f64)), "size"),
        (with_field("size", json!(u64::MAX)), "size"),
        (with_field("part_size", json!(-5)), "part_size"),
        (with_field("part_size", json!(u64::MAX)), "part_size"),
        (
            with_field("file_name", json!("../../etc/passwd")),
            "file_name",
        ),
        (with_field("file_name", json!("..")), "file_name"),
        (
            with_field("file_name", json!("C:\\Windows\\evil.dll")),
            "file_name",
        ),
        (with_field("file_name", json!("/absolute.zip")), "file_name"),
        (
            with_field("file_name", json!("nul\u{0}byte.zip")),
            "file_name",
        ),
        (with_field("file_name", json!("")), "file_name"),
        (with_field("file_name", json!("a".repeat(256))), "file_name"),
        (with_field("media_type", json!("text")), "media_type"),
        (
            with_field("media_type", json!("a/b\r\nX-Injected: 1")),
            "media_type",
        ),
        (with_field("patient", json!("../pat-002")), "patient"),
        (
            with_field("patient", json!("pat-001' OR '1'='1")),
            "patient",
        ),
        (with_field("patient", json!(null)), "patient"),
        (with_field("unknown_field", json!(1)), "unknown_field"),
        (
            with_field(
                "study",
                json!({"study_instance_uid": "1.2.x", "series": []}),
            ),
            "study_instance_uid",
        ),
    ];

    for (request, field) in cases {
        let before = stored_rows(&sandbox);
        let (status, body) = sandbox.post(&token, "/uploads", &request).await;

        assert!(status.is_client_error(), "{request}: {status} {body}");
        let named = body["field"].as_str().unwrap_or_default().to_owned()
            + " "
            + body["message"].as_str().unwrap_or_default();
        assert!(
            named.contains(field),
            "{request}: {body} does not name {field}"
        );
        assert_eq!(stored_rows(&sandbox), before, "{request} stored an upload");
    }
}

#[tokio::test]
async fn malformed_bodies_are_rejected() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let valid = upload_request().to_string().into_bytes();
    let mut trailing = valid.clone();
    trailing.extend_from_slice(b" {}");
    let mut huge = br#"{"file_name":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 2 * MIB));
    huge.extend_from_slice(br#""}"#);
    let deep = "[".repeat(100_000);
    let cases: Vec<(Vec<u8>, StatusCode)> = vec![
        (b"".to_vec(), StatusCode::BAD_REQUEST),
        (b"null".to_vec(), StatusCode::BAD_REQUEST),
        (b"[]".to_vec(), StatusCode::BAD_REQUEST),
        (b"{".to_vec(), StatusCode::BAD_REQUEST),
        (vec![0xff, 0xfe, 0x00], StatusCode::BAD_REQUEST),
        (trailing, StatusCode::BAD_REQUEST),
        (deep.into_bytes(), StatusCode::BAD_REQUEST),
        (huge, StatusCode::PAYLOAD_TOO_LARGE),
    ];

    for (body, expected) in cases {
        let before = stored_rows(&sandbox);
        let (status, answer) = sandbox.post_raw(&token, "/uploads", body).await;

        assert_eq!(status, expected, "{answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|text| !text.is_empty()),
            "{answer}"
        );
        assert_eq!(stored_rows(&sandbox), before);
    }
}

#[tokio::test]
async fn non_json_media_types_are_rejected() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;

    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let before = stored_rows(&sandbox);
        let response = sandbox
            .http
            .post(sandbox.api("/uploads"))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(upload_request().to_string())
            .send()
            .await
            .unwrap();

        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
        assert_eq!(
            stored_rows(&sandbox),
            before,
            "{content_type} stored an upload"
        );
    }
}

#[tokio::test]
async fn hostile_part_url_requests_are_rejected() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let (status, grant) = sandbox.post(&token, "/uploads", &upload_request()).await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    let upload_id = grant["upload_id"].as_str().unwrap();
    let sha256 = "0".repeat(64);
    let part = |number: Value| json!({ "parts": [{ "part_number": number, "sha256": sha256 }] });
    let many: Vec<Value> = (1..=101)
        .map(|number| json!({ "part_number": number, "sha256": sha256 }))
        .collect();
    let cases: Vec<(String, Value, &str)> = vec![
        (upload_id.to_owned(), part(json!(0)), "part_number"),
        (upload_id.to_owned(), part(json!(10_001)), "part_number"),
        (upload_id.to_owned(), part(json!(4)), "part_number"),
        (upload_id.to_owned(), part(json!(-1)), "part_number"),
        (
            upload_id.to_owned(),
            part(json!(4294967296_u64)),
            "part_number",
        ),
        (
            upload_id.to_owned(),
            json!({ "parts": [{ "part_number": 1, "sha256": "ABC" }] }),
            "sha256",
        ),
        (upload_id.to_owned(), json!({ "parts": [] }), "parts"),
        (upload_id.to_owned(), json!({ "parts": many }), "parts"),
        (
            upload_id.to_owned(),
            json!({ "parts": [{ "part_number": 1, "sha256": sha256 }], "x": 1 }),
            "x",
        ),
        (
            "upl_doesnotexist".to_owned(),
            part(json!(1)),
            "upl_doesnotexist",
        ),
        ("..%2F..%2Fkeys".to_owned(), part(json!(1)), ""),
    ];

    for (id, request, field) in cases {
        let (status, body) = sandbox
            .post(&token, &format!("/uploads/{id}/part-urls"), &request)
            .await;

        assert!(status.is_client_error(), "{id} {request}: {status} {body}");
        assert!(body["url"].is_null() && body["urls"].is_null(), "{body}");
        let named = format!(
            "{} {}",
            body["field"].as_str().unwrap_or_default(),
            body["message"]
        );
        assert!(
            named.contains(field),
            "{request}: {body} does not name {field}"
        );
    }
}

#[tokio::test]
async fn other_patients_uploads_and_documents_stay_hidden() {
    let sandbox = GrantSandbox::start("").await;
    let staff = sandbox.login(STAFF, STAFF_SCOPE).await;
    let clinician = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let data = content(6 * MIB, 3);
    let (grant, completed) = sandbox.upload(&staff, "pat-002", &data, 5 * MIB).await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    let document_id = completed["document_id"].as_str().unwrap();

    let (upload_status, upload_body) = sandbox
        .get(&clinician, &format!("/uploads/{upload_id}"))
        .await;
    let (download_status, download_body) = sandbox
        .post(
            &clinician,
            "/downloads",
            &json!({ "document_id": document_id }),
        )
        .await;
    let (create_status, _) = sandbox
        .post(
            &clinician,
            "/uploads",
            &with_field("patient", json!("pat-002")),
        )
        .await;
    let fhir = sandbox
        .http
        .get(format!(
            "{}/DocumentReference?patient=pat-002",
            sandbox.handle.urls.fhir
        ))
        .bearer_auth(&clinician)
        .send()
        .await
        .unwrap();

    assert!(upload_status.is_client_error(), "{upload_body}");
    assert!(upload_body["parts"].is_null(), "{upload_body}");
    assert!(download_status.is_client_error(), "{download_body}");
    assert!(download_body["url"].is_null(), "{download_body}");
    assert_eq!(create_status, StatusCode::FORBIDDEN);
    assert_eq!(fhir.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn hostile_fhir_searches_are_rejected() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(STAFF, STAFF_SCOPE).await;
    let fhir = &sandbox.handle.urls.fhir;
    let cases = [
        ("/Patient?_count=99999999999999999999", "_count"),
        ("/Patient?_count=-1", "_count"),
        ("/Patient?name=a&name=b", "name"),
        ("/Patient?name:exact=Nwosu", "name:exact"),
        ("/Patient?birthdate=gt2000-01-01", "birthdate"),
        ("/Patient?birthdate=2000-13-45", "birthdate"),
        ("/Patient?_id=pat-001'%20OR%20'1'='1&_include=*", "_include"),
        ("/DocumentReference?subject=Practitioner/dr-chen", "subject"),
        (
            "/DocumentReference?patient=pat-001&subject=Patient/pat-001",
            "either",
        ),
        ("/DocumentReference?_sort=-date", "_sort"),
    ];

    for (path, named) in cases {
        let response = sandbox
            .http
            .get(format!("{fhir}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();

        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert!(
            body["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains(named),
            "{path}: {body}"
        );
    }

    for path in [
        "/Patient/..%2FPractitioner%2Fdr-chen",
        "/Patient/pat-001%00",
        "/DocumentReference/%2e%2e",
    ] {
        let response = sandbox
            .http
            .get(format!("{fhir}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn conflicting_fhir_size_extensions_are_rejected() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(STAFF, STAFF_SCOPE).await;
    let size64 = "https://ferry.example/fhir/StructureDefinition/attachment-size64";
    let document = json!({
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": { "reference": "Patient/pat-001" },
        "content": [{ "attachment": {
            "contentType": "application/zip",
            "url": "urn:ferry:test",
            "extension": [
                { "url": size64, "valueString": "100" },
                { "url": size64, "valueString": "99999999999" },
            ],
        }}],
    });
    let before = stored_rows(&sandbox);

    let response = sandbox
        .http
        .post(format!("{}/DocumentReference", sandbox.handle.urls.fhir))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(document.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();

    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("more than once"),
        "{body}"
    );
    assert_eq!(stored_rows(&sandbox), before);
}
