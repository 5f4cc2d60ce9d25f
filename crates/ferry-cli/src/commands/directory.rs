//! `ferry documents` and `ferry patients`: FHIR searches on the profile's server.

use ferry_core::activity;
use ferry_core::fhir::{self, DocumentSummary};
use ferry_core::login::Session;
use serde_json::{Value, json};

use crate::context::{self, fhir_error};
use crate::exit::{CliError, CliResult};
use crate::output::{Output, format_bytes, table};

pub async fn documents(
    profile: Option<&str>,
    patient: Option<String>,
    output: Output,
) -> CliResult<()> {
    let context = context::profile_context(profile)?;
    let session = context::resume_session(&context).await?;
    let patient = patient.or_else(|| session.info().patient);

    let mut params = Vec::new();
    if let Some(patient) = &patient {
        params.push(("patient", patient.as_str()));
    }
    let resources = fhir::search(&session, "DocumentReference", &params)
        .await
        .map_err(fhir_error)?;
    let documents: Vec<DocumentSummary> = resources
        .iter()
        .map(DocumentSummary::from_resource)
        .collect();

    if documents.is_empty()
        && let Some(patient) = &patient
    {
        check_patient_exists(&session, patient).await?;
    }
    let patient = patient.as_deref().map(activity::patient_reference);

    if documents.is_empty() {
        output.status(match &patient {
            Some(patient) => format!("No documents for {patient}."),
            None => "No documents.".to_owned(),
        });
    } else {
        let rows: Vec<Vec<String>> = documents
            .iter()
            .map(|document| {
                vec![
                    document.id.clone(),
                    document.file_name.clone(),
                    document.size.map(format_bytes).unwrap_or_default(),
                    document.patient.clone().unwrap_or_default(),
                    document.date.clone(),
                ]
            })
            .collect();
        output.text(table(
            &["DOCUMENT ID", "FILE NAME", "SIZE", "PATIENT", "DATE"],
            &rows,
        ));
    }
    output.json_result(&json!({
        "patient": patient,
        "documents": documents.iter().map(document_json).collect::<Vec<_>>(),
    }));
    Ok(())
}

/// Reads `Patient/{id}`, so that a search for the documents of a patient
/// that does not exist fails with exit code 7 instead of listing nothing.
async fn check_patient_exists(session: &Session, patient: &str) -> CliResult<()> {
    match fhir::read(session, "Patient", patient).await {
        Ok(_) => Ok(()),
        Err(error) if error.is_not_found() => Err(CliError::not_found(format!(
            "Patient/{patient} does not exist on the server; find the id with `ferry patients --name …`"
        ))),
        Err(error) => Err(fhir_error(error)),
    }
}

pub async fn patients(
    profile: Option<&str>,
    name: Option<String>,
    output: Output,
) -> CliResult<()> {
    let context = context::profile_context(profile)?;
    let session = context::resume_session(&context).await?;

    let mut params = Vec::new();
    if let Some(name) = &name {
        if name.trim().is_empty() {
            return Err(CliError::usage(
                "--name is empty; give part of the patient's name",
            ));
        }
        params.push(("name", name.as_str()));
    }
    let resources = fhir::search(&session, "Patient", &params)
        .await
        .map_err(fhir_error)?;

    let rows: Vec<Vec<String>> = resources
        .iter()
        .map(|patient| {
            vec![
                patient["id"].as_str().unwrap_or_default().to_owned(),
                fhir::patient_name(patient),
                patient["birthDate"].as_str().unwrap_or_default().to_owned(),
                patient["gender"].as_str().unwrap_or_default().to_owned(),
                first_identifier(patient),
            ]
        })
        .collect();
    if rows.is_empty() {
        output.status("No matching patients.");
    } else {
        output.text(table(
            &["ID", "NAME", "BIRTH DATE", "GENDER", "IDENTIFIER"],
            &rows,
        ));
    }
    output.json_result(&json!({ "patients": resources }));
    Ok(())
}

fn first_identifier(patient: &Value) -> String {
    patient["identifier"]
        .as_array()
        .and_then(|identifiers| identifiers.first())
        .and_then(|identifier| identifier["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn document_json(document: &DocumentSummary) -> Value {
    json!({
        "document_id": document.id,
        "file_name": document.file_name,
        "size": document.size,
        "media_type": document.media_type,
        "patient": document.patient.as_deref().unwrap_or_default(),
        "date": document.date,
        "sha256": document.sha256,
    })
}
