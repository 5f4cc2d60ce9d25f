//! Grant policy: who may upload or download which patient's files.
//!
//! Every check returns a [`Decision`] that names the rule that decided, so
//! the audit trail records why a request was allowed or denied. The checks,
//! in the order they run:
//! 1. SMART v2 scope: `patient/DocumentReference.c` or `user/DocumentReference.c`
//!    to upload, `.r` on `DocumentReference` to download (a `.rs` scope has it);
//! 2. deny list of users (`sub`), patients and store objects, read from the
//!    database on every request so an entry takes effect at once;
//! 3. patient compartment: a token with a patient context reaches only that
//!    patient, a `user/` token reaches the patients its user is allowed;
//! 4. for uploads, the size limit and the media-type allow-list.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use ferry_api::ErrorCode;
use serde::{Deserialize, Serialize};

/// Largest object S3 accepts (5 TiB), the default upload size limit.
pub const S3_MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// Permissions of the caller's access token, reduced to what policy checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: String,
    /// The patient in the token's launch context, if any.
    pub patient_context: Option<String>,
    /// `patient/DocumentReference.c` (or `patient/*.c`) was granted.
    pub patient_create: bool,
    /// `user/DocumentReference.c` (or `user/*.c`) was granted.
    pub user_create: bool,
    /// `patient/DocumentReference.r` (or `patient/*.r`) was granted.
    pub patient_read: bool,
    /// `user/DocumentReference.r` (or `user/*.r`) was granted.
    pub user_read: bool,
}

/// Set of patients a user may reach with `user/` scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PatientSet {
    /// `"*"`: every patient.
    All(AllPatients),
    /// A list of patient ids.
    Only(BTreeSet<String>),
}

/// The literal `"*"` in a policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AllPatients {
    #[serde(rename = "*")]
    All,
}

impl PatientSet {
    pub fn contains(&self, patient: &str) -> bool {
        match self {
            PatientSet::All(_) => true,
            PatientSet::Only(patients) => patients.contains(patient),
        }
    }
}

/// Lifetimes of signed URLs and of open uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lifetimes {
    /// Lifetime of a presigned `GET` URL, in seconds (default 300).
    #[serde(with = "seconds")]
    pub download_url: Duration,
    /// Lifetime of a presigned `UploadPart` URL, in seconds (default 900).
    #[serde(with = "seconds")]
    pub part_url: Duration,
    /// Time after which an upload that was not completed is aborted and its
    /// parts deleted, in seconds (default 86400).
    #[serde(with = "seconds")]
    pub upload: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Lifetimes {
            download_url: Duration::from_secs(5 * 60),
            part_url: Duration::from_secs(15 * 60),
            upload: Duration::from_secs(24 * 60 * 60),
        }
    }
}

mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let seconds = u64::deserialize(deserializer)?;
        if seconds == 0 {
            return Err(serde::de::Error::custom(
                "a lifetime must be at least 1 second",
            ));
        }
        Ok(Duration::from_secs(seconds))
    }
}

/// The policy table, as the `[policy]` section of a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Largest file a grant is issued for, in bytes.
    pub max_upload_size: u64,
    /// Media types that may be uploaded.
    pub media_types: BTreeSet<String>,
    /// Patients a user not listed in `user_patients` reaches with `user/` scopes.
    pub default_user_patients: PatientSet,
    /// Per-user allow-list of patients for `user/` scopes, keyed by `sub`.
    pub user_patients: BTreeMap<String, PatientSet>,
    pub lifetimes: Lifetimes,
    /// Requests per user on the grant API.
    pub rate_limit: crate::grant::RateLimitConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            max_upload_size: S3_MAX_OBJECT_SIZE,
            media_types: [
                "application/zip",
                "application/dicom",
                "application/pdf",
                "application/octet-stream",
                "image/jpeg",
                "image/png",
                "text/plain",
            ]
            .into_iter()
            .map(str::to_owned)
            .collect(),
            default_user_patients: PatientSet::All(AllPatients::All),
            user_patients: BTreeMap::new(),
            lifetimes: Lifetimes::default(),
            rate_limit: crate::grant::RateLimitConfig::default(),
        }
    }
}

