//! Reads from a profile's FHIR R4 server with a session's access token: a
//! resource by id, and searches that return a `searchset` Bundle, plus the
//! summaries of `Patient` and `DocumentReference` that the CLI and the
//! desktop app show.
//!
//! Only reads are here. Writes to the FHIR server go through the grant API,
//! which creates the `DocumentReference` of a completed upload itself.

use serde::Serialize;
use serde_json::Value;

use crate::login::{LoginError, Session};

/// Maximum number of characters of a non-FHIR error body kept in a message.
const MAX_BODY_IN_ERROR: usize = 300;

/// Maximum number of search pages followed through `next` links. A server
/// that keeps sending `next` links is cut off here rather than read forever.
const MAX_PAGES: usize = 100;

/// Failure of a read or search on the FHIR server.
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// No access token: the session has ended or its refresh failed.
    #[error(transparent)]
    SignIn(#[from] LoginError),
    #[error("the FHIR base URL {base} cannot take a resource path; fix the profile's FHIR URL")]
    BaseUrl { base: url::Url },
    #[error("request to the FHIR server for {path} failed")]
    Request {
        path: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server returned an error status. `detail` is the
    /// `OperationOutcome`'s diagnostics, or the start of the body.
    #[error("the FHIR server returned {status} for {path}: {detail}")]
    Status {
        status: reqwest::StatusCode,
        path: String,
        detail: String,
    },
    #[error("the FHIR server returned invalid JSON for {path}")]
    InvalidJson {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("searching {resource_type} returned a {found} instead of a Bundle")]
    NotABundle {
        resource_type: String,
        found: String,
    },
}

impl FhirError {
    /// Returns whether the server returned 404: the resource does not exist
    /// or the signed-in user may not see that it does.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FhirError::Status { status, .. } if *status == reqwest::StatusCode::NOT_FOUND)
    }

    /// Returns whether only a new sign-in helps: the server returned 401, or
    /// no access token was available.
    pub fn is_sign_in_required(&self) -> bool {
        match self {
            FhirError::SignIn(error) => matches!(
                error,
                LoginError::NotSignedIn { .. } | LoginError::SignInAgain { .. }
            ),
            FhirError::Status { status, .. } => *status == reqwest::StatusCode::UNAUTHORIZED,
            _ => false,
        }
    }

    /// Returns whether the server returned 403: the user is signed in but
    /// the token's scopes or patient context do not cover the resource.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, FhirError::Status { status, .. } if *status == reqwest::StatusCode::FORBIDDEN)
    }
}

/// Reads `{fhir}/{resource_type}/{id}`.
pub async fn read(session: &Session, resource_type: &str, id: &str) -> Result<Value, FhirError> {
    let url = resource_url(session, &[resource_type, id])?;
    get_json(session, url, &[]).await
}

/// Searches `{fhir}/{resource_type}?{params}` and returns the resources of
/// the `searchset` Bundle's entries, following `next` links on the FHIR
/// server's own origin. A `next` link to another origin is not followed,
/// because the request would carry the access token there.
pub async fn search(
    session: &Session,
    resource_type: &str,
    params: &[(&str, &str)],
) -> Result<Vec<Value>, FhirError> {
    let mut url = resource_url(session, &[resource_type])?;
    let mut query: Vec<(String, String)> = params
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();

    let mut resources = Vec::new();
    for page in 1..=MAX_PAGES {
        let bundle = get_json(session, url.clone(), &query).await?;
        if bundle["resourceType"] != "Bundle" {
            return Err(FhirError::NotABundle {
                resource_type: resource_type.to_owned(),
                found: bundle["resourceType"]
                    .as_str()
                    .unwrap_or("document without resourceType")
                    .to_owned(),
            });
        }
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        resources.extend(entries.into_iter().filter_map(|mut entry| {
            let resource = entry.get_mut("resource")?.take();
            (!resource.is_null()).then_some(resource)
        }));

        let Some(next) = next_link(&bundle) else {
            break;
        };
        if !same_origin(&next, &session.context().profile.fhir_base_url) {
            tracing::warn!(resource_type, origin = %next.origin().ascii_serialization(), "not following a search page on another origin");
            break;
        }
        if page == MAX_PAGES {
            tracing::warn!(
                resource_type,
                pages = MAX_PAGES,
                "search results cut off after the maximum number of pages"
            );
        }
        url = next;
        query.clear();
    }
    Ok(resources)
}

fn next_link(bundle: &Value) -> Option<url::Url> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|link| link["relation"] == "next")
        .and_then(|link| link["url"].as_str())
        .and_then(|next| url::Url::parse(next).ok())
}

fn resource_url(session: &Session, segments: &[&str]) -> Result<url::Url, FhirError> {
    let base = &session.context().profile.fhir_base_url;
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| FhirError::BaseUrl { base: base.clone() })?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

