//! The audit trail: FHIR R4 `AuditEvent` resources for every authorization
//! decision, URL issuance, object access seen by the embedded store,
//! completion, abort and expiry.
//!
//! Each event is appended as one line to `{data_dir}/audit.ndjson` and
//! indexed by correlation id in the database, so `GET /grant/v1/audit`
//! returns the events of one transfer. The events follow IHE Basic Audit Log
//! Patterns (BALP) where a pattern fits: type `rest` with the FHIR
//! interaction as subtype for API decisions, DICOM 110106 (Export) and
//! 110107 (Import) for data leaving or entering, and the correlation id as a
//! BALP `XrequestId` entity. A Ferry-specific subtype names the step.
//!
//! Records hold user ids, patient ids, object keys and rules, never a token
//! or a signed URL's query string.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::db::{Db, DbError};
use crate::policy::Rule;

/// File name of the audit log inside the data folder.
pub const AUDIT_FILE: &str = "audit.ndjson";

/// Code system of Ferry's step subtypes.
pub const STEP_SYSTEM: &str = "urn:ferry:audit-step";

/// The step of a transfer an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A policy decision on an upload grant request.
    AuthorizeUpload,
    /// A policy decision on part URLs, completion or state of an upload.
    AuthorizeUploadUse,
    /// A policy decision on a download grant request.
    AuthorizeDownload,
    /// Presigned `UploadPart` URLs issued.
    PartUrls,
    /// A presigned `GET` URL issued.
    DownloadUrl,
    /// A request the embedded store received for an object.
    StoreAccess,
    /// An upload completed and its `DocumentReference` created.
    Complete,
    /// A completion rejected because the parts or the hash did not match.
    CompleteRejected,
    /// An upload aborted by its client.
    Abort,
    /// An abandoned upload aborted by the cleanup task.
    Expire,
    /// A transfer-log checkpoint countersigned.
    Checkpoint,
    /// A deny-list entry added or removed.
    DenyList,
    /// The user confirmed an upload although the file names another patient.
    PatientMismatchConfirmed,
}

impl Step {
    pub fn code(self) -> &'static str {
        match self {
            Step::AuthorizeUpload => "authorize-upload",
            Step::AuthorizeUploadUse => "authorize-upload-use",
            Step::AuthorizeDownload => "authorize-download",
            Step::PartUrls => "part-urls",
            Step::DownloadUrl => "download-url",
            Step::StoreAccess => "store-access",
            Step::Complete => "complete",
            Step::CompleteRejected => "complete-rejected",
            Step::Abort => "abort",
            Step::Expire => "expire",
            Step::Checkpoint => "checkpoint",
            Step::DenyList => "deny-list",
            Step::PatientMismatchConfirmed => "patient-mismatch-confirmed",
        }
    }

    /// The event `type` coding: BALP `rest` for API interactions, DICOM
    /// Import/Export where data enters or leaves.
    fn event_type(self) -> Value {
        match self {
            Step::PartUrls | Step::Complete => json!({
                "system": "http://dicom.nema.org/resources/ontology/DCM",
                "code": "110107",
                "display": "Import",
            }),
            Step::DownloadUrl => json!({
                "system": "http://dicom.nema.org/resources/ontology/DCM",
                "code": "110106",
                "display": "Export",
            }),
            _ => json!({
                "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                "code": "rest",
                "display": "Restful Operation",
            }),
        }
    }
}

/// The FHIR `AuditEvent.action` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Create,
    Read,
    Update,
    Delete,
    Execute,
}

impl AuditAction {
    fn code(self) -> &'static str {
        match self {
            AuditAction::Create => "C",
            AuditAction::Read => "R",
            AuditAction::Update => "U",
            AuditAction::Delete => "D",
            AuditAction::Execute => "E",
        }
    }

    /// The FHIR restful interaction for the BALP subtype.
    fn interaction(self) -> &'static str {
        match self {
            AuditAction::Create => "create",
            AuditAction::Read => "read",
            AuditAction::Update => "update",
            AuditAction::Delete => "delete",
            AuditAction::Execute => "operation",
        }
    }
}

/// One event to record, before it becomes an `AuditEvent`.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub step: Step,
    pub action: AuditAction,
    /// True when the request was allowed or succeeded.
    pub success: bool,
    /// The policy rule that decided, for authorization decisions.
    pub rule: Option<Rule>,
    /// A sentence on the outcome; never a token or a signed URL.
    pub detail: Option<String>,
    pub correlation_id: String,
    /// The token's `sub`, or `None` for the gateway itself (cleanup).
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub patient: Option<String>,
    /// Store object key.
    pub object: Option<String>,
    /// Other resources involved, e.g. `DocumentReference/doc-1`.
    pub references: Vec<String>,
    /// The observer that saw the event: `ferry-gateway` or `ferry-store`.
    pub observer: &'static str,
}

