//! Reads from the profile's FHIR R4 server with the session's access token:
//! `Patient` reads and searches, and the `DocumentReference`s of a patient.

use ferry_core::login::Session;
use serde::Serialize;
use serde_json::Value;

use crate::error::{CommandError, CommandResult};

/// Maximum number of characters of an error body kept in a message.
const MAX_BODY_IN_ERROR: usize = 300;
/// Maximum number of search pages followed through `next` links.
const MAX_PAGES: usize = 20;

/// A `Patient` as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientView {
    pub id: String,
    pub name: String,
    pub birth_date: Option<String>,
    pub gender: Option<String>,
    /// The first identifier's value, usually the medical record number.
    pub identifier: Option<String>,
}

impl PatientView {
    pub fn from_resource(resource: &Value) -> Self {
        Self {
            id: resource["id"].as_str().unwrap_or_default().to_owned(),
            name: patient_name(resource),
            birth_date: resource["birthDate"].as_str().map(str::to_owned),
            gender: resource["gender"].as_str().map(str::to_owned),
            identifier: resource["identifier"][0]["value"].as_str().map(str::to_owned),
        }
    }
}

/// A `DocumentReference` as the UI shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentView {
    pub id: String,
    pub file_name: String,
    pub size: Option<u64>,
    pub media_type: String,
    pub date: String,
    pub sha256: Option<String>,
}

impl DocumentView {
    pub fn from_resource(resource: &Value) -> Self {
        let attachment = &resource["content"][0]["attachment"];
        let extensions = attachment["extension"].as_array().cloned().unwrap_or_default();
        let extension = |suffix: &str| {
            extensions
                .iter()
                .find(|extension| extension["url"].as_str().is_some_and(|url| url.ends_with(suffix)))
                .cloned()
        };
        // FHIR R4 `Attachment.size` is an unsignedInt (below 2^32), so the
        // gateway gives sizes of 4 GiB and more in an extension.
        let size = extension("size")
            .and_then(|extension| extension["valueDecimal"].as_f64())
            .map(|size| size as u64)
            .or_else(|| attachment["size"].as_u64());
        let sha256 = extension("sha256").and_then(|extension| extension["valueString"].as_str().map(str::to_owned));
        Self {
            id: resource["id"].as_str().unwrap_or_default().to_owned(),
            file_name: attachment["title"]
                .as_str()
                .or_else(|| resource["description"].as_str())
                .unwrap_or_default()
                .to_owned(),
            size,
            media_type: attachment["contentType"].as_str().unwrap_or_default().to_owned(),
            date: resource["date"].as_str().unwrap_or_default().to_owned(),
            sha256,
        }
    }
}

/// Reads `{fhir}/{resource_type}/{id}`.
pub async fn read(session: &Session, resource_type: &str, id: &str) -> CommandResult<Value> {
    let url = resource_url(session, &[resource_type, id])?;
    get_json(session, url, &[]).await
}

/// Searches `{fhir}/{resource_type}?{params}` and returns the resources of
/// the `searchset` Bundle's entries, following `next` links on the same origin.
pub async fn search(session: &Session, resource_type: &str, params: &[(&str, &str)]) -> CommandResult<Vec<Value>> {
    let mut url = resource_url(session, &[resource_type])?;
    let mut query: Vec<(String, String)> =
        params.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();

    let mut resources = Vec::new();
    for _ in 0..MAX_PAGES {
        let bundle = get_json(session, url.clone(), &query).await?;
        if bundle["resourceType"] != "Bundle" {
            return Err(CommandError::new(format!(
                "searching {resource_type} returned a {} instead of a Bundle",
                bundle["resourceType"].as_str().unwrap_or("document without resourceType")
            )));
        }
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        resources.extend(entries.into_iter().filter_map(|mut entry| {
            let resource = entry.get_mut("resource")?.take();
            (!resource.is_null()).then_some(resource)
        }));

        let next = bundle["link"].as_array().and_then(|links| {
            links
                .iter()
                .find(|link| link["relation"] == "next")
                .and_then(|link| link["url"].as_str())
                .and_then(|next| url::Url::parse(next).ok())
        });
        match next {
            Some(next) if same_origin(&next, &session.context().profile.fhir_base_url) => {
                url = next;
                query.clear();
            }
            _ => break,
        }
    }
    Ok(resources)
}

fn resource_url(session: &Session, segments: &[&str]) -> CommandResult<url::Url> {
    let base = &session.context().profile.fhir_base_url;
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| CommandError::new(format!("the FHIR base URL {base} cannot have a path")))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme() && a.host() == b.host() && a.port_or_known_default() == b.port_or_known_default()
}

async fn get_json(session: &Session, url: url::Url, query: &[(String, String)]) -> CommandResult<Value> {
    let token = session.access_token().await?;
    let response = session
        .http()
        .get(url.clone())
        .query(query)
        .bearer_auth(token.expose())
        .header("accept", "application/fhir+json")
        .send()
        .await
        .map_err(|error| CommandError::new(format!("request to the FHIR server {} failed: {error}", url.path())))?;

    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        return serde_json::from_str(&body).map_err(|error| {
            CommandError::new(format!("the FHIR server returned invalid JSON for {}: {error}", url.path()))
        });
    }
    let detail = operation_outcome_text(&body).unwrap_or_else(|| body.chars().take(MAX_BODY_IN_ERROR).collect());
    let hint = match status.as_u16() {
        401 => "; sign in again",
        403 => "; the signed-in user may not read it",
        _ => "",
    };
    Err(CommandError::new(format!("the FHIR server returned {status} for {}: {detail}{hint}", url.path())))
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
        .filter_map(|issue| issue["diagnostics"].as_str().or_else(|| issue["details"]["text"].as_str()).map(str::to_owned))
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
    let mut parts: Vec<&str> =
        name["given"].as_array().map(|given| given.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    if let Some(family) = name["family"].as_str() {
        parts.push(family);
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patient_view_joins_given_and_family() {
        let resource = json!({
            "resourceType": "Patient",
            "id": "pat-001",
            "name": [{ "family": "Nwosu", "given": ["Amara"] }],
            "birthDate": "1984-03-12",
            "identifier": [{ "system": "urn:mrn", "value": "MRN-100001" }]
        });
        let view = PatientView::from_resource(&resource);
        assert_eq!(view.name, "Amara Nwosu");
        assert_eq!(view.identifier.as_deref(), Some("MRN-100001"));
        assert_eq!(view.birth_date.as_deref(), Some("1984-03-12"));
    }

    #[test]
    fn document_view_reads_size_extension() {
        let resource = json!({
            "resourceType": "DocumentReference",
            "id": "doc-1",
            "content": [{ "attachment": {
                "contentType": "application/zip",
                "title": "ct.zip",
                "extension": [{ "url": "urn:ferry:fhir:object-size", "valueDecimal": 5368709127u64 }]
            }}]
        });
        let view = DocumentView::from_resource(&resource);
        assert_eq!(view.file_name, "ct.zip");
        assert_eq!(view.size, Some(5_368_709_127));
    }
}
