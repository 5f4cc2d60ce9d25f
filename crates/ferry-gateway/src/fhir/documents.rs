//! DocumentReference: the FHIR record of a file a client uploaded, with
//! Ferry's Attachment extensions for files of 4 GiB and more.
//!
//! R4's `Attachment.size` is an `unsignedInt` (at most 2^32 - 1) and
//! `Attachment.hash` is a SHA-1. Ferry records the size in
//! [`SIZE64_EXTENSION`] as a decimal string (R5's `integer64` has the same JSON
//! form) and the SHA-256 in [`SHA256_EXTENSION`] as base64. The standard
//! `size` is filled too when the size fits; `hash` is left empty because Ferry
//! computes no SHA-1. `docs/fhir-extensions.md` defines both extensions.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};

use super::{Access, FhirError, access, fhir_json, search_params, searchset};
use crate::SharedState;
use crate::db::Db;
use crate::directory;
use crate::scopes::Permission;
use crate::tokens::Authenticated;

/// Extension on Attachment: the content's size in bytes as a decimal string.
pub const SIZE64_EXTENSION: &str =
    "https://ferry.example/fhir/StructureDefinition/attachment-size64";
/// Extension on Attachment: the SHA-256 of the content as base64Binary.
pub const SHA256_EXTENSION: &str =
    "https://ferry.example/fhir/StructureDefinition/attachment-sha256";

const FERRY_EXTENSION_PREFIX: &str = "https://ferry.example/fhir/StructureDefinition/";

/// The subset of R4 DocumentReference this server stores. Unknown elements
/// are rejected, so nothing a client sends is silently dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DocumentReference {
    pub resource_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    pub status: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub document_type: Option<CodeableConcept>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub author: Vec<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub content: Vec<Content>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CodeableConcept {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coding: Vec<Coding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Coding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Content {
    pub attachment: Attachment,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Coding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Attachment {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<Extension>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// R4 `unsignedInt`: only sizes below 2^32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// R4 base64 SHA-1; Ferry leaves it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Extension {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64_binary: Option<String>,
}

impl Attachment {
    /// Returns the content size from the Ferry extension, else from the standard `size`.
    pub fn size64(&self) -> Result<Option<u64>, FhirError> {
        let extension = self
            .extension
            .iter()
            .find(|extension| extension.url == SIZE64_EXTENSION);
        let Some(extension) = extension else {
            return Ok(self.size.map(u64::from));
        };
        let text = extension.value_string.as_deref().ok_or_else(|| {
            FhirError::invalid(format!("extension {SIZE64_EXTENSION} needs valueString"))
        })?;
        if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(FhirError::invalid(format!(
                "extension {SIZE64_EXTENSION}: '{text}' is not a decimal byte count"
            )));
        }
        let size = text.parse::<u64>().map_err(|_| {
            FhirError::invalid(format!(
                "extension {SIZE64_EXTENSION}: '{text}' exceeds 2^64 - 1"
            ))
        })?;
        if let Some(standard) = self.size
            && u64::from(standard) != size
        {
            return Err(FhirError::invalid(format!(
                "Attachment.size {standard} differs from extension {SIZE64_EXTENSION} {size}"
            )));
        }
        Ok(Some(size))
    }

    /// Returns the SHA-256 of the content from the Ferry extension.
    pub fn sha256(&self) -> Result<Option<[u8; 32]>, FhirError> {
        let extension = self
            .extension
            .iter()
            .find(|extension| extension.url == SHA256_EXTENSION);
        let Some(extension) = extension else {
            return Ok(None);
        };
        let text = extension.value_base64_binary.as_deref().ok_or_else(|| {
            FhirError::invalid(format!(
                "extension {SHA256_EXTENSION} needs valueBase64Binary"
            ))
        })?;
        let digest = STANDARD
            .decode(text)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                FhirError::invalid(format!(
                    "extension {SHA256_EXTENSION}: '{text}' is not a base64 SHA-256 digest (32 bytes)"
                ))
            })?;
        Ok(Some(digest))
    }
}

/// A document to register, as the grant API has it after an upload.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub patient_id: String,
    /// Practitioner id of the uploader, if known.
    pub author: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub content_type: String,
    /// URL of the content, e.g. the grant API's object URL.
    pub url: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// Errors registering a document through [`create`].
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("cannot register the document: Patient/{0} does not exist")]
    UnknownPatient(String),
    #[error("cannot register the document: {0}")]
    Invalid(String),
    #[error(transparent)]
    Database(#[from] rusqlite::Error),
}

