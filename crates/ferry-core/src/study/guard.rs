//! The patient guard: the study's Patient ID, name and birth date compared
//! with the FHIR R4 `Patient` the user chose, before any byte is sent.
//!
//! Rules, per study row of a scan:
//! - Patient ID (0010,0020) must be present and equal, after trimming, to the
//!   `value` of one of the Patient's `identifier`s.
//! - Patient's Name, when both sides have one, must match one of the
//!   Patient's `name`s: family names equal and given names equal or one a
//!   prefix of the other, ignoring case, accents and punctuation. Any of the
//!   PN groups (alphabetic, ideographic, phonetic) may match.
//! - Patient's Birth Date, when both sides have one, must be equal; a
//!   partial FHIR date (`1970` or `1970-01`) must be a prefix of the DICOM date.
//!
//! Missing names and birth dates do not block, because a missing value
//! contradicts nothing; a missing Patient ID blocks, because the ID is the
//! one attribute that identifies the patient.

use serde::{Deserialize, Serialize};

use super::text::{fold_name, fold_name_transliterated};
use super::{Patient, Study, StudyScan};

/// A FHIR R4 `Patient` resource, reduced to what the guard compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FhirPatient {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default, rename = "identifier")]
    pub identifiers: Vec<FhirIdentifier>,
    #[serde(default, rename = "name")]
    pub names: Vec<FhirHumanName>,
    #[serde(default)]
    pub birth_date: Option<String>,
}

/// A FHIR `Identifier` (system and value only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FhirIdentifier {
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

/// A FHIR `HumanName` (family, given and text only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FhirHumanName {
    #[serde(default)]
    pub family: Option<String>,
    #[serde(default)]
    pub given: Vec<String>,
    #[serde(default)]
    pub text: Option<String>,
}

impl FhirPatient {
    /// Reads a `Patient` from FHIR JSON, rejecting other resource types.
    pub fn from_json(resource: &serde_json::Value) -> Result<FhirPatient, GuardError> {
        let resource_type = resource.get("resourceType").and_then(|v| v.as_str());
        if resource_type != Some("Patient") {
            return Err(GuardError::NotAPatient {
                resource_type: resource_type.unwrap_or("(none)").to_owned(),
            });
        }
        serde_json::from_value(resource.clone()).map_err(GuardError::InvalidPatient)
    }

    /// `Patient/{id}`, the form FHIR references use.
    pub fn reference(&self) -> String {
        match &self.id {
            Some(id) => format!("Patient/{id}"),
            None => "the chosen Patient".to_owned(),
        }
    }
}

/// The guard's finding for a scan and a chosen patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every study belongs to the chosen patient.
    Match,
    /// One patient, but not the chosen one; each reason names the attribute,
    /// its value and the study and series carrying it.
    Mismatch { reasons: Vec<String> },
    /// The scan contains more than one patient. `reasons` lists the mismatches
    /// with the chosen patient, if any.
    MultiplePatients {
        patients: Vec<PatientGroup>,
        reasons: Vec<String>,
    },
    /// The scan contains no valid instance, so there is nothing to upload.
    NoInstances,
}

impl Verdict {
    /// True unless the verdict is [`Verdict::Match`].
    pub fn blocks_upload(&self) -> bool {
        !matches!(self, Verdict::Match)
    }

    /// Returns the reasons for a blocking verdict as sentences for messages.
    pub fn reasons(&self) -> Vec<String> {
        match self {
            Verdict::Match => Vec::new(),
            Verdict::Mismatch { reasons } => reasons.clone(),
            Verdict::MultiplePatients { patients, reasons } => {
                let mut all = vec![format!(
                    "the upload contains {} different patients",
                    patients.len()
                )];
                all.extend(reasons.iter().cloned());
                all
            }
            Verdict::NoInstances => vec!["the upload contains no valid DICOM instance".to_owned()],
        }
    }
}

/// One distinct patient of a scan and where it appears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatientGroup {
    pub patient: Patient,
    pub study_instance_uids: Vec<String>,
    pub series_instance_uids: Vec<String>,
    /// Whether this patient matches the chosen FHIR `Patient`.
    pub matches_chosen: bool,
}

/// The user's explicit decision to proceed despite a blocking verdict: who
/// decided, why, and which series were left out of the upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The person confirming, e.g. the logged-in user's FHIR reference.
    pub by: String,
    pub reason: String,
    /// Series Instance UIDs excluded from the upload.
    #[serde(default)]
    pub excluded_series: Vec<String>,
}

/// The record of a guard decision, for the signed transfer log and the
/// grant request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// `Patient/{id}` of the chosen patient.
    pub patient: String,
    /// Verdict on the full scan.
    pub initial: Verdict,
    /// Verdict after the excluded series were removed.
    #[serde(rename = "final")]
    pub final_verdict: Verdict,
    pub confirmation: Option<Confirmation>,
    /// True when the final verdict blocks and the confirmation overrode it.
    pub overridden: bool,
}