impl AuditRecord {
    pub fn new(step: Step, action: AuditAction, correlation_id: impl Into<String>) -> AuditRecord {
        AuditRecord {
            step,
            action,
            success: true,
            rule: None,
            detail: None,
            correlation_id: correlation_id.into(),
            subject: None,
            client_id: None,
            patient: None,
            object: None,
            references: Vec::new(),
            observer: "ferry-gateway",
        }
    }

    /// Renders the record as a FHIR R4 `AuditEvent` with id `id`.
    pub fn to_fhir(&self, id: &str, recorded: Timestamp) -> Value {
        let mut agents = Vec::new();
        match &self.subject {
            Some(subject) => {
                let mut agent = json!({
                    "type": { "coding": [{
                        "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                        "code": "humanuser",
                        "display": "human user",
                    }]},
                    "who": { "identifier": { "value": subject } },
                    "requestor": true,
                });
                if let Some(rule) = self.rule {
                    agent["policy"] = json!([format!("urn:ferry:policy:{rule}")]);
                }
                agents.push(agent);
                if let Some(client_id) = &self.client_id {
                    agents.push(json!({
                        "type": { "coding": [{
                            "system": "http://dicom.nema.org/resources/ontology/DCM",
                            "code": "110150",
                            "display": "Application",
                        }]},
                        "who": { "identifier": { "value": client_id } },
                        "requestor": false,
                    }));
                }
            }
            None => {
                let mut agent = json!({
                    "type": { "coding": [{
                        "system": "http://dicom.nema.org/resources/ontology/DCM",
                        "code": "110150",
                        "display": "Application",
                    }]},
                    "who": { "display": self.observer },
                    "requestor": true,
                });
                if let Some(rule) = self.rule {
                    agent["policy"] = json!([format!("urn:ferry:policy:{rule}")]);
                }
                agents.push(agent);
            }
        }

        let mut entities = vec![json!({
            "what": { "identifier": {
                "type": { "coding": [{
                    "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
                    "code": "XrequestId",
                }]},
                "value": self.correlation_id,
            }},
        })];
        if let Some(patient) = &self.patient {
            entities.push(json!({
                "what": { "reference": format!("Patient/{patient}") },
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "1",
                    "display": "Person",
                },
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }));
        }
        if let Some(object) = &self.object {
            entities.push(json!({
                "what": { "identifier": { "system": "urn:ferry:object", "value": object } },
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
            }));
        }
        for reference in &self.references {
            entities.push(json!({
                "what": { "reference": reference },
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                    "code": "2",
                    "display": "System Object",
                },
            }));
        }

        let mut event = json!({
            "resourceType": "AuditEvent",
            "id": id,
            "type": self.step.event_type(),
            "subtype": [
                {
                    "system": "http://hl7.org/fhir/restful-interaction",
                    "code": self.action.interaction(),
                },
                { "system": STEP_SYSTEM, "code": self.step.code() },
            ],
            "action": self.action.code(),
            "recorded": recorded.to_string(),
            // FHIR R4 audit-event-outcome: 0 success, 4 minor failure
            // (the request was rejected, nothing failed).
            "outcome": if self.success { "0" } else { "4" },
            "agent": agents,
            "source": {
                "observer": { "display": self.observer },
                "type": [{
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }],
            },
            "entity": entities,
        });
        if let Some(detail) = &self.detail {
            event["outcomeDesc"] = json!(detail);
        }
        event
    }
}

/// Errors writing or reading the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "failed to open the audit log {path}: {source}; check that the data folder is writable"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to append to the audit log {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] DbError),
}

/// The audit trail: NDJSON file plus database index.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<AuditInner>,
}

