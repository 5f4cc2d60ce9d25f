//! Starting and stopping the sandbox: data folder, database, signing key,
//! loopback listener and graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::db::{Db, DbError};
use crate::tokens::{KeyError, SandboxVerifier, SharedVerifier, SigningKey};
use crate::{AppState, directory, router};

/// Default listen address of the sandbox.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";

/// Sandbox-only sign-in choice that skips the sign-in page: the practitioner
/// and, for a patient context, the patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoLogin {
    pub user: String,
    pub patient: Option<String>,
}

impl std::str::FromStr for AutoLogin {
    type Err = String;

    /// Parses `USER` or `USER:PATIENT`, e.g. `dr-rivera:pat-001`.
    fn from_str(text: &str) -> Result<AutoLogin, String> {
        let (user, patient) = match text.split_once(':') {
            Some((user, patient)) => (user, Some(patient)),
            None => (text, None),
        };
        if user.is_empty() || patient == Some("") {
            return Err(format!(
                "'{text}' is not USER or USER:PATIENT, e.g. dr-rivera:pat-001"
            ));
        }
        Ok(AutoLogin {
            user: user.to_owned(),
            patient: patient.map(str::to_owned),
        })
    }
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Folder for the database and signing key; created if missing.
    pub data_dir: PathBuf,
    /// Must be a loopback address; port 0 picks a free port.
    pub listen: SocketAddr,
    pub auto_login: Option<AutoLogin>,
}

/// URLs of a running sandbox, built from the bound address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SandboxUrls {
    /// Issuer of tokens (`iss`), e.g. `http://127.0.0.1:7420`.
    pub issuer: String,
    /// FHIR base URL and the `aud` of access tokens.
    pub fhir: String,
    pub smart_configuration: String,
    pub authorize: String,
    pub token: String,
    pub revoke: String,
    pub jwks: String,
    pub health: String,
}

impl SandboxUrls {
    pub fn for_address(address: SocketAddr) -> SandboxUrls {
        // SocketAddr's Display writes IPv6 addresses in brackets.
        let issuer = format!("http://{address}");
        let fhir = format!("{issuer}/fhir");
        SandboxUrls {
            smart_configuration: format!("{fhir}/.well-known/smart-configuration"),
            authorize: format!("{issuer}/authorize"),
            token: format!("{issuer}/token"),
            revoke: format!("{issuer}/revoke"),
            jwks: format!("{issuer}/jwks"),
            health: format!("{issuer}/health"),
            issuer,
            fhir,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--listen {0} is not a loopback address; the sandbox listens on 127.0.0.1 or [::1] only")]
    NotLoopback(SocketAddr),
    #[error("failed to create the data folder {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("failed to listen on {address}: {source}; choose another port with --listen")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Grant(#[from] crate::sandbox_grant::GrantStartError),
    #[error("--auto-login names '{0}', which is not a sandbox user or patient")]
    UnknownAutoLogin(String),
}

/// A running sandbox. Dropping it without [`SandboxHandle::shutdown`] stops
/// the server at the next await point of the runtime.
#[derive(Debug)]
pub struct SandboxHandle {
    pub urls: SandboxUrls,
    pub local_addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl SandboxHandle {
    /// Stops accepting connections, waits for in-flight requests to finish,
    /// and returns the server's result.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        match self.server.take() {
            Some(server) => server
                .await
                .unwrap_or_else(|join_error| Err(std::io::Error::other(join_error))),
            None => Ok(()),
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
    }
}

/// Opens the data folder, binds the listener and serves the sandbox on a
/// background task.
pub async fn start_sandbox(config: SandboxConfig) -> Result<SandboxHandle, StartError> {
    if !config.listen.ip().is_loopback() {
        return Err(StartError::NotLoopback(config.listen));
    }
    create_data_dir(&config.data_dir)?;

    let db = Db::open(&config.data_dir)?;
    db.call(|connection| Ok(directory::seed(connection)?)).await?;
    if let Some(auto_login) = &config.auto_login {
        check_auto_login(&db, auto_login)?;
    }
    let signing_key = Arc::new(SigningKey::load_or_generate(&config.data_dir)?);

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            address: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
        address: config.listen,
        source,
    })?;
    let urls = SandboxUrls::for_address(local_addr);

    let grant = crate::sandbox_grant::start(&config.data_dir, config.listen, db.clone()).await?;
    let verifier = SandboxVerifier::new(
        signing_key.clone(),
        urls.issuer.clone(),
        urls.fhir.clone(),
        db.clone(),
    );
    let state = Arc::new(AppState {
        db,
        signing_key,
        verifier: SharedVerifier(Arc::new(verifier)),
        urls: urls.clone(),
        auto_login: config.auto_login.clone(),
        data_dir: config.data_dir.clone(),
        refresh_token_grace: grant.refresh_token_grace,
        grant: Some(grant),
    });

    let (shutdown_sender, shutdown_receiver) = oneshot::channel::<()>();
    let app = router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = shutdown_receiver.await;
        })
        .await
    });
    tracing::info!(address = %local_addr, data_dir = %config.data_dir.display(), "sandbox listening");

    Ok(SandboxHandle {
        urls,
        local_addr,
        state,
        shutdown: Some(shutdown_sender),
        server: Some(server),
    })
}

fn create_data_dir(path: &std::path::Path) -> Result<(), StartError> {
    let data_dir_error = |source| StartError::DataDir {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(data_dir_error)?;

    // The folder holds the signing key and the database; keep it private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(data_dir_error)?;
    }
    Ok(())
}

fn check_auto_login(db: &Db, auto_login: &AutoLogin) -> Result<(), StartError> {
    let connection = db.lock();
    let practitioner = directory::practitioner(&connection, &auto_login.user)
        .map_err(|error| StartError::Database(error.into()))?;
    if practitioner.is_none() {
        return Err(StartError::UnknownAutoLogin(auto_login.user.clone()));
    }
    if let Some(patient) = &auto_login.patient {
        let found = directory::patient(&connection, patient)
            .map_err(|error| StartError::Database(error.into()))?;
        if found.is_none() {
            return Err(StartError::UnknownAutoLogin(patient.clone()));
        }
    }
    Ok(())
}
