//! The sandbox FHIR server over real HTTP, with tokens from the sandbox's own
//! SMART flow.

mod common;

use common::{CLINICIAN_SCOPE, STAFF_SCOPE, Sandbox, str_field};
use ferry_gateway::fhir::documents::{self, NewDocument, SHA256_EXTENSION, SIZE64_EXTENSION};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn clinician_token(sandbox: &Sandbox) -> String {
    let tokens = sandbox.login("dr-rivera:pat-001", CLINICIAN_SCOPE).await;
    str_field(&tokens, "access_token").to_owned()
}

async fn staff_token(sandbox: &Sandbox) -> String {
    let tokens = sandbox.login("tech-okafor", STAFF_SCOPE).await;
    str_field(&tokens, "access_token").to_owned()
}

fn document(patient: &str, size: u64) -> Value {
    json!({
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": { "reference": format!("Patient/{patient}") },
        "description": "CT abdomen",
        "content": [{
            "attachment": {
                "contentType": "application/dicom",
                "url": "https://gateway.example/objects/abc",
                "title": "study.zip",
                "extension": [
                    { "url": SIZE64_EXTENSION, "valueString": size.to_string() },
                    { "url": SHA256_EXTENSION, "valueBase64Binary": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" },
                ],
            },
        }],
    })
}

async fn post_document(sandbox: &Sandbox, token: &str, body: &Value) -> (StatusCode, Value) {
    let response = sandbox
        .client
        .post(sandbox.fhir("/DocumentReference"))
        .bearer_auth(token)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn document_count(sandbox: &Sandbox, token: &str) -> u64 {
    let (status, bundle) = sandbox.get_fhir("/DocumentReference", token).await;
    assert_eq!(status, StatusCode::OK, "{bundle}");
    bundle["total"].as_u64().unwrap()
}

fn diagnostics(outcome: &Value) -> &str {
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
    outcome["issue"][0]["diagnostics"].as_str().unwrap()
}

#[tokio::test]
async fn metadata_names_smart_endpoints() {
    let sandbox = Sandbox::start().await;

    let response = sandbox.client.get(sandbox.fhir("/metadata")).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/fhir+json");
    let statement: Value = response.json().await.unwrap();
    assert_eq!(statement["fhirVersion"], "4.0.1");
    let uris = &statement["rest"][0]["security"]["extension"][0]["extension"];
    assert_eq!(uris[0]["valueUri"], sandbox.url("/authorize"));
}

#[tokio::test]
async fn request_without_token_gets_bearer_challenge() {
    let sandbox = Sandbox::start().await;

    let missing = sandbox.client.get(sandbox.fhir("/Patient/pat-001")).send().await.unwrap();
    let garbage = sandbox.client.get(sandbox.fhir("/Patient/pat-001")).bearer_auth("abc.def.ghi").send().await.unwrap();

    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert!(missing.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);
    let challenge = garbage.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
}

#[tokio::test]
async fn patient_context_token_cannot_read_other_patient() {
    let sandbox = Sandbox::start().await;
    let token = clinician_token(&sandbox).await;

    let (own, patient) = sandbox.get_fhir("/Patient/pat-001", &token).await;
    let (other, outcome) = sandbox.get_fhir("/Patient/pat-002", &token).await;

    assert_eq!(own, StatusCode::OK);
    assert_eq!(patient["name"][0]["family"], "Nwosu");
    assert_eq!(other, StatusCode::FORBIDDEN);
    assert!(diagnostics(&outcome).contains("Patient/pat-002"), "{outcome}");
}

#[tokio::test]
async fn patient_context_search_returns_only_its_patient() {
    let sandbox = Sandbox::start().await;
    let token = clinician_token(&sandbox).await;

    let (status, bundle) = sandbox.get_fhir("/Patient", &token).await;
    let (documents_status, outcome) = sandbox.get_fhir("/DocumentReference?patient=pat-003", &token).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 1);
    assert_eq!(bundle["entry"][0]["resource"]["id"], "pat-001");
    assert_eq!(documents_status, StatusCode::FORBIDDEN, "{outcome}");
}

#[tokio::test]
async fn user_token_searches_patients_by_name_identifier_birthdate() {
    let sandbox = Sandbox::start().await;
    let token = staff_token(&sandbox).await;

    let (_, all) = sandbox.get_fhir("/Patient", &token).await;
    let (_, by_name) = sandbox.get_fhir("/Patient?name=lars", &token).await;
    let (_, by_identifier) = sandbox
        .get_fhir("/Patient?identifier=https://ferry.example/sandbox/mrn|MRN-100003", &token)
        .await;
    let (_, by_birthdate) = sandbox.get_fhir("/Patient?birthdate=1984-03-12", &token).await;
    let (bad_status, bad) = sandbox.get_fhir("/Patient?birthdate=ge1980", &token).await;
    let (unknown_status, unknown) = sandbox.get_fhir("/Patient?address=Oslo", &token).await;

    assert_eq!(all["total"], 4);
    assert_eq!(by_name["total"], 1);
    assert_eq!(by_name["entry"][0]["resource"]["id"], "pat-002");
    assert_eq!(by_identifier["entry"][0]["resource"]["id"], "pat-003");
    assert_eq!(by_birthdate["entry"][0]["resource"]["id"], "pat-001");
    assert_eq!(bad_status, StatusCode::BAD_REQUEST);
    assert!(diagnostics(&bad).contains("birthdate"));
    assert_eq!(unknown_status, StatusCode::BAD_REQUEST);
    assert!(diagnostics(&unknown).contains("'address'"));
}

#[tokio::test]
async fn practitioner_is_readable_as_own_fhir_user() {
    let sandbox = Sandbox::start().await;
    let token = clinician_token(&sandbox).await;

    let (own, practitioner) = sandbox.get_fhir("/Practitioner/dr-rivera", &token).await;
    let (other, _) = sandbox.get_fhir("/Practitioner/tech-okafor", &token).await;

    assert_eq!(own, StatusCode::OK);
    assert_eq!(practitioner["name"][0]["family"], "Rivera");
    assert_eq!(other, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn document_create_stores_64_bit_size_and_sha256() {
    let sandbox = Sandbox::start().await;
    let token = staff_token(&sandbox).await;
    let five_gib = 5 * 1024 * 1024 * 1024_u64;

    let (status, created) = post_document(&sandbox, &token, &document("pat-002", five_gib)).await;
    let (small_status, small) = post_document(&sandbox, &token, &document("pat-002", 1000)).await;

    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = str_field(&created, "id");
    let attachment = &created["content"][0]["attachment"];
    assert!(attachment.get("size").is_none(), "5 GiB does not fit unsignedInt: {attachment}");
    assert_eq!(attachment["extension"][0]["valueString"], five_gib.to_string());
    assert_eq!(small_status, StatusCode::CREATED);
    assert_eq!(small["content"][0]["attachment"]["size"], 1000);

    let (read_status, read) = sandbox.get_fhir(&format!("/DocumentReference/{id}"), &token).await;
    assert_eq!(read_status, StatusCode::OK);
    assert_eq!(read, created);
    let (_, bundle) = sandbox.get_fhir("/DocumentReference?patient=pat-002", &token).await;
    assert_eq!(bundle["total"], 2);
    let (_, other_patient) = sandbox.get_fhir("/DocumentReference?subject=Patient/pat-001", &token).await;
    assert_eq!(other_patient["total"], 0);
}

#[tokio::test]
async fn patient_context_cannot_create_or_read_other_patients_documents() {
    let sandbox = Sandbox::start().await;
    let staff = staff_token(&sandbox).await;
    let clinician = clinician_token(&sandbox).await;
    let (_, foreign) = post_document(&sandbox, &staff, &document("pat-002", 10)).await;

    let (create_status, outcome) = post_document(&sandbox, &clinician, &document("pat-002", 10)).await;
    let (read_status, _) = sandbox
        .get_fhir(&format!("/DocumentReference/{}", str_field(&foreign, "id")), &clinician)
        .await;
    let (own_status, _) = post_document(&sandbox, &clinician, &document("pat-001", 10)).await;

    assert_eq!(create_status, StatusCode::FORBIDDEN, "{outcome}");
    assert_eq!(read_status, StatusCode::FORBIDDEN);
    assert_eq!(own_status, StatusCode::CREATED);
    assert_eq!(document_count(&sandbox, &clinician).await, 1);
    assert_eq!(document_count(&sandbox, &staff).await, 2);
}

#[tokio::test]
async fn bad_document_input_is_rejected_and_nothing_stored() {
    let sandbox = Sandbox::start().await;
    let token = staff_token(&sandbox).await;

    let mut unknown_field = document("pat-001", 10);
    unknown_field["custodian"] = json!({ "reference": "Organization/x" });
    let mut bad_size = document("pat-001", 10);
    bad_size["content"][0]["attachment"]["extension"][0]["valueString"] = json!("12 GB");
    let mut bad_hash = document("pat-001", 10);
    bad_hash["content"][0]["attachment"]["extension"][1]["valueBase64Binary"] = json!("AAAA");
    let mut unknown_patient = document("pat-404", 10);
    unknown_patient["status"] = json!("current");
    let mut mismatched = document("pat-001", 10);
    mismatched["content"][0]["attachment"]["size"] = json!(11);
    let cases = [
        (unknown_field, "custodian"),
        (bad_size, "12 GB"),
        (bad_hash, "SHA-256"),
        (unknown_patient, "pat-404"),
        (mismatched, "differs"),
    ];

    for (body, expected) in cases {
        let (status, outcome) = post_document(&sandbox, &token, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{outcome}");
        assert!(diagnostics(&outcome).contains(expected), "expected '{expected}' in {outcome}");
    }

    let malformed = sandbox
        .client
        .post(sandbox.fhir("/DocumentReference"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body("{\"resourceType\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let huge = sandbox
        .client
        .post(sandbox.fhir("/DocumentReference"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let outcome: Value = huge.json().await.unwrap();
    assert!(diagnostics(&outcome).contains("larger than"));
    let wrong_type = sandbox
        .client
        .post(sandbox.fhir("/DocumentReference"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(document("pat-001", 10).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_eq!(document_count(&sandbox, &token).await, 0);
}

#[tokio::test]
async fn rust_api_registers_document_visible_over_fhir() {
    let sandbox = Sandbox::start().await;
    let token = staff_token(&sandbox).await;

    let id = documents::create(
        &sandbox.handle.state.db,
        NewDocument {
            patient_id: "pat-003".into(),
            author: Some("tech-okafor".into()),
            title: "MR knee".into(),
            description: None,
            content_type: "application/zip".into(),
            url: "https://gateway.example/objects/mr-knee".into(),
            size: 1 << 33,
            sha256: [7; 32],
        },
    )
    .unwrap();
    let unknown = documents::create(
        &sandbox.handle.state.db,
        NewDocument {
            patient_id: "pat-999".into(),
            author: None,
            title: "x".into(),
            description: None,
            content_type: "application/zip".into(),
            url: "https://gateway.example/objects/x".into(),
            size: 1,
            sha256: [0; 32],
        },
    );

    let (status, resource) = sandbox.get_fhir(&format!("/DocumentReference/{id}"), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resource["subject"]["reference"], "Patient/pat-003");
    assert_eq!(resource["author"][0]["reference"], "Practitioner/tech-okafor");
    assert_eq!(resource["content"][0]["attachment"]["extension"][0]["valueString"], "8589934592");
    assert!(matches!(unknown, Err(documents::DocumentError::UnknownPatient(_))));
}
