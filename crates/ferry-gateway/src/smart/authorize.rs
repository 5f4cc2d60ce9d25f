//! The authorization endpoint: request validation, the sign-in choice, scope
//! narrowing and code issuing.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::params;
use url::Url;

use super::params::Params;
use super::{CLIENT_ID, CODE_LIFETIME_SECONDS, signin};
use crate::directory::{self, Role};
use crate::scopes::{Context, Permission, Permissions, RESOURCE_TYPES, Scope, Scopes};
use crate::tokens::Secret;
use crate::{AutoLogin, SharedState};

/// A validated authorization request (RFC 6749 §4.1.1 with RFC 7636 §4.3).
#[derive(Debug)]
pub(super) struct AuthorizationRequest {
    redirect_uri: Url,
    /// `redirect_uri` exactly as the client sent it. RFC 6749 §4.1.3 compares
    /// the token request's value with it, and the parsed form may differ
    /// (`http://127.0.0.1:5000` parses as `http://127.0.0.1:5000/`).
    redirect_uri_text: String,
    state: Option<String>,
    requested: Scopes,
    code_challenge: String,
    nonce: Option<String>,
    /// The request's parameters, repeated as hidden fields of the sign-in form.
    pub(super) forwarded: Vec<(String, String)>,
}

/// Why an authorization request failed, and so how the error is returned.
#[derive(Debug)]
enum AuthorizeError {
    /// RFC 6749 §4.1.2.1: with a bad `client_id` or `redirect_uri` the user
    /// sees the error and is not redirected.
    Page(String),
    /// Every other error goes back to the client's redirect URI.
    Redirect {
        redirect_uri: Url,
        state: Option<String>,
        error: &'static str,
        description: String,
    },
}

/// Longest value of one authorization request parameter. The longest legitimate
/// values, `scope` and `redirect_uri`, need a few hundred bytes.
const MAX_PARAMETER_BYTES: usize = 4096;

/// Parameters of an authorization response (RFC 6749 §4.1.2 and §4.1.2.1,
/// RFC 9207 §2).
const RESPONSE_PARAMETERS: &[&str] = &[
    "code",
    "state",
    "iss",
    "error",
    "error_description",
    "error_uri",
];

/// Parameters that belong to the sign-in form, not to the OAuth request.
const SIGN_IN_FIELDS: &[&str] = &["user", "patient"];

pub(super) async fn authorize_get(
    State(state): State<SharedState>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.as_deref().unwrap_or("")) {
        Ok(params) => params,
        Err(problem) => return signin::error_page(StatusCode::BAD_REQUEST, &problem),
    };
    let request = match validate(&state, &params) {
        Ok(request) => request,
        Err(error) => return error.into_response(&state),
    };

    // A login_hint chooses per request; --auto-login chooses for all. Both
    // are sandbox conveniences that skip the sign-in page.
    let choice = match params.get("login_hint") {
        Some(hint) => match hint.parse::<AutoLogin>() {
            Ok(choice) => Some(choice),
            Err(problem) => {
                return signin::page(&state, &request, Some(&format!("login_hint {problem}")))
                    .await;
            }
        },
        None => state.auto_login.clone(),
    };
    match choice {
        Some(choice) => complete(&state, &request, &choice).await,
        None => signin::page(&state, &request, None).await,
    }
}

pub(super) async fn authorize_post(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // TODO: the sign-in form has no CSRF token; acceptable for a loopback
    // sandbox without real accounts, not for a deployed sign-in page.
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return signin::error_page(
                rejection.status(),
                &format!("sign-in form: {}", rejection.body_text()),
            );
        }
    };
    if !is_form(&headers) {
        return signin::error_page(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the sign-in form must be sent as application/x-www-form-urlencoded",
        );
    }
    let params = match std::str::from_utf8(&body)
        .map_err(|_| "the sign-in form is not UTF-8".to_owned())
        .and_then(Params::parse)
    {
        Ok(params) => params,
        Err(problem) => return signin::error_page(StatusCode::BAD_REQUEST, &problem),
    };
    let request = match validate(&state, &params) {
        Ok(request) => request,
        Err(error) => return error.into_response(&state),
    };

    let Some(user) = params.get("user") else {
        return signin::page(&state, &request, Some("choose a user to sign in as")).await;
    };
    let choice = AutoLogin {
        user: user.to_owned(),
        patient: params.get("patient").map(str::to_owned),
    };
    complete(&state, &request, &choice).await
}

