//! An upload that carries a study registers a FHIR `ImagingStudy` in the
//! sandbox, linked both ways with the archive's `DocumentReference` and
//! served by read and search by patient.

mod grant_support;

use grant_support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn get_fhir(sandbox: &GrantSandbox, token: &str, path: &str) -> (StatusCode, Value) {
    let response = sandbox
        .http
        .get(format!("{}{path}", sandbox.handle.urls.fhir))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn completed_study_upload_registers_imaging_study() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(STAFF, STAFF_SCOPE).await;
    let data = content(3000, 5);
    let request = json!({
        "file_name": "ct.zip", "size": data.len(), "media_type": "application/zip",
        "patient": "pat-004", "part_size": 5 * MIB,
        "study": { "study_instance_uid": "1.2.826.0.1.3680043.8.498.1", "description": "CT chest",
                   "series": [{ "series_instance_uid": "1.2.826.0.1.3680043.8.498.1.1", "modality": "CT",
                                "instance_count": 120 },
                              { "series_instance_uid": "1.2.826.0.1.3680043.8.498.1.2", "modality": "SR",
                                "instance_count": 1 }] },
    });
    let (status, grant) = sandbox.post(&token, "/uploads", &request).await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    let upload_id = grant["upload_id"].as_str().unwrap();
    let completion = sandbox.upload_parts(&token, upload_id, &data, 5 * MIB).await;
    let (status, completed) = sandbox
        .post(&token, &format!("/uploads/{upload_id}/complete"), &completion)
        .await;
    assert_eq!(status, StatusCode::OK, "{completed}");
    let document_id = completed["document_id"].as_str().unwrap();

    let (status, found) = get_fhir(&sandbox, &token, "/ImagingStudy?patient=pat-004").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["total"], 1, "{found}");
    let study = &found["entry"][0]["resource"];
    let study_id = study["id"].as_str().unwrap();
    assert_eq!(study["resourceType"], "ImagingStudy");
    assert_eq!(study["subject"]["reference"], "Patient/pat-004");
    assert_eq!(study["identifier"][0]["value"], "urn:oid:1.2.826.0.1.3680043.8.498.1");
    assert_eq!(study["numberOfSeries"], 2);
    assert_eq!(study["numberOfInstances"], 121);
    assert_eq!(study["series"][1]["uid"], "1.2.826.0.1.3680043.8.498.1.2");
    assert_eq!(study["series"][1]["modality"]["code"], "SR");
    assert_eq!(
        study["extension"][0]["valueReference"]["reference"],
        format!("DocumentReference/{document_id}")
    );

    let (status, read) = get_fhir(&sandbox, &token, &format!("/ImagingStudy/{study_id}")).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(&read, study);
    let (_, document) = get_fhir(&sandbox, &token, &format!("/DocumentReference/{document_id}")).await;
    assert_eq!(
        document["context"]["related"][0]["reference"],
        format!("ImagingStudy/{study_id}")
    );
    let (_, other) = get_fhir(&sandbox, &token, "/ImagingStudy?patient=pat-001").await;
    assert_eq!(other["total"], 0, "{other}");
}

#[tokio::test]
async fn imaging_study_of_other_patient_is_forbidden() {
    let sandbox = GrantSandbox::start("").await;
    let staff = sandbox.login(STAFF, STAFF_SCOPE).await;
    let data = content(2000, 9);
    let request = json!({
        "file_name": "mr.zip", "size": data.len(), "media_type": "application/zip",
        "patient": "pat-002", "part_size": 5 * MIB,
        "study": { "study_instance_uid": "1.2.3", "series": [{ "series_instance_uid": "1.2.3.1",
                   "modality": "MR", "instance_count": 3 }] },
    });
    let (_, grant) = sandbox.post(&staff, "/uploads", &request).await;
    let upload_id = grant["upload_id"].as_str().unwrap();
    let completion = sandbox.upload_parts(&staff, upload_id, &data, 5 * MIB).await;
    let (status, completed) = sandbox
        .post(&staff, &format!("/uploads/{upload_id}/complete"), &completion)
        .await;
    assert_eq!(status, StatusCode::OK, "{completed}");
    let study_id = format!("ims-{}", completed["document_id"].as_str().unwrap());

    let clinician = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;
    let (status, outcome) = get_fhir(&sandbox, &clinician, &format!("/ImagingStudy/{study_id}")).await;

    assert_eq!(status, StatusCode::FORBIDDEN, "{outcome}");
}
