//! FHIR R4 server for the sandbox data: `metadata`, Patient read and search,
//! Practitioner read, DocumentReference search, read and create.
//!
//! Every request needs a bearer token from the sandbox's authorization server.
//! A `user/` scope gives access to every patient; a `patient/` scope only to
//! the patient in the token's launch context, and anything outside that
//! compartment is answered with 403. Search parameters this server does not
//! implement are rejected with 400 instead of being ignored, so a client never
//! mistakes an unfiltered result for a filtered one.

pub mod documents;
pub mod imaging;
mod resources;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::SharedState;
use crate::scopes::{Context, Permission};
use crate::tokens::AccessClaims;

/// Media type of FHIR JSON (R4 §3.1.0.1.6 "Content Types and encodings").
pub const FHIR_JSON: &str = "application/fhir+json";

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/fhir/metadata", get(metadata))
        .route("/fhir/Patient", get(resources::search_patients))
        .route("/fhir/Patient/{id}", get(resources::read_patient))
        .route("/fhir/Practitioner/{id}", get(resources::read_practitioner))
        .route(
            "/fhir/DocumentReference",
            get(documents::search_handler).post(documents::create_handler),
        )
        .route("/fhir/DocumentReference/{id}", get(documents::read_handler))
        .route("/fhir/ImagingStudy", get(imaging::search_handler))
        .route("/fhir/ImagingStudy/{id}", get(imaging::read_handler))
        .layer(crate::web::body_limit())
}

/// A FHIR error, returned as an OperationOutcome.
#[derive(Debug)]
pub struct FhirError {
    pub status: StatusCode,
    /// OperationOutcome `issue.code` (R4 value set `issue-type`).
    pub code: &'static str,
    pub diagnostics: String,
}

impl FhirError {
    pub fn invalid(diagnostics: impl Into<String>) -> FhirError {
        FhirError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            diagnostics: diagnostics.into(),
        }
    }

    pub fn not_found(diagnostics: impl Into<String>) -> FhirError {
        FhirError {
            status: StatusCode::NOT_FOUND,
            code: "not-found",
            diagnostics: diagnostics.into(),
        }
    }

    pub fn forbidden(diagnostics: impl Into<String>) -> FhirError {
        FhirError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            diagnostics: diagnostics.into(),
        }
    }

    /// Builds a 500 and logs its cause once; the client sees a generic message.
    pub fn internal(error: impl std::fmt::Display) -> FhirError {
        tracing::error!(%error, "FHIR request failed");
        FhirError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "exception",
            diagnostics: "internal error; see the gateway log".to_owned(),
        }
    }
}

impl From<rusqlite::Error> for FhirError {
    fn from(error: rusqlite::Error) -> FhirError {
        FhirError::internal(error)
    }
}

impl From<crate::db::DbError> for FhirError {
    fn from(error: crate::db::DbError) -> FhirError {
        FhirError::internal(error)
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let outcome = serde_json::json!({
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "error",
                "code": self.code,
                "diagnostics": self.diagnostics,
            }],
        });
        fhir_json(self.status, &outcome)
    }
}

/// A FHIR JSON response.
pub fn fhir_json(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// Which patients a token may reach for one interaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A `user/` scope: every patient.
    AllPatients,
    /// A `patient/` scope: only this patient's compartment.
    Patient(String),
}

impl Access {
    /// Rejects a patient outside the token's compartment.
    pub fn check_patient(&self, patient_id: &str) -> Result<(), FhirError> {
        match self {
            Access::AllPatients => Ok(()),
            Access::Patient(allowed) if allowed == patient_id => Ok(()),
            Access::Patient(allowed) => Err(FhirError::forbidden(format!(
                "Patient/{patient_id} is outside this token's patient context (Patient/{allowed})"
            ))),
        }
    }
}

/// Finds the access a token's scopes give for `permission` on
/// `resource_type`, preferring a `user/` scope.
pub fn access(
    claims: &AccessClaims,
    resource_type: &str,
    permission: Permission,
) -> Result<Access, FhirError> {
    if claims.scopes.allows(Context::User, resource_type, permission) {
        return Ok(Access::AllPatients);
    }
    if claims.scopes.allows(Context::Patient, resource_type, permission) {
        return match &claims.patient {
            Some(patient) => Ok(Access::Patient(patient.clone())),
            None => Err(FhirError::forbidden(
                "the token has patient/ scopes but no patient context",
            )),
        };
    }

    let letter = match permission {
        Permission::Create => "c",
        Permission::Read => "r",
        Permission::Update => "u",
        Permission::Delete => "d",
        Permission::Search => "s",
    };
    Err(FhirError::forbidden(format!(
        "the token's scopes do not allow this; it needs patient/{resource_type}.{letter} or user/{resource_type}.{letter}"
    )))
}

/// Search parameters from a query string; rejects repeated and unknown names.
pub(crate) fn search_params(
    query: Option<&str>,
    known: &[&str],
) -> Result<std::collections::HashMap<String, String>, FhirError> {
    let mut params = std::collections::HashMap::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if !known.contains(&name.as_ref()) {
            return Err(FhirError::invalid(format!(
                "search parameter '{name}' is not supported; supported: {}",
                known.join(", ")
            )));
        }
        if params.insert(name.to_string(), value.into_owned()).is_some() {
            return Err(FhirError::invalid(format!(
                "search parameter '{name}' is repeated; send it once"
            )));
        }
    }
    Ok(params)
}

/// A searchset Bundle (R4 §3.1.1.4 "Search result bundles").
pub fn searchset(self_url: &str, fhir_base: &str, resources: Vec<serde_json::Value>) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = resources
        .into_iter()
        .map(|resource| {
            let full_url = format!(
                "{fhir_base}/{}/{}",
                resource["resourceType"].as_str().unwrap_or_default(),
                resource["id"].as_str().unwrap_or_default()
            );
            serde_json::json!({
                "fullUrl": full_url,
                "resource": resource,
                "search": { "mode": "match" },
            })
        })
        .collect();
    serde_json::json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entries.len(),
        "link": [{ "relation": "self", "url": self_url }],
        "entry": entries,
    })
}

async fn metadata(State(state): State<SharedState>) -> Response {
    let urls = &state.urls;
    let statement = serde_json::json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2025-01-01",
        "kind": "instance",
        "software": { "name": "ferry-gateway", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "Ferry sandbox FHIR server", "url": urls.fhir },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "security": {
                "service": [{
                    "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }],
                }],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [
                        { "url": "authorize", "valueUri": urls.authorize },
                        { "url": "token", "valueUri": urls.token },
                        { "url": "revoke", "valueUri": urls.revoke },
                    ],
                }],
            },
            "resource": [
                {
                    "type": "Patient",
                    "interaction": [{ "code": "read" }, { "code": "search-type" }],
                    "searchParam": [
                        { "name": "_id", "type": "token" },
                        { "name": "name", "type": "string" },
                        { "name": "identifier", "type": "token" },
                        { "name": "birthdate", "type": "date" },
                    ],
                },
                {
                    "type": "Practitioner",
                    "interaction": [{ "code": "read" }],
                },
                {
                    "type": "DocumentReference",
                    "interaction": [{ "code": "read" }, { "code": "search-type" }, { "code": "create" }],
                    "searchParam": [
                        { "name": "patient", "type": "reference" },
                        { "name": "subject", "type": "reference" },
                    ],
                },
            ],
        }],
    });
    fhir_json(StatusCode::OK, &statement)
}