impl NewDocument {
    /// The DocumentReference for this document, with Ferry's extensions and
    /// the standard `size` where it fits.
    pub fn to_resource(&self) -> DocumentReference {
        let mut extension = vec![Extension {
            url: SIZE64_EXTENSION.to_owned(),
            value_string: Some(self.size.to_string()),
            value_base64_binary: None,
        }];
        extension.push(Extension {
            url: SHA256_EXTENSION.to_owned(),
            value_string: None,
            value_base64_binary: Some(STANDARD.encode(self.sha256)),
        });
        DocumentReference {
            resource_type: "DocumentReference".to_owned(),
            id: None,
            meta: None,
            status: "current".to_owned(),
            document_type: None,
            subject: Some(Reference {
                reference: Some(format!("Patient/{}", self.patient_id)),
                display: None,
            }),
            date: None,
            author: self
                .author
                .iter()
                .map(|id| Reference {
                    reference: Some(format!("Practitioner/{id}")),
                    display: None,
                })
                .collect(),
            description: self.description.clone(),
            content: vec![Content {
                attachment: Attachment {
                    extension,
                    content_type: Some(self.content_type.clone()),
                    url: Some(self.url.clone()),
                    size: u32::try_from(self.size).ok(),
                    hash: None,
                    title: Some(self.title.clone()),
                    creation: None,
                },
                format: None,
            }],
        }
    }
}

/// Registers a document and returns its DocumentReference id.
pub fn create(db: &Db, document: NewDocument) -> Result<String, DocumentError> {
    let resource = document.to_resource();
    let connection = db.lock();
    if directory::patient(&connection, &document.patient_id)?.is_none() {
        return Err(DocumentError::UnknownPatient(document.patient_id));
    }
    let stored = store(&connection, resource, &document.patient_id)?;
    Ok(stored.id.unwrap_or_default())
}

/// Assigns id, `meta` and `date`, and inserts the resource.
fn store(
    connection: &Connection,
    mut resource: DocumentReference,
    patient_id: &str,
) -> Result<DocumentReference, rusqlite::Error> {
    let now = jiff::Timestamp::now();
    let id = uuid::Uuid::new_v4().to_string();
    resource.id = Some(id.clone());
    resource.meta = Some(Meta {
        version_id: Some("1".to_owned()),
        last_updated: Some(now.to_string()),
    });
    if resource.date.is_none() {
        resource.date = Some(now.to_string());
    }

    let json = serde_json::to_string(&resource).expect("DocumentReference serializes to JSON");
    connection.execute(
        "INSERT INTO document_references (id, patient_id, created_at, resource) VALUES (?1, ?2, ?3, ?4)",
        params![id, patient_id, now.as_second(), json],
    )?;
    tracing::info!(document = %id, patient = %patient_id, "registered a DocumentReference");
    Ok(resource)
}

/// Checks a client-sent DocumentReference and returns its patient id.
fn validate(resource: &DocumentReference, connection: &Connection) -> Result<String, FhirError> {
    if resource.resource_type != "DocumentReference" {
        return Err(FhirError::invalid(format!(
            "resourceType is '{}'; this endpoint takes DocumentReference",
            resource.resource_type
        )));
    }
    if !["current", "superseded", "entered-in-error"].contains(&resource.status.as_str()) {
        return Err(FhirError::invalid(format!(
            "status '{}' is not one of current, superseded, entered-in-error",
            resource.status
        )));
    }

    let reference = resource
        .subject
        .as_ref()
        .and_then(|subject| subject.reference.as_deref())
        .ok_or_else(|| FhirError::invalid("subject.reference is required, e.g. Patient/pat-001"))?;
    let patient_id = reference
        .strip_prefix("Patient/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .ok_or_else(|| {
            FhirError::invalid(format!("subject.reference '{reference}' is not Patient/ID"))
        })?;
    if directory::patient(connection, patient_id)?.is_none() {
        return Err(FhirError::invalid(format!(
            "subject.reference '{reference}': the patient does not exist"
        )));
    }

    if resource.content.is_empty() {
        return Err(FhirError::invalid(
            "content must have at least one attachment",
        ));
    }
    for (index, content) in resource.content.iter().enumerate() {
        let attachment = &content.attachment;
        if attachment.url.as_deref().is_none_or(str::is_empty) {
            return Err(FhirError::invalid(format!(
                "content[{index}].attachment.url is required"
            )));
        }
        if attachment.content_type.as_deref().is_none_or(str::is_empty) {
            return Err(FhirError::invalid(format!(
                "content[{index}].attachment.contentType is required"
            )));
        }
        if let Some(unknown) = attachment.extension.iter().find(|extension| {
            extension.url.starts_with(FERRY_EXTENSION_PREFIX)
                && extension.url != SIZE64_EXTENSION
                && extension.url != SHA256_EXTENSION
        }) {
            return Err(FhirError::invalid(format!(
                "content[{index}].attachment: extension {} is not defined by Ferry",
                unknown.url
            )));
        }
        // size64() and sha256() read the first extension of each URL, so a
        // second one with another value would be stored unchecked.
        for url in [SIZE64_EXTENSION, SHA256_EXTENSION] {
            if attachment
                .extension
                .iter()
                .filter(|extension| extension.url == url)
                .count()
                > 1
            {
                return Err(FhirError::invalid(format!(
                    "content[{index}].attachment: extension {url} appears more than once; send it once"
                )));
            }
        }
        attachment.size64()?;
        attachment.sha256()?;
    }
    Ok(patient_id.to_owned())
}

