//! The token endpoint (authorization code and refresh token grants) and the
//! revocation endpoint.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{Connection, OptionalExtension as _, params};
use sha2::{Digest as _, Sha256};

use super::authorize::is_form;
use super::params::Params;
use super::{CLIENT_ID, OAuthError, REFRESH_TOKEN_LIFETIME_SECONDS, fhir_user_url, set_no_store};
use crate::SharedState;
use crate::directory;
use crate::scopes::{Scope, Scopes};
use crate::tokens::{
    ACCESS_TOKEN_LIFETIME, AccessTokenClaims, AuthError, IdTokenClaims, Secret, decode_access_token,
};

/// Reads a form body and checks the public client's `client_id`
/// (RFC 6749 §2.3 and §3.2.1: a public client identifies itself only by it).
fn read_form(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Params, OAuthError> {
    let body = body.map_err(|rejection| OAuthError {
        status: rejection.status(),
        error: "invalid_request",
        description: if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "request body is larger than {} bytes",
                crate::web::MAX_BODY_BYTES
            )
        } else {
            rejection.body_text()
        },
    })?;
    if !is_form(headers) {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| OAuthError::invalid_request("request body is not UTF-8"))?;
    let params = Params::parse(text).map_err(OAuthError::invalid_request)?;

    let client_id = params
        .require("client_id")
        .map_err(OAuthError::invalid_client)?;
    if client_id != CLIENT_ID {
        return Err(OAuthError::invalid_client(format!(
            "client_id '{client_id}' is not registered; the sandbox knows only '{CLIENT_ID}'"
        )));
    }
    Ok(params)
}

pub(super) async fn token(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let params = read_form(&headers, body)?;

    let response = match params.get("grant_type") {
        Some("authorization_code") => redeem_code(&state, &params)?,
        Some("refresh_token") => refresh(&state, &params)?,
        Some(other) => {
            return Err(OAuthError {
                status: StatusCode::BAD_REQUEST,
                error: "unsupported_grant_type",
                description: format!(
                    "grant_type '{other}' is not supported; use authorization_code or refresh_token"
                ),
            });
        }
        None => {
            return Err(OAuthError::invalid_request(
                "missing required parameter 'grant_type'",
            ));
        }
    };

    let mut response = Json(response).into_response();
    set_no_store(&mut response);
    Ok(response)
}

/// Grant stored with an authorization code.
struct CodeGrant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    subject: String,
    scope: String,
    patient: Option<String>,
    nonce: Option<String>,
    expires_at: i64,
    redeemed_at: Option<i64>,
    family_id: Option<String>,
}

