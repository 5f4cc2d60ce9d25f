//! FHIR resources created on completion: the `DocumentReference` of the
//! uploaded file and, when the upload named an imaging study, an
//! `ImagingStudy` contained in it.

use ferry_api::StudySummary;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::db::{Db, DbError};
use crate::repository::UploadRecord;

/// Extension URL of the object's size in bytes. FHIR R4 `Attachment.size`
/// is an `unsignedInt` (at most 2^31 - 1), too small for imaging archives.
pub const SIZE_EXTENSION: &str = "urn:ferry:fhir:object-size";
/// Extension URL of the object's SHA-256 (hex). R4 `Attachment.hash` is SHA-1.
pub const SHA256_EXTENSION: &str = "urn:ferry:fhir:object-sha256";

/// Errors storing a FHIR resource.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("failed to store DocumentReference/{id}: {message}")]
    Rejected { id: String, message: String },
}

/// A completed, verified upload to register.
#[derive(Debug, Clone, Copy)]
pub struct CompletedDocument<'a> {
    pub upload: &'a UploadRecord,
    /// Whole-file SHA-256, hex.
    pub sha256: &'a str,
    /// Location of the object, `s3://bucket/key`.
    pub object_url: &'a str,
    /// The uploader's `fhirUser` claim; empty when the token had none.
    pub author: &'a str,
    pub completed_at: Timestamp,
}

/// Where completed uploads are registered as FHIR `DocumentReference`s.
pub trait DocumentRegistry: Send + Sync {
    /// Creates the `DocumentReference` (with the `ImagingStudy` of the
    /// upload's study, if any) and returns its logical id.
    fn create(&self, document: &CompletedDocument<'_>) -> Result<String, RegistryError>;

    /// Tells whether the FHIR server knows `Patient/{patient}`, or `None`
    /// when this registry cannot tell (an external FHIR server in `serve`
    /// mode), in which case the upload grant is not refused for it.
    fn has_patient(&self, _patient: &str) -> Result<Option<bool>, RegistryError> {
        Ok(None)
    }
}

/// Registry in the gateway database's `grant_documents` table, for `serve`
/// mode, where the gateway has no FHIR server of its own. Ids derive from
/// the upload id, so registering an upload twice stores one resource.
#[derive(Debug, Clone)]
pub struct LocalDocumentRegistry {
    db: Db,
}

impl LocalDocumentRegistry {
    pub fn new(db: Db) -> LocalDocumentRegistry {
        LocalDocumentRegistry { db }
    }
}

impl DocumentRegistry for LocalDocumentRegistry {
    fn create(&self, document: &CompletedDocument<'_>) -> Result<String, RegistryError> {
        let id = format!("doc-{}", document.upload.id.trim_start_matches("upl_"));
        let resource = document_reference(&id, document);
        store_local(&self.db, &id, &document.upload.patient, &resource)?;
        Ok(id)
    }
}

/// Inserts a resource into `grant_documents`, keeping an existing one.
pub fn store_local(
    db: &Db,
    id: &str,
    patient: &str,
    resource: &Value,
) -> Result<(), RegistryError> {
    db.lock()
        .execute(
            "INSERT OR IGNORE INTO grant_documents (id, patient, created_at, resource) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![id, patient, Timestamp::now().as_millisecond(), resource.to_string()],
        )
        .map_err(DbError::from)?;
    Ok(())
}

/// Builds the FHIR R4 `DocumentReference` of a completed upload.
pub fn document_reference(id: &str, document: &CompletedDocument<'_>) -> Value {
    let CompletedDocument {
        upload,
        sha256,
        object_url,
        author,
        completed_at,
    } = *document;
    let mut attachment = json!({
        "contentType": upload.media_type,
        "url": object_url,
        "title": upload.file_name,
        "creation": completed_at.to_string(),
        "extension": [
            { "url": SIZE_EXTENSION, "valueDecimal": upload.size },
            { "url": SHA256_EXTENSION, "valueString": sha256 },
        ],
    });
    if let Ok(size) = i32::try_from(upload.size) {
        attachment["size"] = json!(size);
    }

    let mut resource = json!({
        "resourceType": "DocumentReference",
        "id": id,
        "status": "current",
        "identifier": [
            { "system": "urn:ferry:upload", "value": upload.id },
            { "system": "urn:ferry:correlation-id", "value": upload.correlation_id },
        ],
        "subject": { "reference": format!("Patient/{}", upload.patient) },
        "date": completed_at.to_string(),
        "description": upload.file_name,
        "content": [{ "attachment": attachment }],
    });
    if !author.is_empty() {
        resource["author"] = json!([{ "reference": author }]);
    }
    if let Some(study) = &upload.request.study {
        resource["contained"] = json!([imaging_study(study, &upload.patient)]);
        resource["context"] = json!({ "related": [{ "reference": "#study" }] });
    }
    if let Some(confirmation) = &upload.request.patient_mismatch_confirmation {
        resource["securityLabel"] = json!([{
            "coding": [{ "system": "urn:ferry:patient-mismatch", "code": "confirmed" }],
            "text": confirmation.reason,
        }]);
    }
    resource
}

/// A FHIR R4 `ImagingStudy` for `study`, with id `study` for containing it.
pub fn imaging_study(study: &StudySummary, patient: &str) -> Value {
    let series: Vec<Value> = study
        .series
        .iter()
        .map(|series| {
            let mut entry = json!({
                "uid": series.series_instance_uid,
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": series.modality,
                },
                "numberOfInstances": series.instance_count,
            });
            if let Some(description) = &series.description {
                entry["description"] = json!(description);
            }
            entry
        })
        .collect();
    let instances: u64 = study
        .series
        .iter()
        .map(|series| u64::from(series.instance_count))
        .sum();

    let mut resource = json!({
        "resourceType": "ImagingStudy",
        "id": "study",
        "status": "available",
        "identifier": [{ "system": "urn:dicom:uid", "value": format!("urn:oid:{}", study.study_instance_uid) }],
        "subject": { "reference": format!("Patient/{patient}") },
        "numberOfSeries": study.series.len(),
        "numberOfInstances": instances,
        "series": series,
    });
    if let Some(description) = &study.description {
        resource["description"] = json!(description);
    }
    if let Some(started) = &study.started {
        resource["started"] = json!(started);
    }
    resource
}
