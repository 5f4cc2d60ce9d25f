//! Ferry's reference gateway.
//!
//! The sandbox ([`start_sandbox`]) is a SMART App Launch 2 authorization
//! server and a small FHIR R4 server with fixed sandbox users and patients,
//! listening on loopback only and keeping its state in one data folder.
//! [`router`] composes the HTTP API from one sub-router per module over a
//! shared [`AppState`].

pub mod admin;
pub mod admin_api;
pub mod audit;
pub mod cleanup;
pub mod db;
pub mod directory;
pub mod fhir;
pub mod grant;
pub mod policy;
pub mod repository;
pub mod s3;
pub mod sandbox_grant;
pub mod scopes;
pub mod serve;
pub mod smart;
pub mod store_hook;
pub mod tokens;
pub mod web;

mod sandbox;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;

pub use sandbox::{
    AutoLogin, DEFAULT_LISTEN, SandboxConfig, SandboxHandle, SandboxUrls, StartError, start_sandbox,
};
pub use tokens::{AccessClaims, AuthError, Authenticated, TokenVerifier};

/// State shared by every request handler.
pub struct AppState {
    pub db: db::Db,
    pub signing_key: Arc<tokens::SigningKey>,
    pub verifier: tokens::SharedVerifier,
    pub urls: SandboxUrls,
    /// Sign-in choice applied to every authorization request (sandbox only).
    pub auto_login: Option<AutoLogin>,
    pub data_dir: PathBuf,
    /// The grant API and the embedded store behind it.
    pub grant: Option<sandbox_grant::SandboxGrant>,
    /// Time after a rotation during which the previous refresh token of a
    /// family is accepted once more; zero turns it off.
    pub refresh_token_grace: std::time::Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("db", &self.db)
            .field("urls", &self.urls)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// The state handle that routers are built over.
pub type SharedState = Arc<AppState>;

impl FromRef<SharedState> for tokens::SharedVerifier {
    fn from_ref(state: &SharedState) -> Self {
        state.verifier.clone()
    }
}

/// Builds the gateway's HTTP API: SMART authorization server, FHIR server,
/// grant and admin APIs and health check, each with its own body limit,
/// under one request-span layer. The admin API needs the peer address, so
/// serve the router with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .merge(smart::router())
        .merge(fhir::router())
        .merge(web::health_router())
        .merge(grant_router(&state))
        .layer(web::trace_layer())
        .with_state(state)
}

/// The grant API of a state that has one, else an empty router.
fn grant_router(state: &SharedState) -> Router<SharedState> {
    match &state.grant {
        Some(grant) => grant::router(grant.service.clone(), state.verifier.clone()).merge(
            admin_api::router(grant.service.clone(), grant.admin_token.clone()),
        ),
        None => Router::new(),
    }
}