struct AuditInner {
    path: PathBuf,
    file: Mutex<File>,
    db: Db,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl AuditLog {
    /// Opens `{data_dir}/audit.ndjson` for appending.
    pub fn open(data_dir: &Path, db: Db) -> Result<AuditLog, AuditError> {
        let path = data_dir.join(AUDIT_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| AuditError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(AuditLog {
            inner: Arc::new(AuditInner {
                path,
                file: Mutex::new(file),
                db,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends `record` to the file and the index, returning the event.
    ///
    /// Runs synchronously: one short write and one insert. The file is
    /// written first, so the index never names an event the file lacks.
    pub fn record(&self, record: &AuditRecord) -> Result<Value, AuditError> {
        let id = uuid::Uuid::new_v4().to_string();
        let recorded = Timestamp::now();
        let event = record.to_fhir(&id, recorded);
        let line = event.to_string();

        {
            let mut file = self
                .inner
                .file
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let write_error = |source| AuditError::Write {
                path: self.inner.path.clone(),
                source,
            };
            file.write_all(line.as_bytes()).map_err(write_error)?;
            file.write_all(b"\n").map_err(write_error)?;
            file.flush().map_err(write_error)?;
        }

        self.inner
            .db
            .lock()
            .execute(
                "INSERT INTO audit_events (id, correlation_id, recorded_at, step, resource)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    id,
                    record.correlation_id,
                    recorded.as_millisecond(),
                    record.step.code(),
                    line
                ],
            )
            .map_err(DbError::from)?;

        tracing::debug!(
            step = record.step.code(),
            correlation_id = %record.correlation_id,
            success = record.success,
            rule = record.rule.map(Rule::as_str),
            "audit event recorded"
        );
        Ok(event)
    }

    /// Records an event, logging a failure instead of returning it: used
    /// where the request's own outcome must not depend on the audit write.
    pub fn record_or_log(&self, record: &AuditRecord) {
        if let Err(error) = self.record(record) {
            tracing::error!(%error, step = record.step.code(), correlation_id = %record.correlation_id, "failed to record an audit event");
        }
    }

    /// Returns the events of one correlation id, oldest first.
    pub fn events_for(&self, correlation_id: &str) -> Result<Vec<Value>, AuditError> {
        let connection = self.inner.db.lock();
        let mut statement = connection
            .prepare_cached(
                "SELECT resource FROM audit_events WHERE correlation_id = ?1 ORDER BY recorded_at, rowid",
            )
            .map_err(DbError::from)?;
        let rows = statement
            .query_map([correlation_id], |row| row.get::<_, String>(0))
            .map_err(DbError::from)?;
        let mut events = Vec::new();
        for row in rows {
            let text = row.map_err(DbError::from)?;
            // The index stores what this module serialized, so it parses.
            events.push(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        Ok(events)
    }

    /// Wraps events in a FHIR R4 `searchset` Bundle.
    pub fn bundle(events: Vec<Value>) -> Value {
        let entries: Vec<Value> = events
            .into_iter()
            .map(|event| {
                json!({
                    "fullUrl": format!("urn:uuid:{}", event["id"].as_str().unwrap_or_default()),
                    "resource": event,
                    "search": { "mode": "match" },
                })
            })
            .collect();
        json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": entries.len(),
            "entry": entries,
        })
    }
}

/// Migration that creates the audit index; appended to `db::MIGRATIONS`.
pub const MIGRATION: &str = r#"
    CREATE TABLE audit_events (
        id              TEXT PRIMARY KEY,
        correlation_id  TEXT NOT NULL,
        recorded_at     INTEGER NOT NULL,
        step            TEXT NOT NULL,
        resource        TEXT NOT NULL
    );
    CREATE INDEX audit_events_correlation ON audit_events(correlation_id);
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_names_rule_and_patient() {
        let mut record = AuditRecord::new(Step::AuthorizeUpload, AuditAction::Create, "corr-1");
        record.success = false;
        record.rule = Some(Rule::PatientCompartment);
        record.subject = Some("dr-rivera".into());
        record.patient = Some("pat-002".into());

        let event = record.to_fhir("evt-1", Timestamp::UNIX_EPOCH);

        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(event["outcome"], "4");
        assert_eq!(event["type"]["code"], "rest");
        assert_eq!(event["subtype"][1]["code"], "authorize-upload");
        assert_eq!(
            event["agent"][0]["policy"][0],
            "urn:ferry:policy:patient-compartment"
        );
        assert_eq!(event["entity"][0]["what"]["identifier"]["value"], "corr-1");
        assert_eq!(event["entity"][1]["what"]["reference"], "Patient/pat-002");
    }

    #[test]
    fn url_issuance_uses_dicom_import_and_export() {
        let upload = AuditRecord::new(Step::PartUrls, AuditAction::Create, "c")
            .to_fhir("a", Timestamp::UNIX_EPOCH);
        let download = AuditRecord::new(Step::DownloadUrl, AuditAction::Read, "c")
            .to_fhir("b", Timestamp::UNIX_EPOCH);

        assert_eq!(upload["type"]["code"], "110107");
        assert_eq!(download["type"]["code"], "110106");
        assert_eq!(download["action"], "R");
    }
}
