//! Export for auditors: FHIR R4 `AuditEvent` resources and a verification
//! bundle.
//!
//! The `AuditEvent`s follow the shape of the IHE Basic Audit Log Patterns
//! (BALP): a download is a DICOM "Export" event (DCM 110106, action `R`),
//! an upload a DICOM "Import" event (DCM 110107, action `C`), both seen from
//! the platform whose data leaves or enters its storage; sign-in and
//! sign-out are "User Authentication" (DCM 110114) with subtype "Login"
//! (110122) or "Logout" (110123). The user is the requesting agent, the
//! workstation is a second agent and the observer, and the patient and the
//! object are entities. Every event also names its log line (seq and
//! SHA-256) so an auditor can match it to a verified log.

use std::path::Path;

use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::LogError;
use super::checkpoint::Checkpoint;
use super::record::{Direction, EntryRecord, Event, Record, line_hash};
use super::verify::{EpochPublicKey, ExportedHead, VerifyOptions};

/// Format name of a [`VerificationBundle`].
pub const BUNDLE_FORMAT: &str = "ferry-transfer-log-bundle/1";

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const EVENT_SYSTEM: &str = "urn:ferry:transfer-log:event";
const DEVICE_SYSTEM: &str = "urn:ferry:device";
const CORRELATION_SYSTEM: &str = "urn:ferry:correlation-id";
const SUBJECT_SYSTEM: &str = "urn:ferry:token-subject";

/// Public material with which [`super::verify`] checks an exported log on
/// another machine.
///
/// The epoch keys, checkpoints and gateway keys are copies of what the log
/// itself holds. They let an auditor detect a different copy of the file;
/// trust in them comes from comparing `device_public_key` with the
/// gateway's record of the device (the device key of its checkpoints) and
/// the `kid`s of `gateway_keys` with the gateway's published JWKS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationBundle {
    pub format: String,
    pub log_id: Uuid,
    pub device: String,
    /// Hex Ed25519 public key of epoch 0.
    pub device_public_key: String,
    pub epochs: Vec<EpochPublicKey>,
    /// Countersigned checkpoints recorded in the log.
    pub checkpoints: Vec<Checkpoint>,
    /// Public ES256 keys (JWKs) of the gateway that signed the checkpoints,
    /// as recorded with them.
    #[serde(default)]
    pub gateway_keys: Vec<Jwk>,
    /// The last record at export time.
    pub head: ExportedHead,
}

impl VerificationBundle {
    /// Options that check a log against this bundle, with the bundle's
    /// gateway keys. An auditor who fetched the gateway's JWKS replaces
    /// `gateway_keys` with it.
    pub fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            device_keys: vec![self.device_public_key.clone()],
            epoch_keys: self.epochs.clone(),
            checkpoints: self.checkpoints.clone(),
            gateway_keys: self.gateway_keys.clone(),
            expected_head: Some(self.head.clone()),
        }
    }
}

/// Reads the intact records of a log with their line hashes, skipping lines
/// that are not records. Use [`super::verify`] to check them first.
fn read_records(path: &Path) -> Result<Vec<(Record, String)>, LogError> {
    let bytes = std::fs::read(path).map_err(|source| LogError::io("read the log", path, source))?;
    let mut records = Vec::new();
    for line in bytes.split_inclusive(|byte| *byte == b'\n') {
        let Some(line) = line.strip_suffix(b"\n") else { continue };
        if let Ok(record) = serde_json::from_slice::<Record>(line) {
            records.push((record, line_hash(line)));
        }
    }
    Ok(records)
}

