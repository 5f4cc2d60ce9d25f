//! The embedded store's access hook: the deny list checked on every
//! presigned request, and every request on an object audited.
//!
//! Presigned requests come from clients; the gateway's own header-signed
//! requests (list parts, complete, abort, read-back) are audited but never
//! denied, because aborting a denied upload must still delete its parts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ferry_store::{AccessDecision, AccessHook, AccessOutcome, AccessRequest};
use jiff::Timestamp;

use crate::audit::{AuditAction, AuditLog, AuditRecord, Step};
use crate::repository::GrantRepository;

/// Download grants whose URLs are still valid, by object key: the store
/// sees only the object, so a `GET` is attributed to the newest live grant.
#[derive(Debug, Default)]
pub struct IssuedDownloads {
    grants: Mutex<HashMap<String, Vec<(String, Timestamp)>>>,
}

impl IssuedDownloads {
    pub fn insert(&self, object_key: &str, correlation_id: &str, expires_at: Timestamp) {
        let now = Timestamp::now();
        let mut grants = self
            .grants
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        grants.retain(|_, live| {
            live.retain(|(_, expiry)| *expiry > now);
            !live.is_empty()
        });
        grants
            .entry(object_key.to_owned())
            .or_default()
            .push((correlation_id.to_owned(), expires_at));
    }

    /// The correlation id of the newest live download grant of `object_key`.
    pub fn newest(&self, object_key: &str) -> Option<String> {
        let now = Timestamp::now();
        let grants = self
            .grants
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        grants
            .get(object_key)?
            .iter()
            .rev()
            .find(|(_, expiry)| *expiry > now)
            .map(|(correlation_id, _)| correlation_id.clone())
    }
}

/// [`AccessHook`] that enforces the deny list and audits object access.
pub struct GrantAccessHook {
    repository: Arc<dyn GrantRepository>,
    audit: AuditLog,
    downloads: Arc<IssuedDownloads>,
}

impl GrantAccessHook {
    pub fn new(
        repository: Arc<dyn GrantRepository>,
        audit: AuditLog,
        downloads: Arc<IssuedDownloads>,
    ) -> GrantAccessHook {
        GrantAccessHook {
            repository,
            audit,
            downloads,
        }
    }
}

impl AccessHook for GrantAccessHook {
    fn authorize(&self, request: &AccessRequest) -> AccessDecision {
        if !request.presigned {
            return AccessDecision::Allow;
        }
        let Some(key) = request.key.as_deref() else {
            return AccessDecision::Allow;
        };

        let upload = match self.repository.upload_by_object(key) {
            Ok(upload) => upload,
            Err(error) => {
                tracing::error!(%error, "deny-list check failed; refusing the store request");
                return AccessDecision::Deny {
                    reason: "the deny list could not be read".into(),
                };
            }
        };
        let deny = match self.repository.deny_list() {
            Ok(deny) => deny,
            Err(error) => {
                tracing::error!(%error, "deny-list check failed; refusing the store request");
                return AccessDecision::Deny {
                    reason: "the deny list could not be read".into(),
                };
            }
        };
        let (subject, patient) = match &upload {
            // Uploads are the uploader's; downloads may be anyone's, so only
            // the patient and the object are checked for them.
            Some(upload) if request.method != "GET" && request.method != "HEAD" => {
                (Some(upload.subject.as_str()), Some(upload.patient.as_str()))
            }
            Some(upload) => (None, Some(upload.patient.as_str())),
            None => (None, None),
        };
        match deny.check(subject, patient, Some(key)) {
            Some(decision) => AccessDecision::Deny {
                reason: format!("deny list: {}", decision.rule()),
            },
            None => AccessDecision::Allow,
        }
    }

    fn record(&self, request: &AccessRequest, outcome: &AccessOutcome) {
        let Some(key) = request.key.as_deref() else {
            return;
        };
        let upload = self.repository.upload_by_object(key).ok().flatten();
        let is_read = request.method == "GET" || request.method == "HEAD";
        let correlation_id = match (&upload, is_read && request.presigned) {
            (_, true) => self
                .downloads
                .newest(key)
                .or_else(|| upload.as_ref().map(|upload| upload.correlation_id.clone())),
            (Some(upload), false) => Some(upload.correlation_id.clone()),
            (None, false) => None,
        };
        let Some(correlation_id) = correlation_id else {
            return;
        };

        let action = match request.method.as_str() {
            "GET" | "HEAD" => AuditAction::Read,
            "DELETE" => AuditAction::Delete,
            "PUT" if request.upload_id.is_some() => AuditAction::Create,
            "POST" => AuditAction::Create,
            _ => AuditAction::Update,
        };
        let mut record = AuditRecord::new(Step::StoreAccess, action, correlation_id);
        record.observer = "ferry-store";
        record.success = matches!(outcome, AccessOutcome::Responded { status } if *status < 400);
        record.patient = upload.as_ref().map(|upload| upload.patient.clone());
        record.object = Some(key.to_owned());
        let operation = request
            .operation
            .as_deref()
            .unwrap_or(request.method.as_str());
        let part = request
            .part_number
            .map(|number| format!(" part {number}"))
            .unwrap_or_default();
        let by = if request.presigned {
            "presigned URL"
        } else {
            "gateway"
        };
        record.detail = Some(format!("{operation}{part} by {by}: {outcome}"));
        self.audit.record_or_log(&record);
    }
}
