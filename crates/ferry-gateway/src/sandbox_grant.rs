//! The sandbox's grant API: the embedded store from `ferry-store` on its own
//! loopback port, with a generated key pair, the `ferry` bucket and the
//! deny-list and audit hook, and the grant service in front of it.
//!
//! Settings come from the optional file `{data_dir}/grant.toml`, with the
//! `[grant]` and `[policy]` sections of `serve`'s configuration plus
//! `min_part_size`, `store_listen` and `store_public_endpoint` under `[grant]`:
//!
//! ```toml
//! [grant]
//! min_part_size = 5242880        # test-only: lower it to build many-part uploads
//! cleanup_interval_seconds = 60
//! store_listen = "127.0.0.1:7421"
//! store_public_endpoint = "http://127.0.0.1:7431"  # test-only: a proxy in front of the store
//!
//! [policy.lifetimes]
//! part_url = 900
//!
//! [smart]
//! refresh_token_grace_seconds = 60  # 0 turns the grace period off
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::audit::AuditLog;
use crate::db::Db;
use crate::fhir::documents::{self, NewDocument};
use crate::grant::{
    CompletedDocument, DocumentRegistry, GrantConfig, GrantService, RegistryError,
    document_reference, store_local,
};
use crate::policy::PolicyConfig;
use crate::repository::{GrantRepository, SqliteRepository};
use crate::s3::{S3Client, S3Config, SecretAccessKey};
use crate::store_hook::{GrantAccessHook, IssuedDownloads};
use crate::tokens::SigningKey;

/// Name of the optional settings file in the data folder.
pub const GRANT_CONFIG_FILE: &str = "grant.toml";

