//! `ImagingStudy` (FHIR R4) in the sandbox: registered when an upload that
//! carries a study completes, linked both ways with the archive's
//! `DocumentReference`, and served by read and search by patient.
//!
//! Access follows the `DocumentReference` scopes, because every study here
//! is derived from an uploaded archive: a token that may read or search a
//! patient's documents may read or search that patient's studies.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use rusqlite::{OptionalExtension as _, params};
use serde_json::{Value, json};

use super::{Access, FhirError, access, fhir_json, search_params, searchset};
use crate::SharedState;
use crate::db::Db;
use crate::scopes::Permission;
use crate::tokens::Authenticated;

/// Migration that creates the table of registered studies; appended to
/// `db::MIGRATIONS`.
pub const MIGRATION: &str = r#"
    CREATE TABLE imaging_studies (
        id           TEXT PRIMARY KEY,
        patient_id   TEXT NOT NULL,
        document_id  TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        resource     TEXT NOT NULL
    );
    CREATE INDEX imaging_studies_patient ON imaging_studies(patient_id);
"#;

/// Registers `study` (an `ImagingStudy` resource) for the archive
/// `DocumentReference/{document_id}` and returns its id, `ims-{document_id}`.
/// R4 `ImagingStudy` has no element that references a document, so the
/// study names the archive in an extension ([`ARCHIVE_EXTENSION`]), and the
/// document's `context.related` names the study. Registering the same
/// document again keeps the first study.
pub fn register(db: &Db, document_id: &str, patient_id: &str, mut study: Value) -> rusqlite::Result<String> {
    let id = format!("ims-{document_id}");
    study["id"] = json!(id);
    study["extension"] = json!([{
        "url": ARCHIVE_EXTENSION,
        "valueReference": { "reference": format!("DocumentReference/{document_id}") },
    }]);

    let connection = db.lock();
    connection.execute(
        "INSERT OR IGNORE INTO imaging_studies (id, patient_id, document_id, created_at, resource)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, patient_id, document_id, jiff::Timestamp::now().as_second(), study.to_string()],
    )?;

    let document: Option<String> = connection
        .query_row("SELECT resource FROM document_references WHERE id = ?1", [document_id], |row| row.get(0))
        .optional()?;
    if let Some(document) = document.and_then(|text| serde_json::from_str::<Value>(&text).ok()) {
        let mut document = document;
        document["context"] = json!({ "related": [{ "reference": format!("ImagingStudy/{id}") }] });
        connection.execute(
            "UPDATE document_references SET resource = ?2 WHERE id = ?1",
            params![document_id, document.to_string()],
        )?;
    }
    tracing::info!(study = %id, document = %document_id, patient = %patient_id, "registered an ImagingStudy");
    Ok(id)
}

/// Extension on a registered `ImagingStudy` that names the archive
/// `DocumentReference` it was registered from.
pub const ARCHIVE_EXTENSION: &str = "https://ferry.example/fhir/StructureDefinition/imaging-study-archive";

pub(super) async fn read_handler(
    State(state): State<SharedState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let access = access(&claims, "DocumentReference", Permission::Read)?;
    let row: Option<(String, String)> = state
        .db
        .lock()
        .query_row("SELECT patient_id, resource FROM imaging_studies WHERE id = ?1", [&id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let (patient_id, resource) = row.ok_or_else(|| FhirError::not_found(format!("ImagingStudy/{id} does not exist")))?;
    access.check_patient(&patient_id)?;
    let resource: Value = serde_json::from_str(&resource).map_err(FhirError::internal)?;
    Ok(fhir_json(StatusCode::OK, &resource))
}

/// `ImagingStudy` search by `patient` (an id or `Patient/ID`). A
/// patient-context token searches its own patient when none is given.
pub(super) async fn search_handler(
    State(state): State<SharedState>,
    Authenticated(claims): Authenticated,
    RawQuery(query): RawQuery,
) -> Result<Response, FhirError> {
    let access = access(&claims, "DocumentReference", Permission::Search)?;
    let params = search_params(query.as_deref(), &["patient"])?;
    let requested = params
        .get("patient")
        .map(|patient| patient.strip_prefix("Patient/").unwrap_or(patient).to_owned());
    let patient_filter = match (&access, requested) {
        (_, Some(patient)) => {
            access.check_patient(&patient)?;
            Some(patient)
        }
        (Access::Patient(allowed), None) => Some(allowed.clone()),
        (Access::AllPatients, None) => None,
    };

    let resources = {
        let connection = state.db.lock();
        let mut statement = connection.prepare_cached(
            "SELECT resource FROM imaging_studies WHERE ?1 IS NULL OR patient_id = ?1 ORDER BY created_at, id",
        )?;
        let rows = statement.query_map([&patient_filter], |row| row.get::<_, String>(0))?;
        let mut resources = Vec::new();
        for json in rows {
            resources.push(serde_json::from_str(&json?).map_err(FhirError::internal)?);
        }
        resources
    };

    let self_url = match &query {
        Some(query) => format!("{}/ImagingStudy?{query}", state.urls.fhir),
        None => format!("{}/ImagingStudy", state.urls.fhir),
    };
    Ok(fhir_json(StatusCode::OK, &searchset(&self_url, &state.urls.fhir, resources)))
}
