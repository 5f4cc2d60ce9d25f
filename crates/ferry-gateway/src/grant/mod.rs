//! The grant API (`/grant/v1`, contract in `docs/grant-api.md`): upload and
//! download grants as presigned store URLs, upload state and completion with
//! a signed receipt, signing keys, countersigned checkpoints and the audit
//! query.
//!
//! The router is built over its own state ([`GrantState`]) so that the
//! sandbox and `serve` mode mount the same API with different token
//! verifiers, stores and document registries.

mod documents;
mod downloads;
mod epoch_links;
mod error;
mod input;
mod rate_limit;
mod uploads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use jiff::Timestamp;

use crate::audit::{AuditAction, AuditLog, AuditRecord, Step};
use crate::policy::{Action, Decision, Policy, PolicyConfig, Principal};
use crate::repository::GrantRepository;
use crate::s3::S3Client;
use crate::scopes::{Context, Permission};
use crate::store_hook::IssuedDownloads;
use crate::tokens::{AccessClaims, SharedVerifier, SigningKey};

pub use documents::{
    CompletedDocument, DocumentRegistry, LocalDocumentRegistry, RegistryError, document_reference,
    imaging_study, store_local,
};
pub use error::GrantError;
pub use input::MAX_BODY;
pub use rate_limit::{RateLimitConfig, RateLimiter};

/// Path prefix of the grant API.
pub const BASE_PATH: &str = "/grant/v1";

/// Settings of the grant API beyond the policy table.
#[derive(Debug, Clone)]
pub struct GrantConfig {
    pub policy: PolicyConfig,
    /// Smallest part but the last. S3 requires 5 MiB (`ferry_api::MIN_PART_SIZE`);
    /// only tests against the embedded store set it lower, to build uploads
    /// of more than 1,000 parts from little data.
    pub min_part_size: u64,
    /// After completion, compare the object's SHA-256 with the client's. Always
    /// on for the embedded store, which records the SHA-256 while completing.
    /// Optional for an external one, where it costs a full read of the object.
    pub verify_read_back: bool,
    /// How often the cleanup task looks for expired uploads.
    pub cleanup_interval: Duration,
}

impl Default for GrantConfig {
    fn default() -> Self {
        GrantConfig {
            policy: PolicyConfig::default(),
            min_part_size: ferry_api::MIN_PART_SIZE,
            verify_read_back: true,
            cleanup_interval: Duration::from_secs(60),
        }
    }
}

/// Everything the grant API handlers use.
pub struct GrantService {
    pub repository: Arc<dyn GrantRepository>,
    pub store: S3Client,
    pub policy: Policy,
    pub audit: AuditLog,
    /// Key that signs receipts and checkpoints, published at `/keys`.
    pub signing_key: Arc<SigningKey>,
    pub documents: Arc<dyn DocumentRegistry>,
    pub config: GrantConfig,
    /// One lock per upload id, so that two completions of one upload run
    /// one after the other and the second returns the first's receipt.
    completion_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Live download grants, shared with the embedded store's access hook.
    pub issued_downloads: Arc<IssuedDownloads>,
    /// Token buckets of `config.policy.rate_limit`.
    pub rate_limiter: RateLimiter,
    /// The embedded store behind `store`, when the gateway runs one. Its
    /// recorded size and SHA-256 replace reading an object back.
    pub embedded_store: Option<ferry_store::Store>,
}