/// Builds the verification bundle of the log at `path`.
pub fn export_bundle(path: impl AsRef<Path>) -> Result<VerificationBundle, LogError> {
    let path = path.as_ref();
    let records = read_records(path)?;
    let Some((Record::Genesis(genesis), _)) = records.first() else {
        return Err(LogError::NotALog { path: path.to_path_buf(), reason: "the first line is not a genesis record".into() });
    };

    let mut epochs = vec![EpochPublicKey { epoch: 0, public_key: genesis.public_key.clone(), since_seq: 0 }];
    let mut checkpoints = Vec::new();
    for (record, _) in &records {
        match record {
            Record::Epoch(epoch) => epochs.push(EpochPublicKey {
                epoch: epoch.epoch,
                public_key: epoch.public_key.clone(),
                since_seq: epoch.seq,
            }),
            Record::Checkpoint(recorded) => checkpoints.push(recorded.checkpoint.clone()),
            _ => {}
        }
    }
    let (last, last_hash) = records.last().expect("the genesis record is present");
    let gateway_keys = recorded_gateway_keys(&checkpoints);

    Ok(VerificationBundle {
        format: BUNDLE_FORMAT.to_owned(),
        log_id: genesis.log_id,
        device: genesis.device.clone(),
        device_public_key: genesis.public_key.clone(),
        epochs,
        checkpoints,
        gateway_keys,
        head: ExportedHead { seq: last.seq(), hash: last_hash.clone() },
    })
}

/// The distinct gateway keys recorded with `checkpoints`, one per `kid`.
pub fn recorded_gateway_keys(checkpoints: &[Checkpoint]) -> Vec<Jwk> {
    let mut keys: Vec<Jwk> = Vec::new();
    for key in checkpoints.iter().filter_map(|checkpoint| checkpoint.gateway_key.as_ref()) {
        if !keys.iter().any(|known| known.common.key_id == key.common.key_id) {
            keys.push(key.clone());
        }
    }
    keys
}

/// Converts the entries of the log at `path` into NDJSON of FHIR R4
/// `AuditEvent` resources, one per line.
pub fn export_fhir(path: impl AsRef<Path>) -> Result<String, LogError> {
    let path = path.as_ref();
    let records = read_records(path)?;
    let Some((Record::Genesis(genesis), _)) = records.first() else {
        return Err(LogError::NotALog { path: path.to_path_buf(), reason: "the first line is not a genesis record".into() });
    };

    let mut output = String::new();
    for (record, hash) in &records {
        let Record::Entry(entry) = record else { continue };
        let event = audit_event(genesis.log_id, entry, hash);
        output.push_str(&serde_json::to_string(&event).expect("JSON values serialize"));
        output.push('\n');
    }
    Ok(output)
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({ "system": system, "code": code, "display": display })
}

/// Type, subtype and action of an entry, per DICOM PS3.15 A.5 and BALP.
fn classify(entry: &EntryRecord) -> (Value, Value, &'static str) {
    let event_coding = coding(EVENT_SYSTEM, entry.event.name(), entry.event.name());
    match (&entry.event, entry.direction) {
        (Event::SignedIn, _) => (
            coding(DCM, "110114", "User Authentication"),
            coding(DCM, "110122", "Login"),
            "E",
        ),
        (Event::SignedOut, _) => (
            coding(DCM, "110114", "User Authentication"),
            coding(DCM, "110123", "Logout"),
            "E",
        ),
        (Event::LogVerified, _) => (coding(DCM, "110100", "Application Activity"), event_coding, "E"),
        (Event::PatientMismatchConfirmed { .. }, _) => (coding(DCM, "110110", "Patient Record"), event_coding, "E"),
        (_, Some(Direction::Upload)) => (coding(DCM, "110107", "Import"), event_coding, "C"),
        (_, Some(Direction::Download)) => (coding(DCM, "110106", "Export"), event_coding, "R"),
        (_, None) => (coding(DCM, "110100", "Application Activity"), event_coding, "E"),
    }
}

/// FHIR R4 `AuditEvent.outcome`: 0 success, 4 minor failure, 8 serious
/// failure.
fn outcome(event: &Event) -> (&'static str, Option<&str>) {
    match event {
        Event::Failed { reason } => ("8", Some(reason)),
        Event::Cancelled => ("4", Some("cancelled by the user")),
        _ => ("0", None),
    }
}

