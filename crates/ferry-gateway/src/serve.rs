//! `ferry-gateway serve --config FILE`: the grant API in front of an
//! external OpenID Connect / SMART issuer and an external S3-compatible
//! store, with the same policy and audit as the sandbox.
//!
//! Access tokens are JWTs verified against the issuer's JWKS, found through
//! its discovery document (`{issuer}/.well-known/openid-configuration`,
//! OpenID Connect Discovery 1.0 §4) and refreshed periodically. Uploads,
//! deny list, checkpoints and completed documents live in the embedded
//! database behind [`GrantRepository`]. This mode has no FHIR server of its
//! own: `DocumentReference`s go to the `grant_documents` table.
//!
//! Deliberately left out: token introspection for opaque tokens, and
//! revocation checks (tokens are trusted until `exp`, so keep them short).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Notify;
use url::Url;

use crate::audit::AuditLog;
use crate::db::Db;
use crate::grant::{GrantConfig, GrantService, LocalDocumentRegistry};
use crate::policy::PolicyConfig;
use crate::repository::{GrantRepository, SqliteRepository};
use crate::s3::{S3Client, S3Config, SecretAccessKey};
use crate::scopes::{Scope, Scopes};
use crate::tokens::{AccessClaims, AuthError, Secret, SharedVerifier, SigningKey, TokenVerifier};

/// The configuration file of `serve`, in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on, e.g. `127.0.0.1:7430`.
    pub listen: SocketAddr,
    /// Folder for the database, the audit log and the receipt signing key.
    pub data_dir: PathBuf,
    pub oidc: OidcConfig,
    pub store: StoreConfig,
    #[serde(default)]
    pub grant: GrantSettings,
    #[serde(default)]
    pub policy: PolicyConfig,
}

/// `[oidc]`: the external issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Issuer identifier; tokens' `iss` must equal it.
    pub issuer: String,
    /// Expected `aud` of access tokens, usually the FHIR base URL.
    pub audience: String,
    /// Discovery document; defaults to `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery_url: Option<Url>,
    /// How often the JWKS is fetched again, in seconds (default 300).
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_seconds: u64,
}

fn default_jwks_refresh() -> u64 {
    300
}

/// `[store]`: the external S3-compatible store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub endpoint: Url,
    #[serde(default = "default_region")]
    pub region: String,
    pub bucket: String,
    /// Path-style URLs (`{endpoint}/{bucket}/{key}`), needed by most
    /// self-hosted stores; `false` uses virtual-hosted style (default true).
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// Environment variable holding the access key id (default `FERRY_S3_ACCESS_KEY_ID`).
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    /// Environment variable holding the secret key (default `FERRY_S3_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// TOML file with `access_key_id` and `secret_access_key`; used instead
    /// of the environment when set.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// Create the bucket at start if it does not exist (default false).
    #[serde(default)]
    pub create_bucket: bool,
    /// Seconds to wait for the next bytes of a store response before the
    /// request fails with `504` (default 120). The wait restarts with every
    /// byte received, so it does not limit a long response that keeps coming.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_seconds: u64,
}

fn default_read_timeout() -> u64 {
    crate::s3::DEFAULT_READ_TIMEOUT.as_secs()
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_true() -> bool {
    true
}

/// `[grant]`: settings beyond the policy table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrantSettings {
    /// Read each completed object back to confirm its SHA-256 (default false:
    /// it costs a full read; the composite checksum and size are still checked).
    pub verify_read_back: bool,
    /// Seconds between runs of the cleanup task (default 60).
    pub cleanup_interval_seconds: u64,
}

impl Default for GrantSettings {
    fn default() -> Self {
        GrantSettings {
            verify_read_back: false,
            cleanup_interval_seconds: 60,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    access_key_id: String,
    secret_access_key: String,
}

/// Errors starting `serve`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to read the configuration file {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {path} is invalid: {message}")]
    InvalidConfig { path: PathBuf, message: String },
    #[error("store credentials are missing: {0}")]
    Credentials(String),
    #[error("failed to fetch the issuer's {what} from {url}: {message}")]
    Discovery {
        what: &'static str,
        url: String,
        message: String,
    },
    #[error(transparent)]
    Database(#[from] crate::db::DbError),
    #[error(transparent)]
    Key(#[from] crate::tokens::KeyError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("failed to create the bucket '{bucket}': {source}")]
    Bucket {
        bucket: String,
        #[source]
        source: crate::s3::S3Error,
    },
    #[error("failed to create the data folder {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl ServeConfig {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<ServeConfig, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServeError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| ServeError::InvalidConfig {
            path: path.to_owned(),
            message: error.to_string(),
        })
    }
}

