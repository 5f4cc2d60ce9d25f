//! Token issuing and verification: the ES256 signing key, access tokens and
//! ID tokens as JWTs, opaque secrets (codes, refresh tokens), and the
//! [`TokenVerifier`] trait with its axum extractor [`Authenticated`].
//!
//! The signing key is a P-256 key generated at first start and kept in the
//! data folder as PKCS#8 PEM with mode 0600. Its `kid` is the RFC 7638 JWK
//! thumbprint, so the same key always publishes the same `kid`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::db::Db;
use crate::scopes::Scopes;

/// File name of the signing key inside the data folder.
pub const SIGNING_KEY_FILE: &str = "jwt-signing-key.pem";

/// Lifetime of an access token.
pub const ACCESS_TOKEN_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

/// A bearer credential or one-time secret: access token, refresh token,
/// authorization code or PKCE verifier. `Debug` never prints the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Generates 256 random bits, base64url-encoded without padding.
    pub fn generate() -> Secret {
        let bytes: [u8; 32] = rand::random();
        Secret(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of the value: the only form in which codes and refresh
    /// tokens are stored.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Errors loading or creating the signing key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to read the signing key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write the signing key {path}: {source}; check that the data folder is writable")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the signing key {path} is not a PKCS#8 P-256 private key; delete it to generate a new one")]
    Invalid { path: String },
}

/// The ES256 key pair that signs access and ID tokens.
pub struct SigningKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    kid: String,
    jwk: serde_json::Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads the key from `data_dir`, generating and storing it on first start.
    pub fn load_or_generate(data_dir: &Path) -> Result<SigningKey, KeyError> {
        let path = data_dir.join(SIGNING_KEY_FILE);
        let path_text = path.display().to_string();

        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let pem = generate_pem();
                write_private_file(&path, pem.as_bytes()).map_err(|source| KeyError::Write {
                    path: path_text.clone(),
                    source,
                })?;
                tracing::info!(path = %path_text, "generated a new token signing key");
                pem
            }
            Err(source) => {
                return Err(KeyError::Read {
                    path: path_text,
                    source,
                });
            }
        };

        SigningKey::from_pem(&pem).ok_or(KeyError::Invalid { path: path_text })
    }

    fn from_pem(pem: &str) -> Option<SigningKey> {
        let secret = p256::SecretKey::from_pkcs8_pem(pem).ok()?;
        let point = secret.public_key().to_encoded_point(false);
        let x = URL_SAFE_NO_PAD.encode(point.x()?);
        let y = URL_SAFE_NO_PAD.encode(point.y()?);

        // RFC 7638 §3.2: members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));

        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).ok()?;
        let decoding = DecodingKey::from_ec_components(&x, &y).ok()?;
        let jwk = serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": x,
            "y": y,
            "use": "sig",
            "alg": "ES256",
            "kid": kid,
        });
        Some(SigningKey {
            encoding,
            decoding,
            kid,
            jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK Set published at `/jwks`.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    /// Signs `claims` as an ES256 JWT with this key's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Secret {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, claims, &self.encoding)
            .expect("ES256 signing of serializable claims with a valid key cannot fail");
        Secret(token)
    }

    pub fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

fn generate_pem() -> String {
    loop {
        // A random 256-bit string is a valid P-256 scalar unless it is zero or
        // not below the group order, which happens with probability ~2^-32.
        let bytes: [u8; 32] = rand::random();
        if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
            let pem = secret
                .to_pkcs8_pem(LineEnding::LF)
                .expect("PKCS#8 encoding of a valid P-256 key cannot fail");
            return pem.to_string();
        }
    }
}

#[cfg(unix)]
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(not(unix))]
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    // TODO: restrict the file's ACL to the current user on Windows.
    std::fs::write(path, contents)
}

/// Claims of an access token as they appear in the JWT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(rename = "fhirUser")]
    pub fhir_user: String,
    pub client_id: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// Claims of an OpenID Connect ID token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    /// The client id (OpenID Connect Core §2).
    pub aud: String,
    pub sub: String,
    #[serde(rename = "fhirUser")]
    pub fhir_user: String,
    pub name: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// What a verified access token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    /// The `sub` claim: the user's id in the directory.
    pub subject: String,
    /// Absolute URL of the user's FHIR resource, e.g. `…/fhir/Practitioner/dr-rivera`.
    pub fhir_user: String,
    pub scopes: Scopes,
    /// The patient in context, present when `patient/` scopes were granted.
    pub patient: Option<String>,
    pub client_id: String,
    pub expires_at: jiff::Timestamp,
    pub jti: String,
}

/// Why a bearer token was not accepted. Each message is safe to send to the
/// client: none contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing Authorization header; send 'Authorization: Bearer <access token>'")]
    Missing,
    #[error("the Authorization header is not a Bearer token")]
    NotBearer,
    #[error("the access token is not a well-formed JWT signed with ES256")]
    Malformed,
    #[error("the access token signature does not verify against this server's keys")]
    BadSignature,
    #[error("the access token has expired; refresh it or sign in again")]
    Expired,
    #[error("the access token was issued by another server (iss)")]
    WrongIssuer,
    #[error("the access token is for another resource server (aud)")]
    WrongAudience,
    #[error("the access token has been revoked")]
    Revoked,
    #[error("the access token could not be checked: {0}")]
    Unavailable(String),
}

