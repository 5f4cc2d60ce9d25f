//! The admin API (`/admin/v1`): the deny list and the open uploads, for an
//! operator on the gateway's own machine. It complements `ferry-gateway
//! deny`, which edits the database directly.
//!
//! Two guards protect it. The peer address must be a loopback address, so a
//! gateway that listens on other interfaces still serves this API only to
//! its own machine. The request must also carry the admin token as
//! `Authorization: Bearer`. Each start writes a new random token to
//! `{data_dir}/admin-token`, readable by its owner only (mode 0600 on Unix).
//!
//! - `GET /admin/v1/deny`: the entries, as `[{"kind", "value"}]`.
//! - `PUT /admin/v1/deny/{kind}/{value}`: adds an entry (201, or 200 when it
//!   was there). `kind` is `user`, `patient` or `object`; an object key may
//!   contain `/`.
//! - `DELETE /admin/v1/deny/{kind}/{value}`: removes an entry (204, or 404).
//! - `GET /admin/v1/uploads`: the open uploads, oldest first.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::grant::GrantService;
use crate::policy::DenyKind;
use crate::repository::RepositoryError;
use crate::tokens::Secret;

/// Path prefix of the admin API.
pub const BASE_PATH: &str = "/admin/v1";

/// Name of the admin token's file in the data folder.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The SHA-256 of this run's admin token; the token itself stays in its file.
#[derive(Clone)]
pub struct AdminToken {
    sha256: [u8; 32],
    path: PathBuf,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AdminToken {
    /// Generates a token and writes it to `{data_dir}/admin-token`,
    /// replacing the previous run's.
    pub fn create(data_dir: &Path) -> std::io::Result<AdminToken> {
        let token = Secret::generate();
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        write_private(&path, token.expose())?;
        tracing::info!(path = %path.display(), "admin token written");
        Ok(AdminToken {
            sha256: Sha256::digest(token.expose().as_bytes()).into(),
            path,
        })
    }

    /// Returns the path of the file that contains the token.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Compares digests, so the comparison time reveals nothing about the token.
    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest == self.sha256
    }
}

/// Writes `text` to a new file at `path` that only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;

    // Removed first, so that the mode applies to a new file and a stale
    // file with wider permissions never receives the new token.
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[derive(Clone)]
struct AdminState {
    service: Arc<GrantService>,
    token: AdminToken,
}

/// Builds the admin API under [`BASE_PATH`]. The server must be started with
/// `into_make_service_with_connect_info::<SocketAddr>()`; without the peer
/// address every request is rejected.
pub fn router<S: Clone + Send + Sync + 'static>(
    service: Arc<GrantService>,
    token: AdminToken,
) -> Router<S> {
    let state = AdminState { service, token };
    let api = Router::new()
        .route("/deny", get(list_deny))
        .route("/deny/{kind}/{*value}", put(add_deny).delete(remove_deny))
        .route("/uploads", get(open_uploads))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state);
    Router::new().nest(BASE_PATH, api)
}

/// An error of the admin API, as `{"error", "message"}`.
struct AdminError {
    status: StatusCode,
    message: String,
    /// The request part that is invalid, for 400 responses.
    field: Option<&'static str>,
}

impl AdminError {
    fn new(status: StatusCode, message: impl Into<String>) -> AdminError {
        AdminError {
            status,
            message: message.into(),
            field: None,
        }
    }

    fn with_field(mut self, field: &'static str) -> AdminError {
        self.field = Some(field);
        self
    }
}

impl From<RepositoryError> for AdminError {
    fn from(error: RepositoryError) -> AdminError {
        tracing::error!(%error, "admin API request failed");
        AdminError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the gateway failed to read or write its database; retry later",
        )
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let error = match self.status {
            StatusCode::UNAUTHORIZED => "invalid_token",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::BAD_REQUEST => "invalid_request",
            _ => "internal",
        };
        let mut body = serde_json::json!({ "error": error, "message": self.message });
        if let Some(field) = self.field {
            body["field"] = field.into();
        }
        (self.status, Json(body)).into_response()
    }
}

/// Rejects peers that are not on loopback (403) and requests without the
/// admin token (401).
async fn guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| *address);
    let Some(peer) = peer.filter(is_loopback) else {
        tracing::warn!(peer = ?peer, "admin API request from outside loopback rejected");
        return AdminError::new(
            StatusCode::FORBIDDEN,
            "the admin API answers only requests from this machine's loopback address",
        )
        .into_response();
    };

    // The scheme name is case-insensitive (RFC 7235, section 2.1).
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, token)| token);
    if !presented.is_some_and(|token| state.token.matches(token.trim())) {
        tracing::warn!(%peer, "admin API request without a valid admin token rejected");
        // The message names the file but not its folder, so that a caller
        // without the token learns nothing about the machine's layout.
        let message = format!(
            "missing or invalid admin token; send the content of the file {ADMIN_TOKEN_FILE} \
             in the gateway's data folder as Authorization: Bearer"
        );
        let mut response = AdminError::new(StatusCode::UNAUTHORIZED, message).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(r#"Bearer realm="ferry-gateway-admin""#),
        );
        return response;
    }
    next.run(request).await
}

