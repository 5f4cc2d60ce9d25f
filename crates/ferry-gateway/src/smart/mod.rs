//! SMART App Launch 2 authorization server for the sandbox.
//!
//! Implements the standalone launch with the authorization code grant for one
//! registered public client, `ferry-desktop`. It requires PKCE S256
//! (RFC 7636) and loopback redirect URIs on any port (RFC 8252 §7.3). It adds
//! `iss` to every authorization response (RFC 9207), rotates refresh tokens
//! with reuse detection, and revokes tokens (RFC 7009). Left out on purpose: the
//! implicit grant, EHR launch, confidential clients and dynamic registration.

mod authorize;
mod params;
mod signin;
mod token;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::SharedState;

pub use authorize::narrow_scopes;

/// The one registered client: Ferry's desktop app and CLI, a public client.
pub const CLIENT_ID: &str = "ferry-desktop";

/// Lifetime of an authorization code. RFC 6749 §4.1.2 recommends at most
/// 10 minutes; a loopback redirect needs a few seconds.
pub const CODE_LIFETIME_SECONDS: i64 = 60;

/// Lifetime of a refresh token. Each use replaces it with a new one.
pub const REFRESH_TOKEN_LIFETIME_SECONDS: i64 = 30 * 24 * 3600;

/// Default time after a rotation during which the previous refresh token is
/// accepted once more (see `refresh` in the token endpoint).
pub const REFRESH_TOKEN_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/.well-known/smart-configuration", get(smart_configuration))
        .route("/fhir/.well-known/smart-configuration", get(smart_configuration))
        .route("/jwks", get(jwks))
        .route(
            "/authorize",
            get(authorize::authorize_get).post(authorize::authorize_post),
        )
        .route("/token", axum::routing::post(token::token))
        .route("/revoke", axum::routing::post(token::revoke))
        .layer(crate::web::body_limit())
}

/// SMART configuration (SMART App Launch 2, "Conformance"): it lists only
/// what this server implements.
async fn smart_configuration(State(state): State<SharedState>) -> Response {
    let urls = &state.urls;
    let body = serde_json::json!({
        "issuer": urls.issuer,
        "jwks_uri": urls.jwks,
        "authorization_endpoint": urls.authorize,
        "token_endpoint": urls.token,
        "revocation_endpoint": urls.revoke,
        (ferry_api::SMART_CONFIGURATION_GRANT_API_FIELD): format!("{}{}", urls.issuer, crate::grant::BASE_PATH),
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "response_types_supported": ["code"],
        "token_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": [
            "openid", "fhirUser", "launch/patient", "offline_access",
            "patient/Patient.rs", "patient/Practitioner.rs", "patient/DocumentReference.crs",
            "user/Patient.rs", "user/Practitioner.rs", "user/DocumentReference.crs",
        ],
        "capabilities": [
            "launch-standalone",
            "client-public",
            "context-standalone-patient",
            "permission-patient",
            "permission-user",
            "permission-offline",
            "permission-v2",
            "sso-openid-connect",
        ],
    });
    Json(body).into_response()
}

async fn jwks(State(state): State<SharedState>) -> Response {
    Json(state.signing_key.jwks()).into_response()
}

/// An OAuth 2.0 error response from the token or revocation endpoint
/// (RFC 6749 §5.2).
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_request",
            description: description.into(),
        }
    }

    pub fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_grant",
            description: description.into(),
        }
    }

    pub fn invalid_client(description: impl Into<String>) -> OAuthError {
        OAuthError {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
        }
    }

    /// Builds a 500 and logs its cause once; the client sees a generic message.
    pub fn server_error(error: impl std::fmt::Display) -> OAuthError {
        tracing::error!(%error, "authorization server error");
        OAuthError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: "internal error; see the gateway log".to_owned(),
        }
    }
}

impl From<crate::db::DbError> for OAuthError {
    fn from(error: crate::db::DbError) -> OAuthError {
        OAuthError::server_error(error)
    }
}

impl From<rusqlite::Error> for OAuthError {
    fn from(error: rusqlite::Error) -> OAuthError {
        OAuthError::server_error(error)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        let mut response = (self.status, Json(body)).into_response();
        set_no_store(&mut response);
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6749 §5.2: a 401 for invalid_client carries a challenge.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="ferry-gateway""#),
            );
        }
        response
    }
}

/// RFC 6749 §5.1: responses carrying tokens must not be cached.
pub(crate) fn set_no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// Builds the `fhirUser` URL of a practitioner.
pub(crate) fn fhir_user_url(fhir_base: &str, practitioner_id: &str) -> String {
    format!("{fhir_base}/Practitioner/{practitioner_id}")
}