/// The rules a decision can cite, as recorded in the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The token has the scope the action needs.
    Scope,
    /// The token lacks the scope the action needs.
    MissingScope,
    /// The patient lies outside the token's patient context.
    PatientCompartment,
    /// The patient is not on the user's allow-list.
    UserPatients,
    DenyUser,
    DenyPatient,
    DenyObject,
    SizeLimit,
    MediaType,
    /// Every check passed.
    Allowed,
}

impl Rule {
    /// Returns the rule's identifier, as written in audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Scope => "scope",
            Rule::MissingScope => "missing-scope",
            Rule::PatientCompartment => "patient-compartment",
            Rule::UserPatients => "user-patients",
            Rule::DenyUser => "deny-user",
            Rule::DenyPatient => "deny-patient",
            Rule::DenyObject => "deny-object",
            Rule::SizeLimit => "size-limit",
            Rule::MediaType => "media-type",
            Rule::Allowed => "allowed",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of a policy check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        rule: Rule,
    },
    Deny {
        rule: Rule,
        /// The grant API error code the denial maps to.
        code: ErrorCode,
        /// The request field at fault, if one is.
        field: Option<&'static str>,
        /// A sentence for the caller; contains no secret.
        message: String,
    },
}

impl Decision {
    pub fn rule(&self) -> Rule {
        match self {
            Decision::Allow { rule } | Decision::Deny { rule, .. } => *rule,
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    fn deny(rule: Rule, code: ErrorCode, field: Option<&'static str>, message: String) -> Decision {
        Decision::Deny {
            rule,
            code,
            field,
            message,
        }
    }
}

/// Kinds of deny-list entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyKind {
    /// A user, by the token's `sub`.
    User,
    /// A patient, by FHIR logical id.
    Patient,
    /// A store object, by key (`uploads/upl_…`).
    Object,
}

impl DenyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyKind::User => "user",
            DenyKind::Patient => "patient",
            DenyKind::Object => "object",
        }
    }

    pub fn parse(text: &str) -> Option<DenyKind> {
        match text {
            "user" => Some(DenyKind::User),
            "patient" => Some(DenyKind::Patient),
            "object" => Some(DenyKind::Object),
            _ => None,
        }
    }
}

/// A snapshot of the deny list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyList {
    pub users: BTreeSet<String>,
    pub patients: BTreeSet<String>,
    pub objects: BTreeSet<String>,
}

impl DenyList {
    pub fn insert(&mut self, kind: DenyKind, value: impl Into<String>) {
        let value = value.into();
        match kind {
            DenyKind::User => self.users.insert(value),
            DenyKind::Patient => self.patients.insert(value),
            DenyKind::Object => self.objects.insert(value),
        };
    }

    /// Checks a user, a patient and, when known, an object against the list.
    pub fn check(
        &self,
        subject: Option<&str>,
        patient: Option<&str>,
        object: Option<&str>,
    ) -> Option<Decision> {
        if let Some(subject) = subject.filter(|subject| self.users.contains(*subject)) {
            return Some(Decision::deny(
                Rule::DenyUser,
                ErrorCode::Forbidden,
                None,
                format!("user '{subject}' is on the deny list; ask an administrator"),
            ));
        }
        if let Some(patient) = patient.filter(|patient| self.patients.contains(*patient)) {
            return Some(Decision::deny(
                Rule::DenyPatient,
                ErrorCode::Forbidden,
                Some("patient"),
                format!(
                    "transfers for patient '{patient}' are blocked by the deny list; ask an administrator"
                ),
            ));
        }
        if let Some(object) = object.filter(|object| self.objects.contains(*object)) {
            return Some(Decision::deny(
                Rule::DenyObject,
                ErrorCode::Forbidden,
                None,
                format!("object '{object}' is blocked by the deny list; ask an administrator"),
            ));
        }
        None
    }
}

/// The action a grant is requested for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Upload,
    Download,
}