pub(super) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| {
            media_type
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn validate(state: &SharedState, params: &Params) -> Result<AuthorizationRequest, AuthorizeError> {
    // Checked before anything else, so an oversized `state` is never echoed
    // in a redirect and an oversized `nonce` never stored.
    if let Some((name, value)) = params
        .iter()
        .find(|(_, value)| value.len() > MAX_PARAMETER_BYTES)
    {
        return Err(AuthorizeError::Page(format!(
            "parameter '{name}' is {} bytes long; the limit is {MAX_PARAMETER_BYTES} bytes",
            value.len()
        )));
    }
    let client_id = params
        .get("client_id")
        .ok_or_else(|| AuthorizeError::Page("missing required parameter 'client_id'".to_owned()))?;
    if client_id != CLIENT_ID {
        return Err(AuthorizeError::Page(format!(
            "client_id '{client_id}' is not registered; the sandbox knows only '{CLIENT_ID}'"
        )));
    }
    let redirect_uri_text = params.get("redirect_uri").ok_or_else(|| {
        AuthorizeError::Page("missing required parameter 'redirect_uri'".to_owned())
    })?;
    let redirect_uri = check_redirect_uri(redirect_uri_text).map_err(AuthorizeError::Page)?;

    let client_state = params.get("state").map(str::to_owned);
    let redirect_error = |error: &'static str, description: String| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: client_state.clone(),
        error,
        description,
    };
    let invalid_request = |description: String| redirect_error("invalid_request", description);

    match params.get("response_type") {
        Some("code") => {}
        Some(other) => {
            return Err(redirect_error(
                "unsupported_response_type",
                format!("response_type '{other}' is not supported; use 'code'"),
            ));
        }
        None => {
            return Err(invalid_request(
                "missing required parameter 'response_type'".to_owned(),
            ));
        }
    }
    if params.get("launch").is_some() {
        return Err(invalid_request(
            "parameter 'launch' is for EHR launch, which this server does not support; use standalone launch".to_owned(),
        ));
    }

    // RFC 7636 §4.3 and SMART App Launch 2: S256 is required, so both a
    // missing method and 'plain' are rejected.
    match params.get("code_challenge_method") {
        Some("S256") => {}
        Some("plain") => {
            return Err(invalid_request(
                "code_challenge_method 'plain' is not supported; use S256".to_owned(),
            ));
        }
        Some(other) => {
            return Err(invalid_request(format!(
                "code_challenge_method '{other}' is not supported; use S256"
            )));
        }
        None => {
            return Err(invalid_request(
                "missing required parameter 'code_challenge_method'; PKCE with S256 is required"
                    .to_owned(),
            ));
        }
    }
    let code_challenge = params.get("code_challenge").ok_or_else(|| {
        invalid_request(
            "missing required parameter 'code_challenge'; PKCE with S256 is required".to_owned(),
        )
    })?;
    if !is_s256_challenge(code_challenge) {
        return Err(invalid_request(
            "code_challenge is not a base64url SHA-256 digest (43 characters without padding)"
                .to_owned(),
        ));
    }

    // SMART App Launch 2: `aud` names the FHIR server the token is for.
    let aud = params.get("aud").ok_or_else(|| {
        invalid_request(format!(
            "missing required parameter 'aud'; set it to the FHIR base URL {}",
            state.urls.fhir
        ))
    })?;
    if aud.trim_end_matches('/') != state.urls.fhir {
        return Err(invalid_request(format!(
            "aud '{aud}' is not this server's FHIR base URL; use {}",
            state.urls.fhir
        )));
    }

    let scope = params.get("scope").ok_or_else(|| {
        redirect_error(
            "invalid_scope",
            "missing required parameter 'scope'".to_owned(),
        )
    })?;
    let requested =
        Scopes::parse(scope).map_err(|error| redirect_error("invalid_scope", error.to_string()))?;

    let forwarded = params
        .iter()
        .filter(|(name, _)| {
            !SIGN_IN_FIELDS.contains(&name.as_str()) && name.as_str() != "login_hint"
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    Ok(AuthorizationRequest {
        redirect_uri,
        redirect_uri_text: redirect_uri_text.to_owned(),
        state: client_state,
        requested,
        code_challenge: code_challenge.to_owned(),
        nonce: params.get("nonce").map(str::to_owned),
        forwarded,
    })
}

/// Accepts loopback redirect URIs on any port (RFC 8252 §7.3): `http` with
/// the literal host `127.0.0.1` or `[::1]`. `localhost` is rejected because
/// RFC 8252 §8.3 calls it NOT RECOMMENDED: the name may resolve to a
/// non-loopback address or be answered by another program's listener.
pub(super) fn check_redirect_uri(text: &str) -> Result<Url, String> {
    let url = Url::parse(text)
        .map_err(|error| format!("redirect_uri '{text}' is not an absolute URL: {error}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(address)) => address == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(address)) => address == std::net::Ipv6Addr::LOCALHOST,
        _ => false,
    };
    if url.scheme() != "http" || !loopback {
        return Err(format!(
            "redirect_uri '{text}' is not registered for {CLIENT_ID}; use a loopback URI such as http://127.0.0.1:PORT/callback or http://[::1]:PORT/callback"
        ));
    }
    if url.port().is_none() {
        return Err(format!(
            "redirect_uri '{text}' has no port; name the port the client listens on"
        ));
    }
    // RFC 6749 §3.1.2: the redirect URI must not contain a fragment.
    if url.fragment().is_some() {
        return Err(format!(
            "redirect_uri '{text}' contains a fragment, which RFC 6749 forbids"
        ));
    }
    // RFC 6749 §3.1.2 allows a query, but one that already names a response
    // parameter would make the response carry it twice, and a client that
    // reads the first `code` or `state` would take the planted value.
    if let Some((name, _)) = url
        .query_pairs()
        .find(|(name, _)| RESPONSE_PARAMETERS.contains(&name.as_ref()))
    {
        return Err(format!(
            "redirect_uri '{text}' has the query parameter '{name}', which the authorization response sets; remove it"
        ));
    }
    Ok(url)
}

fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|digest| digest.len() == 32)
}

/// Narrows the requested scopes to what `role` may be granted: clinicians
/// get `patient/` scopes and `launch/patient`, imaging staff `user/` scopes.
/// Both get at most `rs` on Patient and Practitioner and `crs` on
/// DocumentReference; a `*` resource type is expanded to those types.
pub fn narrow_scopes(role: Role, requested: &Scopes) -> Scopes {
    let allowed_context = match role {
        Role::Clinician => Context::Patient,
        Role::ImagingStaff => Context::User,
    };
    let mut granted = Vec::new();
    for scope in requested.iter() {
        match scope {
            Scope::OpenId | Scope::FhirUser | Scope::OfflineAccess => granted.push(scope.clone()),
            Scope::LaunchPatient => {
                if role == Role::Clinician {
                    granted.push(scope.clone());
                }
            }
            Scope::Clinical {
                context,
                resource_type,
                permissions,
            } => {
                if *context != allowed_context {
                    continue;
                }
                let types: Vec<&str> = if resource_type == "*" {
                    RESOURCE_TYPES.to_vec()
                } else {
                    vec![resource_type.as_str()]
                };
                for resource_type in types {
                    let narrowed = permissions.intersect(maximum_permissions(resource_type));
                    let scope = Scope::Clinical {
                        context: *context,
                        resource_type: resource_type.to_owned(),
                        permissions: narrowed,
                    };
                    if !narrowed.is_empty() && !granted.contains(&scope) {
                        granted.push(scope);
                    }
                }
            }
        }
    }
    Scopes::from_vec(granted)
}

fn maximum_permissions(resource_type: &str) -> Permissions {
    let read_search = Permissions::default()
        .with(Permission::Read)
        .with(Permission::Search);
    match resource_type {
        "DocumentReference" => read_search.with(Permission::Create),
        _ => read_search,
    }
}

/// Applies the sign-in choice and redirects with a new code, or shows the
/// sign-in page again when the choice is incomplete.
async fn complete(
    state: &SharedState,
    request: &AuthorizationRequest,
    choice: &AutoLogin,
) -> Response {
    let lookup = {
        let connection = state.db.lock();
        let practitioner = directory::practitioner(&connection, &choice.user);
        let patient = match &choice.patient {
            Some(id) => directory::patient(&connection, id),
            None => Ok(None),
        };
        practitioner.and_then(|practitioner| Ok((practitioner, patient?)))
    };
    let (practitioner, patient) = match lookup {
        Ok(found) => found,
        Err(error) => return signin::internal_error(error),
    };
    let Some(practitioner) = practitioner else {
        let message = format!("'{}' is not a sandbox user", choice.user);
        return signin::page(state, request, Some(&message)).await;
    };

    let granted = narrow_scopes(practitioner.role, &request.requested);
    let needs_patient =
        granted.contains(&Scope::LaunchPatient) || granted.has_patient_context_scope();
    let patient_id = if needs_patient {
        match (&choice.patient, patient) {
            (_, Some(patient)) => Some(patient.id),
            (Some(id), None) => {
                let message = format!("'{id}' is not a sandbox patient");
                return signin::page(state, request, Some(&message)).await;
            }
            (None, None) => {
                let message = format!(
                    "{} signs in with a patient context; choose a patient",
                    practitioner.display_name()
                );
                return signin::page(state, request, Some(&message)).await;
            }
        }
    } else {
        None
    };

    let code = Secret::generate();
    let now = jiff::Timestamp::now().as_second();
    let inserted = state.db.lock().execute(
        "INSERT INTO authorization_codes
         (code_sha256, client_id, redirect_uri, code_challenge, subject, scope, patient, nonce, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            code.sha256_hex(),
            CLIENT_ID,
            request.redirect_uri_text,
            request.code_challenge,
            practitioner.id,
            granted.to_string(),
            patient_id,
            request.nonce,
            now + CODE_LIFETIME_SECONDS,
        ],
    );
    if let Err(error) = inserted {
        return signin::internal_error(error);
    }
    tracing::info!(user = %practitioner.id, patient = ?patient_id, scope = %granted, "issued an authorization code");

    let mut location = request.redirect_uri.clone();
    {
        let mut query = location.query_pairs_mut();
        query.append_pair("code", code.expose());
        if let Some(client_state) = &request.state {
            query.append_pair("state", client_state);
        }
        query.append_pair("iss", &state.urls.issuer);
    }
    found(&location)
}

impl AuthorizeError {
    fn into_response(self, state: &SharedState) -> Response {
        match self {
            AuthorizeError::Page(message) => signin::error_page(StatusCode::BAD_REQUEST, &message),
            AuthorizeError::Redirect {
                redirect_uri,
                state: client_state,
                error,
                description,
            } => {
                tracing::info!(error, description = %description, "rejected an authorization request");
                let mut location = redirect_uri;
                {
                    let mut query = location.query_pairs_mut();
                    query.append_pair("error", error);
                    query.append_pair("error_description", &description);
                    if let Some(client_state) = &client_state {
                        query.append_pair("state", client_state);
                    }
                    // RFC 9207 §2: error responses carry `iss` too.
                    query.append_pair("iss", &state.urls.issuer);
                }
                found(&location)
            }
        }
    }
}

fn found(location: &Url) -> Response {
    let mut response = (StatusCode::FOUND, [(header::LOCATION, location.as_str())]).into_response();
    super::set_no_store(&mut response);
    response
}
