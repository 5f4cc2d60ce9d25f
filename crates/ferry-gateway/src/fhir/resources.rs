//! Patient and Practitioner, rendered from the sandbox directory.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::{Access, FhirError, access, fhir_json, search_params, searchset};
use crate::SharedState;
use crate::directory::{self, MRN_SYSTEM, NPI_SYSTEM, Patient, Practitioner};
use crate::scopes::{Permission, Scope};
use crate::tokens::Authenticated;

pub fn patient_resource(patient: &Patient) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "Patient",
        "id": patient.id,
        "identifier": [{
            "use": "usual",
            "type": { "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                "code": "MR",
            }]},
            "system": MRN_SYSTEM,
            "value": patient.mrn,
        }],
        "name": [{ "use": "official", "family": patient.family, "given": [patient.given] }],
        "gender": patient.gender,
        "birthDate": patient.birth_date,
    })
}

pub fn practitioner_resource(practitioner: &Practitioner) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "Practitioner",
        "id": practitioner.id,
        "active": true,
        "identifier": [{ "system": NPI_SYSTEM, "value": practitioner.npi }],
        "name": [{ "use": "official", "family": practitioner.family, "given": [practitioner.given] }],
    })
}

pub(super) async fn read_patient(
    State(state): State<SharedState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let access = access(&claims, "Patient", Permission::Read)?;
    access.check_patient(&id)?;

    let patient = directory::patient(&state.db.lock(), &id)?
        .ok_or_else(|| FhirError::not_found(format!("Patient/{id} does not exist")))?;
    Ok(fhir_json(StatusCode::OK, &patient_resource(&patient)))
}

/// Patient search by `_id`, `name` (case-insensitive prefix of given or
/// family name), `identifier` (`system|value` or `value`) and `birthdate`
/// (a full date, optionally with the `eq` prefix).
pub(super) async fn search_patients(
    State(state): State<SharedState>,
    Authenticated(claims): Authenticated,
    RawQuery(query): RawQuery,
) -> Result<Response, FhirError> {
    let access = access(&claims, "Patient", Permission::Search)?;
    let params = search_params(query.as_deref(), &["_id", "name", "identifier", "birthdate"])?;

    let birth_date = match params.get("birthdate") {
        Some(value) => Some(parse_birthdate(value)?),
        None => None,
    };
    let identifier = params.get("identifier").map(|value| match value.split_once('|') {
        Some((system, value)) => (Some(system.to_owned()), value.to_owned()),
        None => (None, value.clone()),
    });
    let name = params.get("name").map(|name| name.to_lowercase());

    let patients = directory::patients(&state.db.lock())?;
    let matches: Vec<serde_json::Value> = patients
        .iter()
        .filter(|patient| match &access {
            Access::AllPatients => true,
            Access::Patient(allowed) => &patient.id == allowed,
        })
        .filter(|patient| params.get("_id").is_none_or(|id| &patient.id == id))
        .filter(|patient| {
            name.as_ref().is_none_or(|name| {
                patient.family.to_lowercase().starts_with(name)
                    || patient.given.to_lowercase().starts_with(name)
            })
        })
        .filter(|patient| {
            identifier.as_ref().is_none_or(|(system, value)| {
                system.as_ref().is_none_or(|system| system == MRN_SYSTEM) && &patient.mrn == value
            })
        })
        .filter(|patient| birth_date.as_ref().is_none_or(|date| &patient.birth_date == date))
        .map(patient_resource)
        .collect();

    let self_url = match &query {
        Some(query) => format!("{}/Patient?{query}", state.urls.fhir),
        None => format!("{}/Patient", state.urls.fhir),
    };
    Ok(fhir_json(StatusCode::OK, &searchset(&self_url, &state.urls.fhir, matches)))
}

fn parse_birthdate(value: &str) -> Result<String, FhirError> {
    let date = value.strip_prefix("eq").unwrap_or(value);
    if date.parse::<jiff::civil::Date>().is_err() || date.len() != 10 {
        return Err(FhirError::invalid(format!(
            "birthdate '{value}' is not supported; use a full date YYYY-MM-DD, optionally prefixed with eq"
        )));
    }
    Ok(date.to_owned())
}

/// Practitioner read. Besides a Practitioner scope, the `fhirUser` scope
/// lets a token read its own user's resource.
pub(super) async fn read_practitioner(
    State(state): State<SharedState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let own_resource = claims.scopes.contains(&Scope::FhirUser)
        && claims.fhir_user == format!("{}/Practitioner/{id}", state.urls.fhir);
    if !own_resource {
        access(&claims, "Practitioner", Permission::Read)?;
    }

    let practitioner = directory::practitioner(&state.db.lock(), &id)?
        .ok_or_else(|| FhirError::not_found(format!("Practitioner/{id} does not exist")))?;
    Ok(fhir_json(StatusCode::OK, &practitioner_resource(&practitioner)))
}
