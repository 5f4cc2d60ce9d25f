//! Verification of the OpenID Connect id_token that carries `fhirUser`.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{LoginError, SmartConfiguration};
use crate::http::{display_url, read_json};

/// The id_token claims Ferry uses.
#[derive(Debug, Clone, Deserialize)]
pub struct IdTokenClaims {
    pub sub: String,
    #[serde(rename = "fhirUser", default)]
    pub fhir_user: Option<String>,
    #[serde(default)]
    pub nonce: Option<String>,
}

/// Algorithms accepted for id_token signatures: asymmetric only, because a
/// public client has no secret to check an HMAC with.
const ACCEPTED_ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Verifies an id_token from the token endpoint and returns its claims.
///
/// With a `jwks_uri` in discovery, the signature is checked with the key
/// named by the token's `kid`, and `iss` (when discovery has an issuer),
/// `aud` (the client id) and `exp` are validated. Without a `jwks_uri`
/// only the claims are read: OpenID Connect Core §3.1.3.7 allows a client
/// to rely on TLS server authentication of the token endpoint instead of
/// the signature. The `nonce` sent in the authorization request must come
/// back unchanged in both cases.
pub async fn verify_id_token(
    http: &reqwest::Client,
    config: &SmartConfiguration,
    client_id: &str,
    id_token: &str,
    nonce: &str,
) -> Result<IdTokenClaims, LoginError> {
    let claims = match &config.jwks_uri {
        Some(jwks_uri) => {
            let response = http
                .get(jwks_uri.clone())
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .map_err(|error| {
                    id_token_error(format!(
                        "fetching the keys from {} failed: {error}",
                        display_url(jwks_uri)
                    ))
                })?;
            let keys: JwkSet = read_json(response).await?;
            decode_verified(&keys, config.issuer.as_deref(), client_id, id_token)?
        }
        None => {
            // NOTE: without a JWKS the signature is not checked; see above.
            jsonwebtoken::dangerous::insecure_decode::<IdTokenClaims>(id_token)
                .map_err(|error| id_token_error(format!("it is not a readable JWT: {error}")))?
                .claims
        }
    };

    if claims.nonce.as_deref() != Some(nonce) {
        return Err(id_token_error(
            "its nonce does not match the sign-in request".to_owned(),
        ));
    }
    Ok(claims)
}

fn decode_verified(
    keys: &JwkSet,
    issuer: Option<&str>,
    client_id: &str,
    id_token: &str,
) -> Result<IdTokenClaims, LoginError> {
    let header = jsonwebtoken::decode_header(id_token)
        .map_err(|error| id_token_error(format!("its header is invalid: {error}")))?;
    if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
        return Err(id_token_error(format!(
            "it is signed with {:?}, which Ferry does not accept",
            header.alg
        )));
    }

    let key = match &header.kid {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or_else(|| id_token_error("none of the server's keys matches its `kid`".to_owned()))?;
    let key = DecodingKey::from_jwk(key)
        .map_err(|error| id_token_error(format!("the server's key is unusable: {error}")))?;

    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[client_id]);
    match issuer {
        Some(issuer) => {
            validation.set_issuer(&[issuer]);
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        }
        None => validation.set_required_spec_claims(&["exp", "aud", "sub"]),
    }

    jsonwebtoken::decode::<IdTokenClaims>(id_token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|error| id_token_error(format!("it failed verification: {error}")))
}

fn id_token_error(detail: String) -> LoginError {
    LoginError::IdToken(detail)
}