/// Fills the standard `size` from the 64-bit extension where it fits.
fn fill_standard_size(resource: &mut DocumentReference) {
    for content in &mut resource.content {
        let attachment = &mut content.attachment;
        if attachment.size.is_none()
            && let Ok(Some(size)) = attachment.size64()
        {
            attachment.size = u32::try_from(size).ok();
        }
    }
}

fn load(
    connection: &Connection,
    id: &str,
) -> Result<Option<(String, serde_json::Value)>, FhirError> {
    let row = connection
        .query_row(
            "SELECT patient_id, resource FROM document_references WHERE id = ?1",
            [id],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
        )
        .optional()?;
    row.map(|(patient_id, json)| {
        let resource = serde_json::from_str(&json).map_err(FhirError::internal)?;
        Ok((patient_id, resource))
    })
    .transpose()
}

pub(super) async fn read_handler(
    State(state): State<SharedState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let access = access(&claims, "DocumentReference", Permission::Read)?;
    let (patient_id, resource) = load(&state.db.lock(), &id)?
        .ok_or_else(|| FhirError::not_found(format!("DocumentReference/{id} does not exist")))?;
    access.check_patient(&patient_id)?;
    Ok(fhir_json(StatusCode::OK, &resource))
}

/// DocumentReference search by `patient` (an id or `Patient/ID`) or
/// `subject` (`Patient/ID`). A patient-context token searches its own patient
/// when no parameter is given.
pub(super) async fn search_handler(
    State(state): State<SharedState>,
    Authenticated(claims): Authenticated,
    RawQuery(query): RawQuery,
) -> Result<Response, FhirError> {
    let access = access(&claims, "DocumentReference", Permission::Search)?;
    let params = search_params(query.as_deref(), &["patient", "subject"])?;

    let requested = match (params.get("patient"), params.get("subject")) {
        (Some(_), Some(_)) => {
            return Err(FhirError::invalid(
                "send either patient or subject, not both",
            ));
        }
        (Some(patient), None) => Some(
            patient
                .strip_prefix("Patient/")
                .unwrap_or(patient)
                .to_owned(),
        ),
        (None, Some(subject)) => Some(
            subject
                .strip_prefix("Patient/")
                .ok_or_else(|| {
                    FhirError::invalid(format!("subject '{subject}' is not Patient/ID"))
                })?
                .to_owned(),
        ),
        (None, None) => None,
    };
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
            "SELECT resource FROM document_references
             WHERE ?1 IS NULL OR patient_id = ?1 ORDER BY created_at, id",
        )?;
        let rows = statement.query_map([&patient_filter], |row| row.get::<_, String>(0))?;
        let mut resources = Vec::new();
        for json in rows {
            resources.push(serde_json::from_str(&json?).map_err(FhirError::internal)?);
        }
        resources
    };

    let self_url = match &query {
        Some(query) => format!("{}/DocumentReference?{query}", state.urls.fhir),
        None => format!("{}/DocumentReference", state.urls.fhir),
    };
    Ok(fhir_json(
        StatusCode::OK,
        &searchset(&self_url, &state.urls.fhir, resources),
    ))
}

/// FHIR create (R4 §3.1.0.8): the server assigns `id` and `meta`, ignoring
/// any the client sent.
pub(super) async fn create_handler(
    State(state): State<SharedState>,
    Authenticated(claims): Authenticated,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FhirError> {
    let access = access(&claims, "DocumentReference", Permission::Create)?;
    let body = body.map_err(|rejection| FhirError {
        status: rejection.status(),
        code: if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "too-costly"
        } else {
            "invalid"
        },
        diagnostics: if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "request body is larger than {} bytes",
                crate::web::MAX_BODY_BYTES
            )
        } else {
            rejection.body_text()
        },
    })?;
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase());
    if !matches!(
        media_type.as_deref(),
        Some(super::FHIR_JSON | "application/json")
    ) {
        return Err(FhirError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "not-supported",
            diagnostics: "Content-Type must be application/fhir+json".to_owned(),
        });
    }

    let mut resource: DocumentReference = serde_json::from_slice(&body)
        .map_err(|error| FhirError::invalid(format!("DocumentReference JSON: {error}")))?;
    let connection = state.db.lock();
    let patient_id = validate(&resource, &connection)?;
    access.check_patient(&patient_id)?;
    fill_standard_size(&mut resource);

    let stored = store(&connection, resource, &patient_id)?;
    let id = stored.id.clone().unwrap_or_default();
    let body = serde_json::to_value(&stored).map_err(FhirError::internal)?;
    let mut response = fhir_json(StatusCode::CREATED, &body);
    let location = format!("{}/DocumentReference/{id}/_history/1", state.urls.fhir);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}