/// RFC 6749 §4.1.3 with RFC 7636 §4.6.
fn redeem_code(state: &SharedState, params: &Params) -> Result<serde_json::Value, OAuthError> {
    let code = Secret::new(
        params
            .require("code")
            .map_err(OAuthError::invalid_request)?,
    );
    let redirect_uri = params
        .require("redirect_uri")
        .map_err(OAuthError::invalid_request)?;
    let verifier = Secret::new(
        params
            .require("code_verifier")
            .map_err(OAuthError::invalid_request)?,
    );
    if !is_valid_verifier(verifier.expose()) {
        return Err(OAuthError::invalid_request(
            "code_verifier must be 43 to 128 characters from A-Z a-z 0-9 - . _ ~",
        ));
    }

    let mut connection = state.db.lock();
    let transaction = connection.transaction()?;
    let now = jiff::Timestamp::now().as_second();
    let code_hash = code.sha256_hex();
    let grant = transaction
        .query_row(
            "SELECT client_id, redirect_uri, code_challenge, subject, scope, patient, nonce,
                    expires_at, redeemed_at, family_id
             FROM authorization_codes WHERE code_sha256 = ?1",
            [&code_hash],
            |row| {
                Ok(CodeGrant {
                    client_id: row.get(0)?,
                    redirect_uri: row.get(1)?,
                    code_challenge: row.get(2)?,
                    subject: row.get(3)?,
                    scope: row.get(4)?,
                    patient: row.get(5)?,
                    nonce: row.get(6)?,
                    expires_at: row.get(7)?,
                    redeemed_at: row.get(8)?,
                    family_id: row.get(9)?,
                })
            },
        )
        .optional()?;
    let Some(grant) = grant else {
        return Err(OAuthError::invalid_grant(
            "authorization code is not valid; sign in again",
        ));
    };

    // RFC 6749 §4.1.2: a code used twice is rejected, and the tokens issued
    // from it should be revoked, since one of the two users stole it.
    if grant.redeemed_at.is_some() {
        if let Some(family_id) = &grant.family_id {
            revoke_family(&transaction, family_id, now)?;
        }
        transaction.commit()?;
        tracing::warn!(user = %grant.subject, "authorization code replayed; revoked the tokens issued from it");
        return Err(OAuthError::invalid_grant(
            "authorization code was already used; the tokens issued from it are revoked",
        ));
    }

    // From here on every failure burns the code, so a stolen code cannot be
    // tried against many verifiers.
    transaction.execute(
        "UPDATE authorization_codes SET redeemed_at = ?2 WHERE code_sha256 = ?1",
        params![code_hash, now],
    )?;
    let failure = if grant.expires_at <= now {
        Some("authorization code has expired; sign in again".to_owned())
    } else if grant.client_id != CLIENT_ID {
        Some("authorization code was issued to another client".to_owned())
    } else if grant.redirect_uri != redirect_uri {
        Some(format!(
            "redirect_uri '{redirect_uri}' differs from the one in the authorization request"
        ))
    } else if s256(verifier.expose()) != grant.code_challenge {
        Some("code_verifier does not match the code_challenge".to_owned())
    } else {
        None
    };
    if let Some(description) = failure {
        transaction.commit()?;
        return Err(OAuthError::invalid_grant(description));
    }

    let family_id = uuid::Uuid::new_v4().to_string();
    transaction.execute(
        "INSERT INTO token_families (id, client_id, subject, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![family_id, grant.client_id, grant.subject, now],
    )?;
    transaction.execute(
        "UPDATE authorization_codes SET family_id = ?2 WHERE code_sha256 = ?1",
        params![code_hash, family_id],
    )?;
    let scopes = Scopes::parse(&grant.scope).map_err(OAuthError::server_error)?;
    let response = issue_tokens(
        state,
        &transaction,
        &Issue {
            family_id: &family_id,
            subject: &grant.subject,
            scopes: &scopes,
            patient: grant.patient.as_deref(),
            nonce: grant.nonce.as_deref(),
            now,
        },
    )?;
    transaction.commit()?;
    tracing::info!(user = %grant.subject, family = %family_id, "redeemed an authorization code");
    Ok(response)
}

/// RFC 6749 §6, with refresh token rotation: each refresh token works once,
/// and presenting a used one revokes its whole family (OAuth 2.0 Security
/// BCP, RFC 9700 §4.14.2).
///
/// One exception keeps a client that lost a rotated token signed in: within
/// [`AppState::refresh_token_grace`](crate::AppState) of its rotation, a
/// used token is accepted once more if the token issued in its place has not
/// been used yet. That replacement then stops working, so whichever of two
/// holders presents it later revokes the family.
fn refresh(state: &SharedState, params: &Params) -> Result<serde_json::Value, OAuthError> {
    let token = Secret::new(
        params
            .require("refresh_token")
            .map_err(OAuthError::invalid_request)?,
    );
    let requested = params
        .get("scope")
        .map(Scopes::parse)
        .transpose()
        .map_err(|error| OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_scope",
            description: error.to_string(),
        })?;

    let mut connection = state.db.lock();
    let transaction = connection.transaction()?;
    let now = jiff::Timestamp::now().as_second();
    let token_hash = token.sha256_hex();
    let Some(presented) = presented_refresh_token(&transaction, &token_hash)? else {
        return Err(OAuthError::invalid_grant(
            "refresh token is not valid; sign in again",
        ));
    };
    let family_id = presented.family_id.as_str();
    let subject = presented.subject.as_str();

    if presented.revoked_at.is_some() {
        return Err(OAuthError::invalid_grant(
            "refresh token has been revoked; sign in again",
        ));
    }
    if let Some(rotated_at) = presented.rotated_at {
        let grace = i64::try_from(state.refresh_token_grace.as_secs()).unwrap_or(i64::MAX);
        let in_grace = now - rotated_at < grace
            && presented.grace_used_at.is_none()
            && presented.expires_at > now
            && presented.client_id == CLIENT_ID;
        let replaced = match &presented.successor_sha256 {
            Some(successor) if in_grace => retire_unused_successor(&transaction, successor, now)?,
            _ => false,
        };
        if !replaced {
            revoke_family(&transaction, family_id, now)?;
            transaction.commit()?;
            tracing::warn!(user = %subject, family = %family_id, "refresh token reused; revoked its token family");
            return Err(OAuthError::invalid_grant(
                "refresh token was already used; all tokens of this sign-in are revoked, sign in again",
            ));
        }
        transaction.execute(
            "UPDATE refresh_tokens SET grace_used_at = ?2 WHERE token_sha256 = ?1",
            params![token_hash, now],
        )?;
        tracing::info!(user = %subject, family = %family_id, "accepted the previous refresh token within its grace period");
    }
    if presented.expires_at <= now {
        return Err(OAuthError::invalid_grant(
            "refresh token has expired; sign in again",
        ));
    }
    if presented.client_id != CLIENT_ID {
        return Err(OAuthError::invalid_grant(
            "refresh token was issued to another client",
        ));
    }

    let granted = Scopes::parse(&presented.scope).map_err(OAuthError::server_error)?;
    // RFC 6749 §6: a refresh may narrow the scope, never widen it.
    let scopes = match requested {
        Some(requested) => {
            if let Some(extra) = requested.iter().find(|scope| !granted.contains(scope)) {
                return Err(OAuthError {
                    status: StatusCode::BAD_REQUEST,
                    error: "invalid_scope",
                    description: format!("scope '{extra}' was not granted to this refresh token"),
                });
            }
            requested
        }
        None => granted,
    };

    let response = issue_tokens(
        state,
        &transaction,
        &Issue {
            family_id,
            subject,
            scopes: &scopes,
            patient: presented.patient.as_deref(),
            nonce: None,
            now,
        },
    )?;
    let successor = response["refresh_token"]
        .as_str()
        .map(|issued| Secret::new(issued).sha256_hex());
    transaction.execute(
        "UPDATE refresh_tokens SET rotated_at = coalesce(rotated_at, ?2), successor_sha256 = ?3
         WHERE token_sha256 = ?1",
        params![token_hash, now, successor],
    )?;
    transaction.commit()?;
    tracing::info!(user = %subject, family = %family_id, "rotated a refresh token");
    Ok(response)
}

