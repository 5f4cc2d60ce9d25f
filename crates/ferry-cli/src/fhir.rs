//! Reads from the profile's FHIR R4 server with the session's access token:
//! a `Patient` by id, and searches that return a `searchset` Bundle.

use ferry_core::login::Session;
use serde_json::Value;

use crate::context::login_error;
use crate::exit::{CliError, CliResult, Exit};

/// Maximum number of characters of an error body kept in a message.
const MAX_BODY_IN_ERROR: usize = 300;

/// Reads `{fhir}/{resource_type}/{id}`.
pub async fn read(session: &Session, resource_type: &str, id: &str) -> CliResult<Value> {
    let url = resource_url(session, &[resource_type, id])?;
    get_json(session, url, &[]).await
}

/// Searches `{fhir}/{resource_type}?{params}` and returns the resources of
/// the Bundle's entries, following `next` links.
pub async fn search(
    session: &Session,
    resource_type: &str,
    params: &[(&str, &str)],
) -> CliResult<Vec<Value>> {
    let mut url = resource_url(session, &[resource_type])?;
    let mut query: Vec<(String, String)> = params
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();

    let mut resources = Vec::new();
    // A server that keeps sending `next` links is cut off after this many pages.
    for _ in 0..100 {
        let bundle = get_json(session, url.clone(), &query).await?;
        if bundle["resourceType"] != "Bundle" {
            return Err(CliError::failure(format!(
                "searching {resource_type} returned a {} instead of a Bundle",
                bundle["resourceType"]
                    .as_str()
                    .unwrap_or("document without resourceType")
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
                .map(str::to_owned)
        });
        match next.and_then(|next| url::Url::parse(&next).ok()) {
            Some(next) if same_origin(&next, &session.context().profile.fhir_base_url) => {
                url = next;
                query.clear();
            }
            _ => break,
        }
    }
    Ok(resources)
}

fn resource_url(session: &Session, segments: &[&str]) -> CliResult<url::Url> {
    let base = &session.context().profile.fhir_base_url;
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| CliError::failure(format!("the FHIR base URL {base} cannot have a path")))?
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
) -> CliResult<Value> {
    let token = session.access_token().await.map_err(login_error)?;
    let response = session
        .http()
        .get(url.clone())
        .query(query)
        .bearer_auth(token.expose())
        .header("accept", "application/fhir+json")
        .send()
        .await
        .map_err(|error| {
            CliError::new(
                Exit::Failure,
                format!("request to the FHIR server {} failed: {error}", url.path()),
            )
        })?;

    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        return serde_json::from_str(&body).map_err(|error| {
            CliError::failure(format!(
                "the FHIR server returned invalid JSON for {}: {error}",
                url.path()
            ))
        });
    }

    let detail = operation_outcome_text(&body)
        .unwrap_or_else(|| body.chars().take(MAX_BODY_IN_ERROR).collect());
    let exit = match status.as_u16() {
        401 => Exit::SignInRequired,
        404 => Exit::Usage,
        _ => Exit::Failure,
    };
    let hint = match status.as_u16() {
        401 => "; run `ferry login`",
        403 => "; the signed-in user may not read it",
        _ => "",
    };
    Err(CliError::new(
        exit,
        format!(
            "the FHIR server returned {status} for {}: {detail}{hint}",
            url.path()
        ),
    ))
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

/// A human-readable name of a FHIR `Patient`: the first name's text, or
/// its given names and family name.
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
}