/// Verifies bearer access tokens for a resource server.
pub trait TokenVerifier: Send + Sync {
    /// Checks the token's signature, `iss`, `aud`, `exp` and revocation state.
    fn verify(&self, bearer: &Secret) -> Result<AccessClaims, AuthError>;
}

/// The verifier a router uses, taken from its state with [`FromRef`].
#[derive(Clone)]
pub struct SharedVerifier(pub Arc<dyn TokenVerifier>);

/// Verifies the sandbox's own tokens: its key, issuer, audience, and the
/// revocation state in its database.
pub struct SandboxVerifier {
    key: Arc<SigningKey>,
    issuer: String,
    audience: String,
    db: Db,
}

impl SandboxVerifier {
    pub fn new(key: Arc<SigningKey>, issuer: String, audience: String, db: Db) -> SandboxVerifier {
        SandboxVerifier {
            key,
            issuer,
            audience,
            db,
        }
    }
}

/// Decodes and validates an access token JWT against one key, issuer and
/// audience, without any revocation check.
pub fn decode_access_token(
    bearer: &Secret,
    key: &DecodingKey,
    issuer: &str,
    audience: &str,
) -> Result<AccessClaims, AuthError> {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 30;

    let data = jsonwebtoken::decode::<AccessTokenClaims>(bearer.expose(), key, &validation)
        .map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed,
            }
        })?;
    let claims = data.claims;

    let scopes = Scopes::parse(&claims.scope).map_err(|_| AuthError::Malformed)?;
    let expires_at = jiff::Timestamp::from_second(claims.exp).map_err(|_| AuthError::Malformed)?;
    Ok(AccessClaims {
        subject: claims.sub,
        fhir_user: claims.fhir_user,
        scopes,
        patient: claims.patient,
        client_id: claims.client_id,
        expires_at,
        jti: claims.jti,
    })
}

impl TokenVerifier for SandboxVerifier {
    fn verify(&self, bearer: &Secret) -> Result<AccessClaims, AuthError> {
        let claims = decode_access_token(
            bearer,
            self.key.decoding_key(),
            &self.issuer,
            &self.audience,
        )?;

        let revoked: Option<bool> = {
            let connection = self.db.lock();
            let mut statement = connection
                .prepare_cached(
                    "SELECT a.revoked_at IS NOT NULL OR f.revoked_at IS NOT NULL
                     FROM access_tokens a JOIN token_families f ON f.id = a.family_id
                     WHERE a.jti = ?1",
                )
                .map_err(|error| AuthError::Unavailable(error.to_string()))?;
            let mut rows = statement
                .query([&claims.jti])
                .map_err(|error| AuthError::Unavailable(error.to_string()))?;
            match rows
                .next()
                .map_err(|error| AuthError::Unavailable(error.to_string()))?
            {
                Some(row) => Some(
                    row.get(0)
                        .map_err(|error: rusqlite::Error| AuthError::Unavailable(error.to_string()))?,
                ),
                None => None,
            }
        };

        match revoked {
            Some(false) => Ok(claims),
            // A token this database never issued (for example after the data
            // folder was reset with the same key) counts as revoked.
            Some(true) | None => Err(AuthError::Revoked),
        }
    }
}

/// Extracts and verifies `Authorization: Bearer`, rejecting with 401 and an
/// RFC 6750 §3 `WWW-Authenticate` challenge.
#[derive(Debug, Clone)]
pub struct Authenticated(pub AccessClaims);

/// The 401 response for a request without a valid access token.
#[derive(Debug)]
pub struct AuthRejection(pub AuthError);

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let description = self.0.to_string();
        // RFC 6750 §3.1: a request without credentials gets no error code.
        let challenge = match self.0 {
            AuthError::Missing => r#"Bearer realm="ferry-gateway""#.to_owned(),
            AuthError::Unavailable(_) => {
                tracing::error!(error = %description, "token verification failed");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(serde_json::json!({
                        "error": "temporarily_unavailable",
                        "error_description": "the access token could not be checked; retry later",
                    })),
                )
                    .into_response();
            }
            _ => format!(
                r#"Bearer realm="ferry-gateway", error="invalid_token", error_description="{}""#,
                description.replace('"', "'")
            ),
        };

        let mut response = (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "error": "invalid_token",
                "error_description": description,
            })),
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// Reads the bearer token from request headers.
pub fn bearer_from_parts(parts: &Parts) -> Result<Secret, AuthError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    // RFC 7235 §2.1: the scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(Secret(token.trim().to_owned()))
}

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    SharedVerifier: FromRef<S>,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let bearer = bearer_from_parts(parts).map_err(AuthRejection)?;
        let verifier = SharedVerifier::from_ref(state);
        let claims = verifier.0.verify(&bearer).map_err(AuthRejection)?;
        Ok(Authenticated(claims))
    }
}
