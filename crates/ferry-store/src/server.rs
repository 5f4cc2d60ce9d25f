//! The HTTP server: binds a listener and serves the S3 API with s3s on hyper.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{Instrument as _, debug, info, info_span, warn};
use url::Url;

use crate::access::{AccessSlot, HookAccess};
use crate::credentials::Credentials;
use crate::error::StoreError;
use crate::hook::{AccessHook, AllowAll, describe_request};
use crate::s3::S3Store;
use crate::store::{Store, StoreOptions};

/// How long [`StoreHandle::shutdown`] waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Settings of a store server.
#[derive(Clone)]
pub struct StoreConfig {
    /// Folder of the store's database and data files; created if missing.
    pub root: PathBuf,
    /// Address to listen on. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Access key pairs that may sign requests. Must not be empty.
    pub credentials: Vec<Credentials>,
    /// Region that clients put into their credential scope, `us-east-1` by default.
    pub region: String,
    /// Buckets created at start unless they exist.
    pub buckets: Vec<String>,
    pub options: StoreOptions,
    pub hook: Arc<dyn AccessHook>,
}

impl StoreConfig {
    /// Settings for a store under `root` on `127.0.0.1` with a free port, one
    /// generated key pair, region `us-east-1`, no buckets and a hook that allows everything.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            credentials: vec![Credentials::generate()],
            region: "us-east-1".to_owned(),
            buckets: Vec::new(),
            options: StoreOptions::default(),
            hook: Arc::new(AllowAll),
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("root", &self.root)
            .field("listen", &self.listen)
            .field("credentials", &self.credentials)
            .field("region", &self.region)
            .field("buckets", &self.buckets)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("store configuration has no credentials; add at least one access key pair")]
    NoCredentials,
    #[error("failed to open the store")]
    Store(#[from] StoreError),
    #[error("failed to listen on {address}; choose another address or port")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running store server. Dropping the handle leaves the server running
/// until the runtime stops; call [`StoreHandle::shutdown`] to stop it.
pub struct StoreHandle {
    endpoint: Url,
    local_addr: SocketAddr,
    credentials: Vec<Credentials>,
    region: String,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle")
            .field("endpoint", &self.endpoint.as_str())
            .field("credentials", &self.credentials)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// Returns the base URL for path-style requests, such as `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn credentials(&self) -> &[Credentials] {
        &self.credentials
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Returns the store behind the server, for in-process calls.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops accepting connections and waits up to 10 seconds for requests in progress.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(err) = (&mut self.task).await {
            warn!(error = %err, "store server task failed");
        }
    }
}

/// Opens the store, binds `config.listen` and serves the S3 API until shutdown.
pub async fn serve(config: StoreConfig) -> Result<StoreHandle, ServeError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            address: config.listen,
            source,
        })?;
    serve_listener(listener, config).await
}

/// Serves the S3 API on a listener the caller bound; `config.listen` is ignored.
pub async fn serve_listener(
    listener: TcpListener,
    config: StoreConfig,
) -> Result<StoreHandle, ServeError> {
    if config.credentials.is_empty() {
        return Err(ServeError::NoCredentials);
    }
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        address: config.listen,
        source,
    })?;
    let store = Store::open(&config.root, config.options.clone())?;
    for bucket in &config.buckets {
        store.ensure_bucket(bucket)?;
    }

    let service = build_service(&store, &config);
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(accept_loop(listener, service, config.hook.clone(), stopped));

    let endpoint =
        Url::parse(&format!("http://{local_addr}")).expect("a socket address forms a valid URL");
    info!(endpoint = %endpoint, root = %config.root.display(), "store listening");
    Ok(StoreHandle {
        endpoint,
        local_addr,
        credentials: config.credentials,
        region: config.region,
        store,
        stop: Some(stop),
        task,
    })
}

fn build_service(store: &Store, config: &StoreConfig) -> S3Service {
    let mut auth = SimpleAuth::new();
    for credentials in &config.credentials {
        auth.register(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.expose().into(),
        );
    }
    let mut builder = S3ServiceBuilder::new(S3Store {
        store: store.clone(),
    });
    builder.set_auth(auth);
    builder.set_access(HookAccess {
        hook: config.hook.clone(),
    });
    // NOTE: s3s checks the signature with the region named in the request's
    // credential scope and does not compare it with `config.region`, so a URL
    // signed for another region is accepted too.
    builder.build()
}

async fn accept_loop(
    listener: TcpListener,
    service: S3Service,
    hook: Arc<dyn AccessHook>,
    mut stopped: oneshot::Receiver<()>,
) {
    let connections = ConnectionBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stopped => break,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(error = %err, "failed to accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };

        let service = service.clone();
        let hook = hook.clone();
        let handler = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            handle(service.clone(), hook.clone(), request)
        });
        let connection = connections
            .serve_connection(TokioIo::new(socket), handler)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }

    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => info!("store stopped"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => warn!("store stopped with requests still in progress"),
    }
}

/// Serves one request and reports it to the hook. The span and log lines carry
/// the path only: the query of a presigned URL is a credential.
async fn handle(
    service: S3Service,
    hook: Arc<dyn AccessHook>,
    mut request: hyper::Request<Incoming>,
) -> Result<s3s::HttpResponse, s3s::HttpError> {
    let slot = AccessSlot::default();
    request.extensions_mut().insert(slot.clone());
    let unchecked = describe_request(request.method(), request.uri());
    let span = info_span!("s3_request", method = %request.method(), path = %request.uri().path());

    let response = service
        .call(request.map(s3s::Body::from))
        .instrument(span.clone())
        .await;

    let status = match &response {
        Ok(response) => response.status().as_u16(),
        Err(_) => 500,
    };
    let (described, outcome) = slot.finish(unchecked, status);
    span.in_scope(|| {
        debug!(
            operation = described.operation.as_deref().unwrap_or("-"),
            access_key_id = described.access_key_id.as_deref().unwrap_or("-"),
            %outcome,
            "request finished"
        );
    });
    hook.record(&described, &outcome);
    response
}