fn audit_event(log_id: Uuid, entry: &EntryRecord, line_sha256: &str) -> Value {
    let (event_type, subtype, action) = classify(entry);
    let (outcome_code, outcome_description) = outcome(&entry.event);
    let device_identifier = json!({ "system": DEVICE_SYSTEM, "value": entry.device });

    let mut agents = Vec::new();
    if let Some(actor) = &entry.actor {
        let mut who = json!({ "identifier": { "system": SUBJECT_SYSTEM, "value": actor.subject } });
        if let Some(fhir_user) = &actor.fhir_user {
            who["reference"] = json!(fhir_user);
        }
        agents.push(json!({
            "type": { "coding": [coding("http://terminology.hl7.org/CodeSystem/extra-security-role-type", "humanuser", "human user")] },
            "who": who,
            "requestor": true,
        }));
    }
    let device_role = match entry.direction {
        Some(Direction::Upload) => coding(DCM, "110153", "Source Role ID"),
        Some(Direction::Download) => coding(DCM, "110152", "Destination Role ID"),
        None => coding(DCM, "110150", "Application"),
    };
    agents.push(json!({
        "type": { "coding": [device_role] },
        "who": { "identifier": device_identifier },
        "requestor": false,
    }));

    let mut entities = Vec::new();
    if let Some(patient) = &entry.patient {
        entities.push(json!({
            "what": { "reference": patient },
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"),
            "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
        }));
    }
    if entry.object.is_some() || entry.correlation_id.is_some() || entry.file_name.is_some() {
        entities.push(object_entity(entry));
    }
    entities.push(json!({
        "what": { "identifier": { "system": format!("urn:ferry:transfer-log:{log_id}"), "value": entry.seq.to_string() } },
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
        "description": "transfer log entry",
        "detail": [{ "type": "sha256", "valueString": line_sha256 }],
    }));

    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": format!("{log_id}-{}", entry.seq),
        "type": event_type,
        "subtype": [subtype],
        "action": action,
        "recorded": entry.time.to_string(),
        "outcome": outcome_code,
        "agent": agents,
        "source": {
            "site": "ferry",
            "observer": { "identifier": { "system": DEVICE_SYSTEM, "value": entry.device } },
            "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "1", "End-user display device, diagnostic display")],
        },
        "entity": entities,
    });
    if let Some(description) = outcome_description {
        event["outcomeDesc"] = json!(description);
    }
    event
}

/// The transferred object: its FHIR reference, the correlation id as its
/// identifier, and the file name, size, SHA-256 and gateway receipt as
/// details.
fn object_entity(entry: &EntryRecord) -> Value {
    let mut what = json!({});
    if let Some(object) = &entry.object {
        what["reference"] = json!(object);
    }
    if let Some(correlation_id) = &entry.correlation_id {
        what["identifier"] = json!({ "system": CORRELATION_SYSTEM, "value": correlation_id });
    }

    let mut details = Vec::new();
    if let Some(file_name) = &entry.file_name {
        details.push(json!({ "type": "file-name", "valueString": file_name }));
    }
    if let Some(size) = entry.size {
        details.push(json!({ "type": "size", "valueString": size.to_string() }));
    }
    if let Some(sha256) = &entry.sha256 {
        details.push(json!({ "type": "sha256", "valueString": sha256 }));
    }
    if let Some(receipt) = &entry.receipt {
        let encoded = base64::engine::general_purpose::STANDARD.encode(receipt.to_string());
        details.push(json!({ "type": "gateway-receipt", "valueBase64Binary": encoded }));
    }

    let mut entity = json!({
        "what": what,
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
        "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "4", "Domain Resource"),
    });
    if !details.is_empty() {
        entity["detail"] = json!(details);
    }
    entity
}