/// Bucket of the sandbox's store.
pub const BUCKET: &str = "ferry";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SandboxGrantFile {
    #[serde(default)]
    grant: SandboxGrantSettings,
    #[serde(default)]
    policy: PolicyConfig,
    #[serde(default)]
    smart: SandboxSmartSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SandboxSmartSettings {
    /// Seconds after a refresh token's rotation during which it is accepted
    /// once more, for a client that lost the rotated token.
    refresh_token_grace_seconds: u64,
}

impl Default for SandboxSmartSettings {
    fn default() -> Self {
        SandboxSmartSettings {
            refresh_token_grace_seconds: crate::smart::REFRESH_TOKEN_GRACE.as_secs(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SandboxGrantSettings {
    /// Smallest part but the last, in bytes; S3's 5 MiB unless a test lowers it.
    min_part_size: u64,
    cleanup_interval_seconds: u64,
    /// Address of the embedded store; defaults to the sandbox's port + 1.
    store_listen: Option<SocketAddr>,
    /// Base URL that presigned URLs and the gateway's own store requests
    /// name instead of `store_listen`, such as a test's proxy that forwards
    /// to the store. The store checks signatures against the `Host` it
    /// receives, so the proxy must pass `Host` through unchanged.
    store_public_endpoint: Option<url::Url>,
}

impl Default for SandboxGrantSettings {
    fn default() -> Self {
        SandboxGrantSettings {
            min_part_size: ferry_api::MIN_PART_SIZE,
            cleanup_interval_seconds: 60,
            store_listen: None,
            store_public_endpoint: None,
        }
    }
}

/// How to reach the sandbox's store with standard S3 tools.
#[derive(Clone)]
pub struct StoreInfo {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: SecretAccessKey,
}

impl std::fmt::Debug for StoreInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreInfo")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// The running grant side of the sandbox.
#[derive(Debug)]
pub struct SandboxGrant {
    pub service: Arc<GrantService>,
    pub store_info: StoreInfo,
    pub store: ferry_store::StoreHandle,
    /// `[smart] refresh_token_grace_seconds` of `grant.toml`.
    pub refresh_token_grace: Duration,
    /// Token of the admin API (`crate::admin_api`), written to the data folder.
    pub admin_token: crate::admin_api::AdminToken,
    cleanup: tokio::task::JoinHandle<()>,
}

impl Drop for SandboxGrant {
    fn drop(&mut self) {
        self.cleanup.abort();
    }
}

/// Errors starting the sandbox's store and grant API.
#[derive(Debug, thiserror::Error)]
pub enum GrantStartError {
    #[error("failed to read {path}: {message}")]
    Config { path: String, message: String },
    #[error("failed to start the embedded store: {0}")]
    Store(#[from] ferry_store::ServeError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Key(#[from] crate::tokens::KeyError),
    #[error("failed to create {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// File in the data folder that keeps the embedded store's access key
/// pair, so that URLs signed before a restart stay valid after it.
const STORE_CREDENTIALS_FILE: &str = "store-credentials.json";

/// Reads the store's access key pair from the data folder, or generates one
/// and writes it there readable by the owner only.
fn load_or_generate_store_credentials(
    data_dir: &Path,
) -> Result<ferry_store::Credentials, GrantStartError> {
    let path = data_dir.join(STORE_CREDENTIALS_FILE);
    let invalid = |message: String| GrantStartError::Config {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: StoredCredentials = serde_json::from_slice(&bytes).map_err(|error| {
                invalid(format!("{error}; delete the file to generate a new key pair"))
            })?;
            Ok(ferry_store::Credentials::new(
                stored.access_key_id,
                stored.secret_access_key,
            ))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let credentials = ferry_store::Credentials::generate();
            let stored = StoredCredentials {
                access_key_id: credentials.access_key_id.clone(),
                secret_access_key: credentials.secret_access_key.expose().to_owned(),
            };
            let bytes = serde_json::to_vec_pretty(&stored).expect("two strings serialize");
            crate::tokens::write_private_file(&path, &bytes).map_err(|source| {
                GrantStartError::DataDir {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            tracing::info!(path = %path.display(), "generated a new access key pair for the embedded store");
            Ok(credentials)
        }
        Err(error) => Err(invalid(error.to_string())),
    }
}

/// The store's access key pair as kept in [`STORE_CREDENTIALS_FILE`].
#[derive(Serialize, Deserialize)]
struct StoredCredentials {
    access_key_id: String,
    secret_access_key: String,
}

/// Registers documents in the sandbox's FHIR server, and keeps Ferry's full
/// resource (with the contained `ImagingStudy`) in `grant_documents`.
struct SandboxDocumentRegistry {
    db: Db,
}

impl DocumentRegistry for SandboxDocumentRegistry {
    fn has_patient(&self, patient: &str) -> Result<Option<bool>, RegistryError> {
        let found = crate::directory::patient(&self.db.lock(), patient).map_err(|error| {
            RegistryError::Rejected {
                id: format!("Patient/{patient}"),
                message: error.to_string(),
            }
        })?;
        Ok(Some(found.is_some()))
    }

    fn create(&self, document: &CompletedDocument<'_>) -> Result<String, RegistryError> {
        let upload = document.upload;
        let digest: [u8; 32] = hex::decode(document.sha256)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .unwrap_or_else(|| sha2::Sha256::digest(b"").into());
        let author = document
            .author
            .rsplit_once("Practitioner/")
            .map(|(_, id)| id.to_owned());
        let id = documents::create(
            &self.db,
            NewDocument {
                patient_id: upload.patient.clone(),
                author,
                title: upload.file_name.clone(),
                description: upload
                    .request
                    .study
                    .as_ref()
                    .and_then(|study| study.description.clone()),
                content_type: upload.media_type.clone(),
                url: document.object_url.to_owned(),
                size: upload.size,
                sha256: digest,
            },
        )
        .map_err(|error| RegistryError::Rejected {
            id: upload.id.clone(),
            message: error.to_string(),
        })?;

        if let Some(study) = &upload.request.study {
            let resource = crate::grant::imaging_study(study, &upload.patient);
            crate::fhir::imaging::register(&self.db, &id, &upload.patient, resource).map_err(|error| {
                RegistryError::Rejected { id: upload.id.clone(), message: error.to_string() }
            })?;
        }
        let resource = document_reference(&id, document);
        store_local(&self.db, &id, &upload.patient, &resource)?;
        Ok(id)
    }
}

/// Starts the embedded store beside a sandbox configured to listen on
/// `sandbox_listen` (port 0 gives the store a free port too), and builds the
/// grant service over it.
pub async fn start(
    data_dir: &Path,
    sandbox_listen: SocketAddr,
    db: Db,
) -> Result<SandboxGrant, GrantStartError> {
    let settings = read_settings(data_dir)?;
    let repository: Arc<dyn GrantRepository> = Arc::new(SqliteRepository::new(db.clone()));
    let audit = AuditLog::open(data_dir, db.clone())?;
    let issued_downloads = Arc::new(IssuedDownloads::default());

    let store_listen = settings.grant.store_listen.unwrap_or_else(|| {
        let port = match sandbox_listen.port() {
            0 => 0,
            port => port.saturating_add(1),
        };
        SocketAddr::new(sandbox_listen.ip(), port)
    });
    let credentials = load_or_generate_store_credentials(data_dir)?;
    let mut store_config = ferry_store::StoreConfig::new(data_dir.join("store"));
    store_config.listen = store_listen;
    store_config.credentials = vec![credentials.clone()];
    store_config.buckets = vec![BUCKET.to_owned()];
    store_config.options.min_part_size = settings.grant.min_part_size;
    store_config.hook = Arc::new(GrantAccessHook::new(
        repository.clone(),
        audit.clone(),
        issued_downloads.clone(),
    ));
    let store = ferry_store::serve(store_config).await?;
    let endpoint = settings
        .grant
        .store_public_endpoint
        .clone()
        .unwrap_or_else(|| store.endpoint().clone());

    let store_info = StoreInfo {
        endpoint: endpoint.as_str().trim_end_matches('/').to_owned(),
        region: store.region().to_owned(),
        bucket: BUCKET.to_owned(),
        access_key_id: credentials.access_key_id.clone(),
        secret_access_key: SecretAccessKey::new(credentials.secret_access_key.expose()),
    };
    let client = S3Client::new(S3Config {
        endpoint,
        region: store_info.region.clone(),
        bucket: BUCKET.to_owned(),
        path_style: true,
        access_key_id: store_info.access_key_id.clone(),
        secret_access_key: store_info.secret_access_key.clone(),
        read_timeout: crate::s3::DEFAULT_READ_TIMEOUT,
    });

    // Receipts and checkpoints are signed by their own key, kept apart from
    // the token signing key.
    let key_dir = data_dir.join("grant-key");
    std::fs::create_dir_all(&key_dir).map_err(|source| GrantStartError::DataDir {
        path: key_dir.display().to_string(),
        source,
    })?;
    let signing_key = Arc::new(SigningKey::load_or_generate(&key_dir)?);

    let config = GrantConfig {
        policy: settings.policy,
        min_part_size: settings.grant.min_part_size,
        verify_read_back: true,
        cleanup_interval: Duration::from_secs(settings.grant.cleanup_interval_seconds.max(1)),
    };
    let mut service = GrantService::new(
        repository,
        client,
        audit,
        signing_key,
        Arc::new(SandboxDocumentRegistry { db }),
        config,
    );
    service.issued_downloads = issued_downloads;
    service.embedded_store = Some(store.store().clone());
    let service = Arc::new(service);
    let admin_token = crate::admin_api::AdminToken::create(data_dir).map_err(|source| {
        GrantStartError::DataDir {
            path: data_dir
                .join(crate::admin_api::ADMIN_TOKEN_FILE)
                .display()
                .to_string(),
            source,
        }
    })?;
    let cleanup = crate::cleanup::spawn(service.clone());

    Ok(SandboxGrant {
        admin_token,
        service,
        store_info,
        store,
        refresh_token_grace: Duration::from_secs(settings.smart.refresh_token_grace_seconds),
        cleanup,
    })
}

fn read_settings(data_dir: &Path) -> Result<SandboxGrantFile, GrantStartError> {
    let path = data_dir.join(GRANT_CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(SandboxGrantFile::default());
        }
        Err(error) => {
            return Err(GrantStartError::Config {
                path: path.display().to_string(),
                message: error.to_string(),
            });
        }
    };
    toml::from_str(&text).map_err(|error| GrantStartError::Config {
        path: path.display().to_string(),
        message: error.to_string(),
    })
}
