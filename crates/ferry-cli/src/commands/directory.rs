//! `ferry documents` and `ferry patients`: FHIR searches on the profile's server.

use serde_json::{Value, json};

use crate::context;
use crate::exit::{CliError, CliResult};
use crate::fhir;
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
    let resources = fhir::search(&session, "DocumentReference", &params).await?;
    let documents: Vec<DocumentRow> = resources.iter().map(DocumentRow::from_resource).collect();

    if documents.is_empty() {
        output.status(match &patient {
            Some(patient) => format!("No documents for Patient/{patient}."),
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
                    document.patient.clone(),
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
        "documents": documents.iter().map(DocumentRow::to_json).collect::<Vec<_>>(),
    }));
    Ok(())
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
    let resources = fhir::search(&session, "Patient", &params).await?;

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

/// The columns of one `DocumentReference`.
struct DocumentRow {
    id: String,
    file_name: String,
    size: Option<u64>,
    media_type: String,
    patient: String,
    date: String,
    sha256: Option<String>,
}

impl DocumentRow {
    fn from_resource(resource: &Value) -> DocumentRow {
        let attachment = &resource["content"][0]["attachment"];
        let extensions = attachment["extension"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let extension = |suffix: &str| {
            extensions
                .iter()
                .find(|extension| {
                    extension["url"]
                        .as_str()
                        .is_some_and(|url| url.ends_with(suffix))
                })
                .cloned()
        };
        // `Attachment.size` is a FHIR R4 unsignedInt (below 2^32), so sizes
        // of 4 GiB and more come from the size extension when present.
        let size = extension("size")
            .and_then(|extension| extension["valueDecimal"].as_f64())
            .map(|size| size as u64)
            .or_else(|| attachment["size"].as_u64());
        let sha256 = extension("sha256")
            .and_then(|extension| extension["valueString"].as_str().map(str::to_owned));

        DocumentRow {
            id: resource["id"].as_str().unwrap_or_default().to_owned(),
            file_name: attachment["title"]
                .as_str()
                .or_else(|| resource["description"].as_str())
                .unwrap_or_default()
                .to_owned(),
            size,
            media_type: attachment["contentType"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            patient: resource["subject"]["reference"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            date: resource["date"].as_str().unwrap_or_default().to_owned(),
            sha256,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "document_id": self.id,
            "file_name": self.file_name,
            "size": self.size,
            "media_type": self.media_type,
            "patient": self.patient,
            "date": self.date,
            "sha256": self.sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_row_reads_size_extension() {
        let resource = json!({
            "resourceType": "DocumentReference",
            "id": "doc-1",
            "subject": { "reference": "Patient/pat-001" },
            "date": "2026-12-04T21:52:10Z",
            "content": [{ "attachment": {
                "contentType": "application/zip",
                "title": "ct.zip",
                "extension": [
                    { "url": "urn:ferry:fhir:object-size", "valueDecimal": 5368709127u64 },
                    { "url": "urn:ferry:fhir:object-sha256", "valueString": "ab" }
                ]
            }}]
        });
        let row = DocumentRow::from_resource(&resource);
        assert_eq!(row.id, "doc-1");
        assert_eq!(row.file_name, "ct.zip");
        assert_eq!(row.size, Some(5_368_709_127));
        assert_eq!(row.sha256.as_deref(), Some("ab"));
        assert_eq!(row.patient, "Patient/pat-001");
    }
}