/// A scan cleared for upload: the instances to send and the decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cleared {
    pub scan: StudyScan,
    pub decision: Decision,
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(
        "upload blocked by the patient guard: {}; exclude the other series or confirm the mismatch with a reason",
        reasons.join("; ")
    )]
    Blocked { reasons: Vec<String> },
    #[error("nothing to upload: the scan contains no valid DICOM instance after exclusions")]
    NothingToUpload,
    #[error("confirmation is missing `{field}`; say who confirms and why")]
    IncompleteConfirmation { field: &'static str },
    #[error("excluded series {uid} is not in the scan; pick a Series Instance UID from the table")]
    UnknownSeries { uid: String },
    #[error("expected a FHIR Patient resource, got resourceType {resource_type}")]
    NotAPatient { resource_type: String },
    #[error("invalid FHIR Patient resource")]
    InvalidPatient(#[source] serde_json::Error),
}

/// Compares every study of the scan with the chosen patient.
pub fn check_patient(scan: &StudyScan, chosen: &FhirPatient) -> Verdict {
    if scan.instances.is_empty() {
        return Verdict::NoInstances;
    }

    let mut reasons = Vec::new();
    let mut groups: Vec<(PatientKey, PatientGroup)> = Vec::new();
    for study in &scan.studies {
        let study_reasons = study_mismatches(study, chosen);
        let matches_chosen = study_reasons.is_empty();
        reasons.extend(study_reasons);

        let key = PatientKey::of(&study.patient);
        let series_uids = study.series.iter().map(|series| series.uid.clone());
        match groups.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, group)) => {
                group
                    .study_instance_uids
                    .push(study.study_instance_uid.clone());
                group.series_instance_uids.extend(series_uids);
                group.matches_chosen &= matches_chosen;
            }
            None => groups.push((
                key,
                PatientGroup {
                    patient: study.patient.clone(),
                    study_instance_uids: vec![study.study_instance_uid.clone()],
                    series_instance_uids: series_uids.collect(),
                    matches_chosen,
                },
            )),
        }
    }

    if groups.len() > 1 {
        let patients = groups.into_iter().map(|(_, group)| group).collect();
        return Verdict::MultiplePatients { patients, reasons };
    }
    if !reasons.is_empty() {
        return Verdict::Mismatch { reasons };
    }
    Verdict::Match
}

/// Applies a confirmation's exclusions, checks the rest, and clears the scan
/// for upload when it matches or when the confirmation overrides the verdict.
pub fn decide(
    scan: &StudyScan,
    chosen: &FhirPatient,
    confirmation: Option<&Confirmation>,
) -> Result<Cleared, GuardError> {
    if let Some(confirmation) = confirmation {
        if confirmation.by.trim().is_empty() {
            return Err(GuardError::IncompleteConfirmation { field: "by" });
        }
        if confirmation.reason.trim().is_empty() {
            return Err(GuardError::IncompleteConfirmation { field: "reason" });
        }
        if let Some(uid) = confirmation
            .excluded_series
            .iter()
            .find(|uid| !scan.has_series(uid))
        {
            return Err(GuardError::UnknownSeries { uid: uid.clone() });
        }
    }

    let initial = check_patient(scan, chosen);
    let kept = match confirmation {
        Some(confirmation) => scan.without_series(&confirmation.excluded_series),
        None => scan.clone(),
    };
    let final_verdict = check_patient(&kept, chosen);

    if final_verdict == Verdict::NoInstances {
        return Err(GuardError::NothingToUpload);
    }
    if final_verdict.blocks_upload() && confirmation.is_none() {
        return Err(GuardError::Blocked {
            reasons: final_verdict.reasons(),
        });
    }

    let decision = Decision {
        patient: chosen.reference(),
        overridden: final_verdict.blocks_upload(),
        initial,
        final_verdict,
        confirmation: confirmation.cloned(),
    };
    Ok(Cleared {
        scan: kept,
        decision,
    })
}

/// Identity of a patient within one scan: ID, folded name and birth date.
#[derive(Debug, PartialEq, Eq)]
struct PatientKey {
    id: String,
    name: String,
    birth_date: String,
}

impl PatientKey {
    fn of(patient: &Patient) -> PatientKey {
        PatientKey {
            id: patient.id.as_deref().unwrap_or("").trim().to_owned(),
            name: fold_name(patient.name.as_deref().unwrap_or("")),
            birth_date: patient.birth_date.clone().unwrap_or_default(),
        }
    }
}