impl StoreConfig {
    /// Resolves credentials from the credentials file or the environment.
    pub fn s3_config(&self) -> Result<S3Config, ServeError> {
        let (access_key_id, secret) = match &self.credentials_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    ServeError::Credentials(format!("failed to read {}: {error}", path.display()))
                })?;
                let file: CredentialsFile = toml::from_str(&text).map_err(|error| {
                    ServeError::Credentials(format!(
                        "{} is not a valid credentials file: {error}",
                        path.display()
                    ))
                })?;
                (file.access_key_id, file.secret_access_key)
            }
            None => {
                let read = |name: &str| {
                    std::env::var(name).map_err(|_| {
                        ServeError::Credentials(format!(
                            "set the environment variable {name}, or credentials_file in [store]"
                        ))
                    })
                };
                let id_name = self
                    .access_key_id_env
                    .as_deref()
                    .unwrap_or("FERRY_S3_ACCESS_KEY_ID");
                let secret_name = self
                    .secret_access_key_env
                    .as_deref()
                    .unwrap_or("FERRY_S3_SECRET_ACCESS_KEY");
                (read(id_name)?, read(secret_name)?)
            }
        };
        Ok(S3Config {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            path_style: self.path_style,
            access_key_id,
            secret_access_key: SecretAccessKey::new(secret),
            read_timeout: Duration::from_secs(self.read_timeout_seconds.max(1)),
        })
    }
}

/// Claims of an external issuer's access token. Only `sub`, `scope`, `exp`
/// (and the `iss`/`aud` that validation checks) are required.
#[derive(Debug, Deserialize)]
struct ExternalClaims {
    sub: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    patient: Option<String>,
    #[serde(default, rename = "fhirUser")]
    fhir_user: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default, alias = "azp")]
    authorized_party: Option<String>,
    exp: i64,
    #[serde(default)]
    jti: Option<String>,
}

/// Verifies access tokens of an external issuer against its JWKS.
///
/// [`TokenVerifier::verify`] is synchronous, so keys are fetched ahead of
/// time: at start and every `jwks_refresh_seconds`. A token signed with a
/// `kid` not yet known wakes the refresh task and gets 503 ("retry"), so a
/// key rotation costs clients one retry. Such wake-ups are at least
/// [`KID_REFRESH_INTERVAL`] apart, shared by all requests: a token whose `kid`
/// is still unknown after a refresh it triggered gets 401, so forged `kid`
/// values cannot make the gateway fetch the JWKS once per request.
pub struct JwksTokenVerifier {
    issuer: String,
    audience: String,
    keys: RwLock<Vec<(Option<String>, Algorithm, DecodingKey)>>,
    refresh: Arc<Notify>,
    kid_refresh: Mutex<KidRefresh>,
}

/// Minimum time between two JWKS refreshes triggered by an unknown `kid`.
pub const KID_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// Times of the last refresh an unknown `kid` requested and of the start of
/// the last fetch the refresh task finished, successful or not.
#[derive(Debug, Default)]
struct KidRefresh {
    requested: Option<Instant>,
    fetched: Option<Instant>,
}

impl std::fmt::Debug for JwksTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksTokenVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl JwksTokenVerifier {
    /// Fetches the discovery document and the JWKS, and starts the refresh task.
    pub async fn discover(config: &OidcConfig) -> Result<Arc<JwksTokenVerifier>, ServeError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a reqwest client without custom TLS settings builds");
        let discovery_url = match &config.discovery_url {
            Some(url) => url.to_string(),
            None => format!(
                "{}/.well-known/openid-configuration",
                config.issuer.trim_end_matches('/')
            ),
        };

        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let discovery: Discovery = fetch_json(&http, &discovery_url, "discovery document").await?;
        // OpenID Connect Discovery 1.0 §4.3: the issuer in the document must
        // equal the one the configuration names.
        if discovery.issuer != config.issuer {
            return Err(ServeError::Discovery {
                what: "discovery document",
                url: discovery_url,
                message: format!(
                    "it names issuer '{}', not the configured '{}'",
                    discovery.issuer, config.issuer
                ),
            });
        }

        let verifier = Arc::new(JwksTokenVerifier {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            keys: RwLock::new(Vec::new()),
            refresh: Arc::new(Notify::new()),
            kid_refresh: Mutex::default(),
        });
        let keys = fetch_keys(&http, &discovery.jwks_uri).await?;
        *verifier
            .keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;