impl std::fmt::Debug for GrantService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantService")
            .field("store", &self.store)
            .field("audit", &self.audit)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GrantService {
    pub fn new(
        repository: Arc<dyn GrantRepository>,
        store: S3Client,
        audit: AuditLog,
        signing_key: Arc<SigningKey>,
        documents: Arc<dyn DocumentRegistry>,
        config: GrantConfig,
    ) -> GrantService {
        GrantService {
            repository,
            store,
            policy: Policy::new(config.policy.clone()),
            rate_limiter: RateLimiter::new(config.policy.rate_limit),
            audit,
            signing_key,
            documents,
            config,
            completion_locks: Mutex::new(HashMap::new()),
            issued_downloads: Arc::default(),
            embedded_store: None,
        }
    }

    pub(crate) fn completion_lock(&self, upload_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .completion_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Entries of finished completions are dropped once nobody holds them.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(upload_id.to_owned()).or_default().clone()
    }

    /// Runs the policy for `action` and records the decision.
    fn authorize(
        &self,
        claims: &AccessClaims,
        step: Step,
        action: Action,
        patient: &str,
        object: Option<&str>,
        correlation_id: &str,
    ) -> Result<Decision, GrantError> {
        let deny = self.repository.deny_list()?;
        let decision = self
            .policy
            .authorize(&principal(claims), action, patient, object, &deny);
        self.record_decision(
            claims,
            step,
            action,
            &decision,
            patient,
            object,
            correlation_id,
        )?;
        Ok(decision)
    }

    #[allow(clippy::too_many_arguments)]
    fn record_decision(
        &self,
        claims: &AccessClaims,
        step: Step,
        action: Action,
        decision: &Decision,
        patient: &str,
        object: Option<&str>,
        correlation_id: &str,
    ) -> Result<(), GrantError> {
        let audit_action = match action {
            Action::Upload => AuditAction::Create,
            Action::Download => AuditAction::Read,
        };
        let mut record = self.record_for(claims, step, audit_action, correlation_id);
        record.success = decision.is_allowed();
        record.rule = Some(decision.rule());
        record.patient = Some(patient.to_owned());
        record.object = object.map(str::to_owned);
        if let Decision::Deny { message, .. } = decision {
            record.detail = Some(message.clone());
        }
        self.audit.record(&record)?;
        if !decision.is_allowed() {
            tracing::info!(
                subject = %claims.subject,
                patient,
                rule = %decision.rule(),
                correlation_id,
                "grant denied by policy"
            );
        }
        Ok(())
    }

    fn record_for(
        &self,
        claims: &AccessClaims,
        step: Step,
        action: AuditAction,
        correlation_id: &str,
    ) -> AuditRecord {
        let mut record = AuditRecord::new(step, action, correlation_id);
        record.subject = Some(claims.subject.clone());
        record.client_id = Some(claims.client_id.clone());
        record
    }
}

/// What policy needs from an access token.
pub fn principal(claims: &AccessClaims) -> Principal {
    let allows = |context, permission| {
        claims
            .scopes
            .allows(context, "DocumentReference", permission)
    };
    Principal {
        subject: claims.subject.clone(),
        patient_context: claims.patient.clone(),
        patient_create: allows(Context::Patient, Permission::Create),
        user_create: allows(Context::User, Permission::Create),
        patient_read: allows(Context::Patient, Permission::Read),
        user_read: allows(Context::User, Permission::Read),
    }
}

/// State of the grant router.
#[derive(Clone)]
pub struct GrantState {
    pub service: Arc<GrantService>,
    pub verifier: SharedVerifier,
}

impl FromRef<GrantState> for SharedVerifier {
    fn from_ref(state: &GrantState) -> Self {
        state.verifier.clone()
    }
}

/// The grant API under [`BASE_PATH`], ready to merge into any router.
pub fn router<S: Clone + Send + Sync + 'static>(
    service: Arc<GrantService>,
    verifier: SharedVerifier,
) -> Router<S> {
    let state = GrantState { service, verifier };
    let api = Router::new()
        .route("/uploads", post(uploads::create))
        .route(
            "/uploads/{upload_id}",
            get(uploads::state).delete(uploads::abort),
        )
        .route("/uploads/{upload_id}/part-urls", post(uploads::part_urls))
        .route("/uploads/{upload_id}/complete", post(uploads::complete))
        .route("/downloads", post(downloads::create))
        .route("/keys", get(downloads::keys))
        .route(
            "/checkpoints",
            post(downloads::create_checkpoint).get(downloads::list_checkpoints),
        )
        .route("/audit", get(downloads::audit))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            rate_limit::limit,
        ))
        .with_state(state);
    Router::new().nest(BASE_PATH, api)
}

/// A new random id with `prefix`: 20 lowercase letters and digits (about 103 bits).
fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let id: String = (0..20)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{id}")
}

fn timestamp_after(now: Timestamp, lifetime: Duration) -> Timestamp {
    let lifetime = jiff::SignedDuration::try_from(lifetime).unwrap_or(jiff::SignedDuration::MAX);
    now.checked_add(lifetime).unwrap_or(Timestamp::MAX)
}

fn new_correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