async fn get_json(
    session: &Session,
    url: url::Url,
    query: &[(String, String)],
) -> Result<Value, FhirError> {
    let path = url.path().to_owned();
    let token = session.access_token().await?;
    let response = session
        .http()
        .get(url)
        .query(query)
        .bearer_auth(token.expose())
        .header("accept", "application/fhir+json")
        .send()
        .await
        .map_err(|source| FhirError::Request {
            path: path.clone(),
            source: source.without_url(),
        })?;

    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let detail = operation_outcome_text(&body)
            .unwrap_or_else(|| body.chars().take(MAX_BODY_IN_ERROR).collect());
        tracing::debug!(%status, path, detail, "FHIR request failed");
        return Err(FhirError::Status {
            status,
            path,
            detail,
        });
    }
    serde_json::from_str(&body).map_err(|source| FhirError::InvalidJson { path, source })
}

/// Returns the diagnostics of a FHIR `OperationOutcome` body, if it is one.
fn operation_outcome_text(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    if value["resourceType"] != "OperationOutcome" {
        return None;
    }
    let texts: Vec<String> = value["issue"]
        .as_array()?
        .iter()
        .filter_map(|issue| {
            issue["diagnostics"]
                .as_str()
                .or_else(|| issue["details"]["text"].as_str())
                .map(str::to_owned)
        })
        .collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

/// Returns the first `HumanName` of a `Patient`: its text, or its given
/// names and family name.
pub fn patient_name(patient: &Value) -> String {
    let Some(name) = patient["name"].as_array().and_then(|names| names.first()) else {
        return String::new();
    };
    if let Some(text) = name["text"].as_str() {
        return text.to_owned();
    }
    let mut parts: Vec<&str> = name["given"]
        .as_array()
        .map(|given| given.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(family) = name["family"].as_str() {
        parts.push(family);
    }
    parts.join(" ")
}

/// The fields of a `Patient` that Ferry shows when a patient is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientSummary {
    pub id: String,
    pub name: String,
    pub birth_date: Option<String>,
    pub gender: Option<String>,
    /// The first identifier's value, usually the medical record number.
    pub identifier: Option<String>,
}

impl PatientSummary {
    pub fn from_resource(resource: &Value) -> Self {
        Self {
            id: resource["id"].as_str().unwrap_or_default().to_owned(),
            name: patient_name(resource),
            birth_date: resource["birthDate"].as_str().map(str::to_owned),
            gender: resource["gender"].as_str().map(str::to_owned),
            identifier: resource["identifier"][0]["value"]
                .as_str()
                .map(str::to_owned),
        }
    }
}

/// The fields of a `DocumentReference` that Ferry lists for download.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentSummary {
    pub id: String,
    pub file_name: String,
    pub size: Option<u64>,
    pub media_type: String,
    /// `subject.reference`, for example `Patient/pat-001`.
    pub patient: Option<String>,
    pub date: String,
    pub sha256: Option<String>,
}

/// Attachment extension of the sandbox FHIR server: the size in bytes as a
/// decimal `valueString`.
const SIZE64_EXTENSION: &str = "https://ferry.example/fhir/StructureDefinition/attachment-size64";
/// Attachment extension of the sandbox FHIR server: the SHA-256 as
/// `valueBase64Binary`.
const SHA256_BASE64_EXTENSION: &str =
    "https://ferry.example/fhir/StructureDefinition/attachment-sha256";
/// Attachment extension of the gateway's own registry (`serve` mode): the
/// size in bytes as `valueDecimal`.
const OBJECT_SIZE_EXTENSION: &str = "urn:ferry:fhir:object-size";
/// Attachment extension of the gateway's own registry: the SHA-256 as hex
/// in `valueString`.
const OBJECT_SHA256_EXTENSION: &str = "urn:ferry:fhir:object-sha256";

impl DocumentSummary {
    pub fn from_resource(resource: &Value) -> Self {
        let attachment = &resource["content"][0]["attachment"];
        Self {
            id: resource["id"].as_str().unwrap_or_default().to_owned(),
            file_name: attachment["title"]
                .as_str()
                .or_else(|| resource["description"].as_str())
                .unwrap_or_default()
                .to_owned(),
            size: attachment_size(attachment),
            media_type: attachment["contentType"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            patient: resource["subject"]["reference"].as_str().map(str::to_owned),
            date: resource["date"].as_str().unwrap_or_default().to_owned(),
            sha256: attachment_sha256(attachment),
        }
    }
}

fn attachment_extension<'a>(attachment: &'a Value, url: &str) -> Option<&'a Value> {
    attachment["extension"]
        .as_array()?
        .iter()
        .find(|extension| extension["url"] == url)
}

