//! `ferry_core::fhir` against the FHIR server of Ferry's sandbox gateway,
//! started in this process on 127.0.0.1 with `--auto-login`, so sign-in
//! completes without a sign-in page.

use std::sync::Arc;
use std::time::Duration;

use ferry_core::fhir::{self, DocumentSummary, FhirError, PatientSummary};
use ferry_core::http::{HttpOptions, build_client};
use ferry_core::login::{
    LoginOptions, ProfileContext, RedirectFollower, Session, SignInKind, login,
};
use ferry_core::profile::{FerryDirs, Profile};
use ferry_core::secrets::MemorySecretStore;
use ferry_gateway::{AutoLogin, SandboxConfig, SandboxHandle, start_sandbox};
use serde_json::json;

struct Fixture {
    _sandbox: SandboxHandle,
    session: Session,
    _folder: tempfile::TempDir,
}

/// Starts a sandbox and signs in as `auto_login` (`user` or `user:patient`).
async fn signed_in(auto_login: &str, kind: SignInKind) -> Fixture {
    let folder = tempfile::tempdir().unwrap();
    let sandbox = start_sandbox(SandboxConfig {
        data_dir: folder.path().join("sandbox"),
        listen: "127.0.0.1:0".parse().unwrap(),
        auto_login: Some(auto_login.parse::<AutoLogin>().unwrap()),
    })
    .await
    .unwrap();
    let context = ProfileContext {
        profile: Profile::new("fhir-test", &sandbox.urls.fhir, None).unwrap(),
        dirs: FerryDirs::under(&folder.path().join("ferry")),
        store: Arc::new(MemorySecretStore::default()),
        http: build_client(&HttpOptions::default()).unwrap(),
    };
    let options = LoginOptions {
        kind,
        browser: Arc::new(RedirectFollower::new()),
        paste: None,
        timeout: Duration::from_secs(60),
        prompt: Arc::new(|_| {}),
    };
    let session = login(&context, options).await.unwrap();
    Fixture {
        _sandbox: sandbox,
        session,
        _folder: folder,
    }
}

/// Registers a `DocumentReference` for `patient` the way the sandbox does
/// after an upload, with the 64-bit size and SHA-256 extensions.
async fn create_document(session: &Session, patient: &str, size: u64) -> String {
    let url = format!(
        "{}/DocumentReference",
        session.context().profile.fhir_base_url
    );
    let token = session.access_token().await.unwrap();
    let resource = json!({
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": { "reference": format!("Patient/{patient}") },
        "content": [{ "attachment": {
            "contentType": "application/zip",
            "url": "s3://sandbox/ct.zip",
            "title": "ct.zip",
            "extension": [
                { "url": "https://ferry.example/fhir/StructureDefinition/attachment-size64", "valueString": size.to_string() },
                { "url": "https://ferry.example/fhir/StructureDefinition/attachment-sha256", "valueBase64Binary": "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=" }
            ]
        }}]
    });
    let response = session
        .http()
        .post(url)
        .bearer_auth(token.expose())
        .header("content-type", "application/fhir+json")
        .body(resource.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        status.is_success(),
        "creating a DocumentReference returned {status}: {body}"
    );
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn patient_search_by_name_finds_seeded_patient() {
    let fixture = signed_in("tech-okafor", SignInKind::ImagingStaff).await;

    let resources = fhir::search(&fixture.session, "Patient", &[("name", "Nwosu")])
        .await
        .unwrap();

    let summaries: Vec<PatientSummary> = resources
        .iter()
        .map(PatientSummary::from_resource)
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert_eq!(summaries[0].id, "pat-001");
    assert_eq!(summaries[0].name, "Amara Nwosu");
    assert_eq!(summaries[0].identifier.as_deref(), Some("MRN-100001"));
}

#[tokio::test]
async fn patient_read_returns_resource() {
    let fixture = signed_in("tech-okafor", SignInKind::ImagingStaff).await;

    let resource = fhir::read(&fixture.session, "Patient", "pat-002")
        .await
        .unwrap();

    assert_eq!(resource["resourceType"], "Patient");
    assert_eq!(
        PatientSummary::from_resource(&resource).name,
        "Henrik Larsen"
    );
}

#[tokio::test]
async fn unknown_patient_is_not_found() {
    let fixture = signed_in("tech-okafor", SignInKind::ImagingStaff).await;

    let error = fhir::read(&fixture.session, "Patient", "pat-404")
        .await
        .unwrap_err();

    assert!(error.is_not_found(), "{error:?}");
    assert!(!error.is_sign_in_required());
    let message = error.to_string();
    assert!(message.contains("404"), "{message}");
    assert!(message.contains("/fhir/Patient/pat-404"), "{message}");
    assert!(
        message.contains("Patient/pat-404 does not exist"),
        "{message}"
    );
}

#[tokio::test]
async fn unknown_document_is_not_found() {
    let fixture = signed_in("tech-okafor", SignInKind::ImagingStaff).await;

    let error = fhir::read(&fixture.session, "DocumentReference", "no-such-document")
        .await
        .unwrap_err();

    assert!(matches!(error, FhirError::Status { .. }), "{error:?}");
    assert!(error.is_not_found(), "{error:?}");
}

#[tokio::test]
async fn document_search_reads_size_above_4_gib() {
    let fixture = signed_in("tech-okafor", SignInKind::ImagingStaff).await;
    let size = 5_368_709_127;
    let id = create_document(&fixture.session, "pat-003", size).await;

    let resources = fhir::search(
        &fixture.session,
        "DocumentReference",
        &[("patient", "pat-003")],
    )
    .await
    .unwrap();

    let documents: Vec<DocumentSummary> = resources
        .iter()
        .map(DocumentSummary::from_resource)
        .collect();
    assert_eq!(documents.len(), 1, "{documents:?}");
    assert_eq!(documents[0].id, id);
    assert_eq!(documents[0].file_name, "ct.zip");
    assert_eq!(documents[0].size, Some(size));
    assert_eq!(documents[0].sha256, Some(hex::encode([7u8; 32])));
    assert_eq!(documents[0].patient.as_deref(), Some("Patient/pat-003"));
}

#[tokio::test]
async fn clinician_search_outside_context_is_forbidden() {
    let fixture = signed_in("dr-rivera:pat-001", SignInKind::Clinician).await;
    let own = create_document(&fixture.session, "pat-001", 10).await;

    let resources = fhir::search(
        &fixture.session,
        "DocumentReference",
        &[("patient", "pat-001")],
    )
    .await
    .unwrap();
    let other = fhir::search(
        &fixture.session,
        "DocumentReference",
        &[("patient", "pat-002")],
    )
    .await
    .unwrap_err();

    let ids: Vec<&str> = resources
        .iter()
        .filter_map(|resource| resource["id"].as_str())
        .collect();
    assert_eq!(ids, vec![own.as_str()]);
    assert!(other.is_forbidden(), "{other:?}");
    assert!(
        other
            .to_string()
            .contains("outside this token's patient context"),
        "{other}"
    );
}