        let weak = Arc::downgrade(&verifier);
        let refresh = verifier.refresh.clone();
        let interval = Duration::from_secs(config.jwks_refresh_seconds.max(10));
        let jwks_uri = discovery.jwks_uri;
        tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(interval, refresh.notified()).await;

                let Some(verifier) = weak.upgrade() else {
                    return;
                };
                let started = Instant::now();
                match fetch_keys(&http, &jwks_uri).await {
                    Ok(keys) => {
                        *verifier
                            .keys
                            .write()
                            .unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
                        tracing::debug!(jwks_uri, "refreshed the issuer's JWKS");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "failed to refresh the issuer's JWKS; keeping the old keys")
                    }
                }
                verifier
                    .kid_refresh
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .fetched = Some(started);
            }
        });
        Ok(verifier)
    }
}

async fn fetch_json<T: for<'de> Deserialize<'de>>(
    http: &reqwest::Client,
    url: &str,
    what: &'static str,
) -> Result<T, ServeError> {
    let error = |message: String| ServeError::Discovery {
        what,
        url: url.to_owned(),
        message,
    };
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|source| error(source.to_string()))?;
    if !response.status().is_success() {
        return Err(error(format!("HTTP {}", response.status())));
    }
    response
        .json()
        .await
        .map_err(|source| error(source.to_string()))
}

async fn fetch_keys(
    http: &reqwest::Client,
    jwks_uri: &str,
) -> Result<Vec<(Option<String>, Algorithm, DecodingKey)>, ServeError> {
    let set: JwkSet = fetch_json(http, jwks_uri, "JWKS").await?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        // Only public keys: a symmetric (`oct`) key in a JWKS would let
        // anyone who read the JWKS sign tokens.
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (_, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) => None,
            (Some(algorithm), _) => {
                algorithm
                    .to_string()
                    .parse::<Algorithm>()
                    .ok()
                    .filter(|algorithm| {
                        !matches!(
                            algorithm,
                            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
                        )
                    })
            }
            (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_)) => {
                Some(Algorithm::ES256)
            }
            (None, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) => Some(Algorithm::RS256),
            _ => None,
        };
        let (Some(algorithm), Ok(key)) = (algorithm, DecodingKey::from_jwk(jwk)) else {
            tracing::debug!(kid = ?jwk.common.key_id, "skipping a JWKS key this gateway cannot use");
            continue;
        };
        keys.push((jwk.common.key_id.clone(), algorithm, key));
    }
    Ok(keys)
}

impl JwksTokenVerifier {
    /// Returns the error for a token that no known key matches, waking the
    /// refresh task at most once per [`KID_REFRESH_INTERVAL`].
    fn unknown_key(&self, header: &jsonwebtoken::Header) -> AuthError {
        let now = Instant::now();
        let mut kid_refresh = self
            .kid_refresh
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let recent = kid_refresh
            .requested
            .filter(|requested| now.duration_since(*requested) < KID_REFRESH_INTERVAL);
        match recent {
            // The refresh finished and still lists no such key.
            Some(requested)
                if kid_refresh
                    .fetched
                    .is_some_and(|fetched| fetched >= requested) =>
            {
                tracing::debug!(kid = ?header.kid, alg = ?header.alg, "rejected a token signed with a key the issuer's JWKS does not list");
                AuthError::BadSignature
            }
            Some(_) => AuthError::Unavailable(format!(
                "no key of the issuer's JWKS matches kid {:?} and alg {:?}; the keys are being refreshed",
                header.kid, header.alg
            )),
            None => {
                kid_refresh.requested = Some(now);
                self.refresh.notify_one();
                AuthError::Unavailable(format!(
                    "no key of the issuer's JWKS matches kid {:?} and alg {:?}; the keys are being refreshed",
                    header.kid, header.alg
                ))
            }
        }
    }
}

impl TokenVerifier for JwksTokenVerifier {
    fn verify(&self, bearer: &Secret) -> Result<AccessClaims, AuthError> {
        let header =
            jsonwebtoken::decode_header(bearer.expose()).map_err(|_| AuthError::Malformed)?;
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let candidates: Vec<&(Option<String>, Algorithm, DecodingKey)> = keys
            .iter()
            .filter(|(kid, algorithm, _)| {
                *algorithm == header.alg
                    && (header.kid.is_none() || kid.as_deref() == header.kid.as_deref())
            })
            .collect();
        if candidates.is_empty() {
            drop(keys);
            return Err(self.unknown_key(&header));
        }

        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;

        let mut last_error = AuthError::BadSignature;
        for (_, _, key) in candidates {
            match jsonwebtoken::decode::<ExternalClaims>(bearer.expose(), key, &validation) {
                Ok(data) => return Ok(access_claims(data.claims)),
                Err(error) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last_error = match error.kind() {
                        ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                        ErrorKind::InvalidIssuer => return Err(AuthError::WrongIssuer),
                        ErrorKind::InvalidAudience => return Err(AuthError::WrongAudience),
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        _ => AuthError::Malformed,
                    };
                }
            }
        }
        Err(last_error)
    }
}