/// Loopback, including IPv4 loopback written as an IPv6-mapped address.
fn is_loopback(address: &SocketAddr) -> bool {
    match address {
        SocketAddr::V4(v4) => v4.ip().is_loopback(),
        SocketAddr::V6(v6) => {
            v6.ip().is_loopback() || v6.ip().to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[derive(Debug, Serialize)]
struct DenyEntry {
    kind: &'static str,
    value: String,
}

async fn list_deny(State(state): State<AdminState>) -> Result<Json<Vec<DenyEntry>>, AdminError> {
    let list = state.service.repository.deny_list()?;
    let entries = [
        (DenyKind::User, &list.users),
        (DenyKind::Patient, &list.patients),
        (DenyKind::Object, &list.objects),
    ]
    .into_iter()
    .flat_map(|(kind, values)| {
        values.iter().map(move |value| DenyEntry {
            kind: kind.as_str(),
            value: value.clone(),
        })
    })
    .collect();
    Ok(Json(entries))
}

/// Returns why `value` cannot be a deny-list entry of `kind`, if it cannot.
/// The admin API and the `deny` command both apply it.
pub(crate) fn deny_value_problem(kind: DenyKind, value: &str) -> Option<String> {
    if value.trim().is_empty() || value.len() > 1024 || value.chars().any(char::is_control) {
        return Some(
            "a deny-list value must be 1 to 1024 characters, not only spaces, without control characters"
                .to_owned(),
        );
    }
    if kind == DenyKind::Object && value.split('/').any(|segment| segment == "..") {
        return Some(format!(
            "object key '{value}' contains a '..' segment; name the object key exactly as the store \
             does, for example uploads/upl_…"
        ));
    }
    None
}

fn parse_entry(kind: &str, value: &str) -> Result<DenyKind, AdminError> {
    let kind = DenyKind::parse(kind).ok_or_else(|| {
        AdminError::new(
            StatusCode::BAD_REQUEST,
            format!("deny-list kind '{kind}' is invalid; use user, patient or object"),
        )
        .with_field("kind")
    })?;
    if let Some(problem) = deny_value_problem(kind, value) {
        return Err(
            AdminError::new(StatusCode::BAD_REQUEST, format!("value: {problem}"))
                .with_field("value"),
        );
    }
    Ok(kind)
}

async fn add_deny(
    State(state): State<AdminState>,
    UrlPath((kind, value)): UrlPath<(String, String)>,
) -> Result<(StatusCode, Json<DenyEntry>), AdminError> {
    let kind = parse_entry(&kind, &value)?;
    let added = state.service.repository.add_deny(kind, &value)?;
    tracing::info!(
        kind = kind.as_str(),
        value,
        added,
        "deny list entry added through the admin API"
    );
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let entry = DenyEntry {
        kind: kind.as_str(),
        value,
    };
    Ok((status, Json(entry)))
}

async fn remove_deny(
    State(state): State<AdminState>,
    UrlPath((kind, value)): UrlPath<(String, String)>,
) -> Result<StatusCode, AdminError> {
    let kind = parse_entry(&kind, &value)?;
    let removed = state.service.repository.remove_deny(kind, &value)?;
    tracing::info!(
        kind = kind.as_str(),
        value,
        removed,
        "deny list entry removed through the admin API"
    );
    if !removed {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            format!("the deny list has no {} entry '{value}'", kind.as_str()),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// One open upload, as the admin API lists it.
#[derive(Debug, Serialize)]
struct OpenUpload {
    upload_id: String,
    subject: String,
    client_id: String,
    patient: String,
    object: String,
    file_name: String,
    size: u64,
    part_count: u32,
    created_at: jiff::Timestamp,
    expires_at: jiff::Timestamp,
    correlation_id: String,
}

async fn open_uploads(
    State(state): State<AdminState>,
) -> Result<Json<Vec<OpenUpload>>, AdminError> {
    let uploads = state
        .service
        .repository
        .open_uploads()?
        .into_iter()
        .map(|upload| OpenUpload {
            upload_id: upload.id,
            subject: upload.subject,
            client_id: upload.client_id,
            patient: upload.patient,
            object: upload.object_key,
            file_name: upload.file_name,
            size: upload.size,
            part_count: upload.part_count,
            created_at: upload.created_at,
            expires_at: upload.expires_at,
            correlation_id: upload.correlation_id,
        })
        .collect();
    Ok(Json(uploads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_peers_are_recognised() {
        let cases = [
            ("127.0.0.1:5000", true),
            ("127.8.9.1:5000", true),
            ("[::1]:5000", true),
            ("[::ffff:127.0.0.1]:5000", true),
            ("192.168.1.20:5000", false),
            ("[::ffff:10.0.0.1]:5000", false),
            ("[2001:db8::1]:5000", false),
        ];
        for (address, expected) in cases {
            let address: SocketAddr = address.parse().unwrap();
            assert_eq!(is_loopback(&address), expected, "{address}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn token_file_is_private_and_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join(ADMIN_TOKEN_FILE);
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

        let token = AdminToken::create(folder.path()).unwrap();

        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(token.matches(written.trim()));
        assert!(!token.matches("old"));
    }
}