/// The policy table with its checks.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub config: PolicyConfig,
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Policy {
        Policy { config }
    }

    pub fn lifetimes(&self) -> Lifetimes {
        self.config.lifetimes
    }

    /// Checks scope, deny list and patient compartment for `action` on one
    /// patient's object. `object` is the store key when it is already known.
    pub fn authorize(
        &self,
        principal: &Principal,
        action: Action,
        patient: &str,
        object: Option<&str>,
        deny: &DenyList,
    ) -> Decision {
        let (patient_scope, user_scope, needed) = match action {
            Action::Upload => (
                principal.patient_create,
                principal.user_create,
                "DocumentReference.c",
            ),
            Action::Download => (
                principal.patient_read,
                principal.user_read,
                "DocumentReference.r",
            ),
        };
        if !patient_scope && !user_scope {
            return Decision::deny(
                Rule::MissingScope,
                ErrorCode::InsufficientScope,
                None,
                format!(
                    "the access token lacks patient/{needed} or user/{needed}; sign in again requesting it"
                ),
            );
        }

        if let Some(denied) = deny.check(Some(&principal.subject), Some(patient), object) {
            return denied;
        }

        // A `patient/` scope reaches only the patient in context; a `user/`
        // scope reaches whatever the user's allow-list holds.
        let in_context = principal.patient_context.as_deref() == Some(patient);
        let by_patient_scope = patient_scope && in_context;
        let by_user_scope = user_scope && self.user_patients(&principal.subject).contains(patient);
        if !by_patient_scope && !by_user_scope {
            let rule = if user_scope {
                Rule::UserPatients
            } else {
                Rule::PatientCompartment
            };
            let message = match (&principal.patient_context, user_scope) {
                (Some(context), false) => format!(
                    "the access token is limited to patient '{context}' and cannot reach patient '{patient}'"
                ),
                (None, false) => format!(
                    "the access token has patient/ scopes but no patient context, so it cannot reach patient '{patient}'"
                ),
                (_, true) => format!(
                    "user '{}' may not reach patient '{patient}'",
                    principal.subject
                ),
            };
            return Decision::deny(rule, ErrorCode::Forbidden, Some("patient"), message);
        }

        Decision::Allow { rule: Rule::Scope }
    }

    /// Checks an upload request's size and media type against the policy.
    pub fn check_file(&self, size: u64, media_type: &str) -> Decision {
        if size > self.config.max_upload_size {
            return Decision::deny(
                Rule::SizeLimit,
                ErrorCode::TooLarge,
                Some("size"),
                format!(
                    "size must be at most {} bytes under this gateway's policy; got {size}",
                    self.config.max_upload_size
                ),
            );
        }
        if !self.config.media_types.contains(media_type) {
            let allowed: Vec<&str> = self.config.media_types.iter().map(String::as_str).collect();
            return Decision::deny(
                Rule::MediaType,
                ErrorCode::UnsupportedMediaType,
                Some("media_type"),
                format!(
                    "media_type '{media_type}' is not allowed; use one of {}",
                    allowed.join(", ")
                ),
            );
        }
        Decision::Allow {
            rule: Rule::Allowed,
        }
    }

    fn user_patients(&self, subject: &str) -> &PatientSet {
        self.config
            .user_patients
            .get(subject)
            .unwrap_or(&self.config.default_user_patients)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clinician() -> Principal {
        Principal {
            subject: "dr-rivera".into(),
            patient_context: None,
            patient_create: false,
            user_create: true,
            patient_read: false,
            user_read: true,
        }
    }

    fn patient_token(patient: &str) -> Principal {
        Principal {
            subject: "dr-rivera".into(),
            patient_context: Some(patient.into()),
            patient_create: true,
            user_create: false,
            patient_read: true,
            user_read: false,
        }
    }

    #[test]
    fn user_scope_reaches_every_patient_by_default() {
        let policy = Policy::default();

        let decision = policy.authorize(
            &clinician(),
            Action::Upload,
            "pat-002",
            None,
            &DenyList::default(),
        );

        assert_eq!(decision, Decision::Allow { rule: Rule::Scope });
    }

    #[test]
    fn patient_token_is_limited_to_its_patient() {
        let policy = Policy::default();
        let token = patient_token("pat-001");

        let own = policy.authorize(
            &token,
            Action::Download,
            "pat-001",
            None,
            &DenyList::default(),
        );
        let other = policy.authorize(
            &token,
            Action::Download,
            "pat-002",
            None,
            &DenyList::default(),
        );

        assert!(own.is_allowed());
        assert_eq!(other.rule(), Rule::PatientCompartment);
        let Decision::Deny {
            code,
            field,
            message,
            ..
        } = other
        else {
            unreachable!()
        };
        assert_eq!(code, ErrorCode::Forbidden);
        assert_eq!(field, Some("patient"));
        assert!(message.contains("pat-002"), "{message}");
    }

    #[test]
    fn missing_create_scope_is_insufficient_scope() {
        let mut token = clinician();
        token.user_create = false;

        let decision = Policy::default().authorize(
            &token,
            Action::Upload,
            "pat-001",
            None,
            &DenyList::default(),
        );

        assert_eq!(decision.rule(), Rule::MissingScope);
        assert!(matches!(
            decision,
            Decision::Deny {
                code: ErrorCode::InsufficientScope,
                ..
            }
        ));
    }

    #[test]
    fn user_allow_list_limits_user_scopes() {
        let mut config = PolicyConfig::default();
        config.user_patients.insert(
            "dr-rivera".into(),
            PatientSet::Only(["pat-001".to_owned()].into()),
        );
        let policy = Policy::new(config);

        let allowed = policy.authorize(
            &clinician(),
            Action::Upload,
            "pat-001",
            None,
            &DenyList::default(),
        );
        let denied = policy.authorize(
            &clinician(),
            Action::Upload,
            "pat-003",
            None,
            &DenyList::default(),
        );

        assert!(allowed.is_allowed());
        assert_eq!(denied.rule(), Rule::UserPatients);
    }

    #[test]
    fn deny_list_names_the_entry_that_matched() {
        let policy = Policy::default();
        let mut deny = DenyList::default();
        deny.insert(DenyKind::Patient, "pat-002");
        deny.insert(DenyKind::Object, "uploads/upl_x");

        let patient = policy.authorize(&clinician(), Action::Upload, "pat-002", None, &deny);
        let object = policy.authorize(
            &clinician(),
            Action::Download,
            "pat-001",
            Some("uploads/upl_x"),
            &deny,
        );
        deny.insert(DenyKind::User, "dr-rivera");
        let user = policy.authorize(&clinician(), Action::Download, "pat-001", None, &deny);

        assert_eq!(patient.rule(), Rule::DenyPatient);
        assert_eq!(object.rule(), Rule::DenyObject);
        assert_eq!(user.rule(), Rule::DenyUser);
    }

    #[test]
    fn file_checks_name_size_and_media_type() {
        let policy = Policy::new(PolicyConfig {
            max_upload_size: 1000,
            ..PolicyConfig::default()
        });

        let too_large = policy.check_file(1001, "application/zip");
        let bad_type = policy.check_file(10, "application/x-msdownload");

        assert!(matches!(
            too_large,
            Decision::Deny {
                rule: Rule::SizeLimit,
                code: ErrorCode::TooLarge,
                field: Some("size"),
                ..
            }
        ));
        assert!(matches!(
            bad_type,
            Decision::Deny {
                rule: Rule::MediaType,
                field: Some("media_type"),
                ..
            }
        ));
        assert!(policy.check_file(1000, "application/zip").is_allowed());
    }

    #[test]
    fn policy_table_parses_with_seconds_and_star() {
        let json = r#"{"max_upload_size": 10, "default_user_patients": "*",
            "user_patients": {"dr-lee": ["pat-001"]},
            "lifetimes": {"download_url": 3, "part_url": 4, "upload": 5}}"#;

        let config: PolicyConfig = serde_json::from_str(json).unwrap();

        assert_eq!(config.lifetimes.download_url, Duration::from_secs(3));
        assert_eq!(config.lifetimes.upload, Duration::from_secs(5));
        assert!(config.default_user_patients.contains("pat-009"));
        assert!(!config.user_patients["dr-lee"].contains("pat-009"));
    }
}