/// A stored refresh token with its family.
struct PresentedRefreshToken {
    family_id: String,
    scope: String,
    patient: Option<String>,
    expires_at: i64,
    rotated_at: Option<i64>,
    successor_sha256: Option<String>,
    grace_used_at: Option<i64>,
    subject: String,
    client_id: String,
    revoked_at: Option<i64>,
}

fn presented_refresh_token(
    connection: &Connection,
    token_hash: &str,
) -> rusqlite::Result<Option<PresentedRefreshToken>> {
    connection
        .query_row(
            "SELECT r.family_id, r.scope, r.patient, r.expires_at, r.rotated_at,
                    r.successor_sha256, r.grace_used_at, f.subject, f.client_id, f.revoked_at
             FROM refresh_tokens r JOIN token_families f ON f.id = r.family_id
             WHERE r.token_sha256 = ?1",
            [token_hash],
            |row| {
                Ok(PresentedRefreshToken {
                    family_id: row.get(0)?,
                    scope: row.get(1)?,
                    patient: row.get(2)?,
                    expires_at: row.get(3)?,
                    rotated_at: row.get(4)?,
                    successor_sha256: row.get(5)?,
                    grace_used_at: row.get(6)?,
                    subject: row.get(7)?,
                    client_id: row.get(8)?,
                    revoked_at: row.get(9)?,
                })
            },
        )
        .optional()
}

/// Ends a rotated token's successor unless it was already used; returns
/// whether it did. The retired successor counts as used, with its grace
/// spent, so presenting it later revokes the family.
fn retire_unused_successor(
    connection: &Connection,
    successor_sha256: &str,
    now: i64,
) -> rusqlite::Result<bool> {
    let changed = connection.execute(
        "UPDATE refresh_tokens SET rotated_at = ?2, grace_used_at = ?2
         WHERE token_sha256 = ?1 AND rotated_at IS NULL",
        params![successor_sha256, now],
    )?;
    Ok(changed == 1)
}

struct Issue<'a> {
    family_id: &'a str,
    subject: &'a str,
    scopes: &'a Scopes,
    patient: Option<&'a str>,
    nonce: Option<&'a str>,
    now: i64,
}