fn study_mismatches(study: &Study, chosen: &FhirPatient) -> Vec<String> {
    let mut reasons = Vec::new();
    let place = format!(
        "in study {} (series {})",
        study.study_instance_uid,
        study
            .series
            .iter()
            .map(|series| series.uid.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let reference = chosen.reference();
    let patient = &study.patient;

    match patient.id.as_deref().map(str::trim) {
        None | Some("") => reasons.push(format!(
            "Patient ID is missing {place}, so it cannot be matched to {reference}"
        )),
        Some(id) => {
            let known = chosen
                .identifiers
                .iter()
                .any(|identifier| identifier.value.as_deref().map(str::trim) == Some(id));
            if !known {
                reasons.push(format!(
                    "Patient ID {id} {place} does not match any identifier of {reference}"
                ));
            }
        }
    }

    if let Some(name) = &patient.name
        && !chosen.names.is_empty()
        && !name_matches(name, &chosen.names)
    {
        reasons.push(format!(
            "Patient's Name {name} {place} does not match any name of {reference}"
        ));
    }

    if let (Some(dicom_date), Some(fhir_date)) = (&patient.birth_date, &chosen.birth_date)
        && !dicom_date.starts_with(fhir_date.trim())
    {
        reasons.push(format!(
            "Patient's Birth Date {dicom_date} {place} differs from {reference}'s birthDate {fhir_date}"
        ));
    }

    reasons
}

/// Compares a DICOM PN value (`Family^Given^Middle^Prefix^Suffix`, groups
/// separated by `=`) with FHIR `HumanName`s.
fn name_matches(person_name: &str, names: &[FhirHumanName]) -> bool {
    let folds: [fn(&str) -> String; 2] = [fold_name, fold_name_transliterated];
    person_name
        .split('=')
        .filter(|group| !group.trim().is_empty())
        .any(|group| {
            let mut components = group.split('^');
            let family = components.next().unwrap_or("");
            let given: Vec<&str> = components.take(2).collect();
            let given = given.join(" ");

            names.iter().any(|name| {
                folds
                    .iter()
                    .any(|fold| human_name_matches(fold, family, &given, name))
            })
        })
}

fn human_name_matches(
    fold: &fn(&str) -> String,
    family: &str,
    given: &str,
    name: &FhirHumanName,
) -> bool {
    let dicom_family = fold(family);
    let dicom_given = fold(given);

    let Some(fhir_family) = name.family.as_deref() else {
        // A name with text only: the same words in any order.
        let Some(text) = name.text.as_deref() else {
            return false;
        };
        let mut fhir_words: Vec<String> = fold(text).split(' ').map(str::to_owned).collect();
        let mut dicom_words: Vec<String> = format!("{dicom_family} {dicom_given}")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        fhir_words.sort();
        dicom_words.sort();
        return !dicom_words.is_empty() && fhir_words == dicom_words;
    };

    if fold(fhir_family) != dicom_family {
        return false;
    }
    let fhir_given = fold(&name.given.join(" "));
    if dicom_given.is_empty() || fhir_given.is_empty() {
        return true;
    }
    let dicom_words: Vec<&str> = dicom_given.split(' ').collect();
    let fhir_words: Vec<&str> = fhir_given.split(' ').collect();
    let shared = dicom_words.len().min(fhir_words.len());
    dicom_words[..shared] == fhir_words[..shared]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(family: &str, given: &[&str]) -> FhirHumanName {
        FhirHumanName {
            family: Some(family.to_owned()),
            given: given.iter().map(|g| (*g).to_owned()).collect(),
            text: None,
        }
    }

    #[test]
    fn pn_matches_fhir_name_ignoring_case_and_accents() {
        let names = [name("Müller", &["Jürgen"])];
        assert!(name_matches("MULLER^JURGEN", &names));
        assert!(name_matches("Mueller^Juergen", &names));
        assert!(name_matches("Müller^Jürgen^Hans", &names));
        assert!(!name_matches("Müller^Anna", &names));
        assert!(!name_matches("Miller^Jürgen", &names));
    }

    #[test]
    fn ideographic_group_matches_japanese_name() {
        let names = [name("山田", &["太郎"])];
        assert!(name_matches("Yamada^Tarou=山田^太郎=やまだ^たろう", &names));
        assert!(!name_matches("Yamada^Tarou=田中^太郎", &names));
    }

    #[test]
    fn text_only_name_matches_in_any_order() {
        let names = [FhirHumanName {
            family: None,
            given: Vec::new(),
            text: Some("Jürgen Müller".to_owned()),
        }];
        assert!(name_matches("Müller^Jürgen", &names));
    }

    #[test]
    fn fhir_patient_is_read_from_json() {
        let resource = serde_json::json!({
            "resourceType": "Patient",
            "id": "pat-001",
            "identifier": [{"system": "urn:mrn", "value": "12345"}],
            "name": [{"family": "Müller", "given": ["Jürgen"]}],
            "birthDate": "1970-01-31"
        });
        let patient = FhirPatient::from_json(&resource).unwrap();
        assert_eq!(patient.reference(), "Patient/pat-001");
        assert_eq!(patient.identifiers[0].value.as_deref(), Some("12345"));
        assert_eq!(patient.birth_date.as_deref(), Some("1970-01-31"));

        let observation = serde_json::json!({"resourceType": "Observation"});
        assert!(matches!(
            FhirPatient::from_json(&observation),
            Err(GuardError::NotAPatient { .. })
        ));
    }
}