/// Returns an attachment's size in bytes. FHIR R4 `Attachment.size` is an
/// unsignedInt (below 2^32), so the gateway gives sizes of 4 GiB and more
/// in an extension, which wins when present.
fn attachment_size(attachment: &Value) -> Option<u64> {
    let size64 = attachment_extension(attachment, SIZE64_EXTENSION)
        .and_then(|extension| extension["valueString"].as_str())
        .and_then(|text| text.parse::<u64>().ok());
    let object_size = || {
        let value = &attachment_extension(attachment, OBJECT_SIZE_EXTENSION)?["valueDecimal"];
        value
            .as_u64()
            .or_else(|| value.as_f64().map(|size| size as u64))
    };
    size64
        .or_else(object_size)
        .or_else(|| attachment["size"].as_u64())
}

/// Returns an attachment's SHA-256 as lowercase hex, from either extension.
fn attachment_sha256(attachment: &Value) -> Option<String> {
    use base64::Engine as _;

    let from_base64 = attachment_extension(attachment, SHA256_BASE64_EXTENSION)
        .and_then(|extension| extension["valueBase64Binary"].as_str())
        .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .filter(|digest| digest.len() == 32)
        .map(hex::encode);
    from_base64.or_else(|| {
        attachment_extension(attachment, OBJECT_SHA256_EXTENSION)?["valueString"]
            .as_str()
            .map(str::to_ascii_lowercase)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operation_outcome_diagnostics_are_joined() {
        let body = json!({
            "resourceType": "OperationOutcome",
            "issue": [
                { "severity": "error", "code": "not-found", "diagnostics": "Patient/x is not known" },
                { "severity": "error", "code": "forbidden", "details": { "text": "outside the compartment" } }
            ]
        })
        .to_string();
        assert_eq!(
            operation_outcome_text(&body).as_deref(),
            Some("Patient/x is not known; outside the compartment")
        );
        assert_eq!(
            operation_outcome_text("{\"resourceType\":\"Patient\"}"),
            None
        );
    }

    #[test]
    fn patient_name_joins_given_and_family() {
        let patient = json!({ "name": [{ "family": "Nwosu", "given": ["Amara", "Ife"] }] });
        assert_eq!(patient_name(&patient), "Amara Ife Nwosu");
        let with_text = json!({ "name": [{ "text": "Dr. A. Nwosu", "family": "Nwosu" }] });
        assert_eq!(patient_name(&with_text), "Dr. A. Nwosu");
        assert_eq!(patient_name(&json!({})), "");
    }

    #[test]
    fn patient_summary_reads_identifier_and_birth_date() {
        let resource = json!({
            "resourceType": "Patient",
            "id": "pat-001",
            "name": [{ "family": "Nwosu", "given": ["Amara"] }],
            "birthDate": "1984-03-12",
            "identifier": [{ "system": "urn:mrn", "value": "MRN-100001" }]
        });
        let summary = PatientSummary::from_resource(&resource);
        assert_eq!(summary.id, "pat-001");
        assert_eq!(summary.name, "Amara Nwosu");
        assert_eq!(summary.identifier.as_deref(), Some("MRN-100001"));
        assert_eq!(summary.birth_date.as_deref(), Some("1984-03-12"));
        assert_eq!(summary.gender, None);
    }

    #[test]
    fn document_summary_reads_object_extensions() {
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
                    { "url": "urn:ferry:fhir:object-sha256", "valueString": "AB" }
                ]
            }}]
        });
        let summary = DocumentSummary::from_resource(&resource);
        assert_eq!(summary.id, "doc-1");
        assert_eq!(summary.file_name, "ct.zip");
        assert_eq!(summary.size, Some(5_368_709_127));
        assert_eq!(summary.sha256.as_deref(), Some("ab"));
        assert_eq!(summary.patient.as_deref(), Some("Patient/pat-001"));
        assert_eq!(summary.media_type, "application/zip");
    }

    #[test]
    fn document_summary_reads_sandbox_extensions() {
        let digest = [7u8; 32];
        let resource = json!({
            "resourceType": "DocumentReference",
            "id": "doc-2",
            "content": [{ "attachment": {
                "contentType": "application/zip",
                "title": "mr.zip",
                "extension": [
                    { "url": SIZE64_EXTENSION, "valueString": "4294967296" },
                    { "url": SHA256_BASE64_EXTENSION, "valueBase64Binary": "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=" }
                ]
            }}]
        });
        let summary = DocumentSummary::from_resource(&resource);
        assert_eq!(summary.size, Some(4_294_967_296));
        assert_eq!(summary.sha256, Some(hex::encode(digest)));
        assert_eq!(summary.patient, None);
    }

    #[test]
    fn document_summary_falls_back_to_standard_size() {
        let resource = json!({ "content": [{ "attachment": { "size": 1234 } }] });
        assert_eq!(DocumentSummary::from_resource(&resource).size, Some(1234));
    }
}