/// Maps an external token's claims. Scopes this gateway does not know
/// (`profile`, `email`, …) are ignored rather than rejected, because an
/// external issuer grants them for its other clients.
fn access_claims(claims: ExternalClaims) -> AccessClaims {
    let scopes: Vec<Scope> = claims
        .scope
        .split(' ')
        .filter_map(|token| Scope::parse(token).ok())
        .collect();
    AccessClaims {
        fhir_user: claims.fhir_user.unwrap_or_default(),
        scopes: Scopes::from_vec(scopes),
        patient: claims.patient,
        client_id: claims
            .client_id
            .or(claims.authorized_party)
            .unwrap_or_default(),
        expires_at: jiff::Timestamp::from_second(claims.exp).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        jti: claims.jti.unwrap_or_default(),
        subject: claims.sub,
    }
}

/// A running `serve` gateway.
#[derive(Debug)]
pub struct ServeHandle {
    pub local_addr: SocketAddr,
    pub service: Arc<GrantService>,
    /// Token of the admin API (`crate::admin_api`), written to the data folder.
    pub admin_token: crate::admin_api::AdminToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    cleanup: tokio::task::JoinHandle<()>,
}

impl ServeHandle {
    /// Base URL of the grant API, e.g. `http://127.0.0.1:7430/grant/v1`.
    pub fn grant_api(&self) -> String {
        format!("http://{}{}", self.local_addr, crate::grant::BASE_PATH)
    }

    /// Waits until the server stops (it runs until the process ends).
    pub async fn wait(mut self) -> std::io::Result<()> {
        (&mut self.server)
            .await
            .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error)))
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        self.server.abort();
        self.cleanup.abort();
    }
}

/// Starts `serve` on the current runtime.
pub async fn start(config: ServeConfig) -> Result<ServeHandle, ServeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let db = Db::open(&config.data_dir)?;
    let audit = AuditLog::open(&config.data_dir, db.clone())?;
    // The receipt key lives in its own folder, so that a data folder shared
    // with the sandbox does not mix it up with the token signing key.
    let key_dir = config.data_dir.join("grant-key");
    std::fs::create_dir_all(&key_dir).map_err(|source| ServeError::DataDir {
        path: key_dir.clone(),
        source,
    })?;
    let signing_key = Arc::new(SigningKey::load_or_generate(&key_dir)?);

    let store = S3Client::new(config.store.s3_config()?);
    if config.store.create_bucket {
        store
            .create_bucket()
            .await
            .map_err(|source| ServeError::Bucket {
                bucket: config.store.bucket.clone(),
                source,
            })?;
    }
    let verifier = JwksTokenVerifier::discover(&config.oidc).await?;

    let repository: Arc<dyn GrantRepository> = Arc::new(SqliteRepository::new(db.clone()));
    let grant_config = GrantConfig {
        policy: config.policy.clone(),
        min_part_size: ferry_api::MIN_PART_SIZE,
        verify_read_back: config.grant.verify_read_back,
        cleanup_interval: Duration::from_secs(config.grant.cleanup_interval_seconds.max(1)),
    };
    let service = Arc::new(GrantService::new(
        repository,
        store,
        audit,
        signing_key,
        Arc::new(LocalDocumentRegistry::new(db)),
        grant_config,
    ));

    let admin_token = crate::admin_api::AdminToken::create(&config.data_dir).map_err(|source| {
        ServeError::DataDir {
            path: config.data_dir.join(crate::admin_api::ADMIN_TOKEN_FILE),
            source,
        }
    })?;
    let app: Router = crate::grant::router(service.clone(), SharedVerifier(verifier))
        .merge(crate::admin_api::router(
            service.clone(),
            admin_token.clone(),
        ))
        .route("/health", get(|| async { "ok" }))
        .layer(crate::web::trace_layer());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            address: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        address: config.listen,
        source,
    })?;
    let cleanup = crate::cleanup::spawn(service.clone());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    tracing::info!(address = %local_addr, issuer = %config.oidc.issuer, bucket = %config.store.bucket, "serve listening");

    Ok(ServeHandle {
        local_addr,
        service,
        admin_token,
        server,
        cleanup,
    })
}