/// Issues an access token, and a refresh token with `offline_access` and an
/// ID token with `openid`, and builds the token response (RFC 6749 §5.1
/// with the SMART launch context).
fn issue_tokens(
    state: &SharedState,
    connection: &Connection,
    issue: &Issue<'_>,
) -> Result<serde_json::Value, OAuthError> {
    let practitioner = directory::practitioner(connection, issue.subject)?.ok_or_else(|| {
        OAuthError::invalid_grant(format!("user '{}' no longer exists", issue.subject))
    })?;
    let fhir_user = fhir_user_url(&state.urls.fhir, &practitioner.id);
    let lifetime = ACCESS_TOKEN_LIFETIME.as_secs();
    let expires_at = issue.now + lifetime;

    let jti = uuid::Uuid::new_v4().to_string();
    let access_token = state.signing_key.sign(&AccessTokenClaims {
        iss: state.urls.issuer.clone(),
        aud: state.urls.fhir.clone(),
        sub: practitioner.id.clone(),
        scope: issue.scopes.to_string(),
        patient: issue.patient.map(str::to_owned),
        fhir_user: fhir_user.clone(),
        client_id: CLIENT_ID.to_owned(),
        iat: issue.now,
        exp: expires_at,
        jti: jti.clone(),
    });
    connection.execute(
        "INSERT INTO access_tokens (jti, family_id, expires_at) VALUES (?1, ?2, ?3)",
        params![jti, issue.family_id, expires_at],
    )?;

    let mut response = serde_json::json!({
        "access_token": access_token.expose(),
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": issue.scopes.to_string(),
    });
    if let Some(patient) = issue.patient {
        response["patient"] = patient.into();
    }

    if issue.scopes.contains(&Scope::OfflineAccess) {
        let refresh_token = Secret::generate();
        connection.execute(
            "INSERT INTO refresh_tokens (token_sha256, family_id, scope, patient, issued_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                refresh_token.sha256_hex(),
                issue.family_id,
                issue.scopes.to_string(),
                issue.patient,
                issue.now,
                issue.now + REFRESH_TOKEN_LIFETIME_SECONDS,
            ],
        )?;
        response["refresh_token"] = refresh_token.expose().into();
    }

    if issue.scopes.contains(&Scope::OpenId) {
        let id_token = state.signing_key.sign(&IdTokenClaims {
            iss: state.urls.issuer.clone(),
            aud: CLIENT_ID.to_owned(),
            sub: practitioner.id.clone(),
            fhir_user,
            name: practitioner.display_name(),
            iat: issue.now,
            exp: expires_at,
            nonce: issue.nonce.map(str::to_owned),
        });
        response["id_token"] = id_token.expose().into();
    }
    Ok(response)
}

fn revoke_family(connection: &Connection, family_id: &str, now: i64) -> rusqlite::Result<()> {
    connection.execute(
        "UPDATE token_families SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![family_id, now],
    )?;
    Ok(())
}

/// RFC 7636 §4.1: `code_verifier = 43*128unreserved`.
fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte))
}

/// RFC 7636 §4.2: `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`.
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7009 §2. Revoking a refresh token revokes its family, including the
/// access tokens issued with it (§2.1 allows this); revoking an access token
/// revokes that token only. An unknown or already revoked token still gets
/// 200 (§2.2).
pub(super) async fn revoke(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let params = read_form(&headers, body)?;
    let token = Secret::new(
        params
            .require("token")
            .map_err(OAuthError::invalid_request)?,
    );
    let now = jiff::Timestamp::now().as_second();

    let connection = state.db.lock();
    let family = connection
        .query_row(
            "SELECT r.family_id, f.client_id FROM refresh_tokens r
             JOIN token_families f ON f.id = r.family_id WHERE r.token_sha256 = ?1",
            [token.sha256_hex()],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
        )
        .optional()?;
    if let Some((family_id, client_id)) = family {
        if client_id != CLIENT_ID {
            return Err(OAuthError::invalid_request(
                "token was issued to another client",
            ));
        }
        revoke_family(&connection, &family_id, now)?;
        tracing::info!(family = %family_id, "revoked a refresh token and its token family");
    } else {
        match decode_access_token(
            &token,
            state.signing_key.decoding_key(),
            &state.urls.issuer,
            &state.urls.fhir,
        ) {
            Ok(claims) => {
                connection.execute(
                    "UPDATE access_tokens SET revoked_at = ?2 WHERE jti = ?1 AND revoked_at IS NULL",
                    params![claims.jti, now],
                )?;
                tracing::info!(jti = %claims.jti, "revoked an access token");
            }
            // An expired access token can no longer be used; nothing to do.
            Err(AuthError::Expired) => {}
            Err(_) => tracing::debug!("revocation request for an unknown token"),
        }
    }

    let mut response = StatusCode::OK.into_response();
    set_no_store(&mut response);
    Ok(response)
}
