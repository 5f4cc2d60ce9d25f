//! A signed-in session: the access token in memory, refresh under the
//! profile lock, sign-out, and the stored facts of the sign-in.

use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use oauth2::basic::BasicErrorResponseType;
use oauth2::{HttpClientError, RefreshToken, RequestTokenError, TokenResponse};
use serde::{Deserialize, Serialize};
use url::Url;

use super::oauth::{OAuthHttp, SmartTokenResponse, smart_client};
use super::{LoginError, ProfileContext, SignInKind, SmartConfiguration, discover};
use crate::http::{HttpError, display_url, read_json, require_secure};
use crate::profile::{FerryDirs, ProfileLock};
use crate::secrets::{Secret, SecretStoreError};

/// An access token is refreshed when it expires within this margin, so a
/// request that starts now does not carry a token that expires on the way.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Lifetime assumed for an access token whose response has no `expires_in`
/// (RFC 6749 §5.1 makes it optional). Short, so such a token is refreshed
/// early rather than used after it expired.
const ASSUMED_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// Non-secret facts of a sign-in, stored in
/// `{data_dir}/profiles/{name}/session.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub profile: String,
    pub fhir_base_url: Url,
    pub kind: SignInKind,
    /// `fhirUser` claim of the id_token, e.g. `Practitioner/dr-rivera`.
    pub fhir_user: Option<String>,
    /// Patient in context (clinician sign-in).
    pub patient: Option<String>,
    /// Scopes granted by the server.
    pub scopes: Vec<String>,
    /// Base URL of the gateway's grant API (`ferry_grant_api`).
    pub grant_api: Option<Url>,
    pub signed_in_at: jiff::Timestamp,
    /// Whether a refresh token is kept in the credential store.
    pub refresh_token_stored: bool,
}

struct AccessToken {
    secret: Secret,
    expires_at: Instant,
    expires_at_utc: jiff::Timestamp,
}

struct Inner {
    context: ProfileContext,
    config: SmartConfiguration,
    info: StdMutex<SessionInfo>,
    /// Held across a refresh, so concurrent callers in this process wait for
    /// one refresh instead of each starting their own.
    token: tokio::sync::Mutex<AccessToken>,
    refresh_margin: StdMutex<Duration>,
}

/// A signed-in session of one profile. Clones share the same tokens.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("profile", &self.inner.context.profile.name)
            .field("access_token", &"[redacted]")
            .finish()
    }
}

impl Session {
    pub(super) fn new(
        context: ProfileContext,
        config: SmartConfiguration,
        info: SessionInfo,
        response: &SmartTokenResponse,
    ) -> Session {
        Session {
            inner: Arc::new(Inner {
                context,
                config,
                info: StdMutex::new(info),
                token: tokio::sync::Mutex::new(access_token_of(response)),
                refresh_margin: StdMutex::new(DEFAULT_REFRESH_MARGIN),
            }),
        }
    }

    /// Resumes the sign-in of a profile from its stored refresh token,
    /// without a browser: used by every command after `ferry login`.
    #[tracing::instrument(skip_all, fields(profile = %context.profile.name))]
    pub async fn resume(context: &ProfileContext) -> Result<Session, LoginError> {
        let not_signed_in = || LoginError::NotSignedIn {
            profile: context.profile.name.to_string(),
        };
        let info = read_session_info(&context.dirs, context)?.ok_or_else(not_signed_in)?;
        if !info.refresh_token_stored {
            return Err(not_signed_in());
        }
        let config = discover(&context.http, &context.profile.fhir_base_url).await?;

        let _lock = ProfileLock::acquire_async(&context.dirs, &context.profile.name).await?;
        let response = refresh_with_stored_token(context, &config).await?;
        let mut info = info;
        update_info(&mut info, &response, &config);
        write_session_info(&context.dirs, &info)?;

        Ok(Session::new(context.clone(), config, info, &response))
    }

    /// Returns an access token valid for at least the refresh margin,
    /// refreshing it first when needed. Call it right before each request,
    /// including after long local work such as hashing a large file.
    pub async fn access_token(&self) -> Result<Secret, LoginError> {
        let mut token = self.inner.token.lock().await;
        let margin = *self.inner.refresh_margin.lock().expect("margin lock");
        if token.expires_at.saturating_duration_since(Instant::now()) > margin {
            return Ok(token.secret.clone());
        }
        self.refresh_locked(&mut token).await?;
        Ok(token.secret.clone())
    }

    /// Refreshes the access token now.
    pub async fn refresh(&self) -> Result<(), LoginError> {
        let mut token = self.inner.token.lock().await;
        self.refresh_locked(&mut token).await
    }

    /// Changes the refresh margin of [`Session::access_token`] (default 60 s).
    pub fn set_refresh_margin(&self, margin: Duration) {
        *self.inner.refresh_margin.lock().expect("margin lock") = margin;
    }

    async fn refresh_locked(&self, token: &mut AccessToken) -> Result<(), LoginError> {
        let context = &self.inner.context;
        let _lock = ProfileLock::acquire_async(&context.dirs, &context.profile.name).await?;
        let response = refresh_with_stored_token(context, &self.inner.config).await?;

        *token = access_token_of(&response);
        let mut info = self.inner.info.lock().expect("session info lock").clone();
        update_info(&mut info, &response, &self.inner.config);
        write_session_info(&context.dirs, &info)?;
        *self.inner.info.lock().expect("session info lock") = info;
        tracing::debug!(expires_at = %token.expires_at_utc, "access token refreshed");
        Ok(())
    }

    pub fn info(&self) -> SessionInfo {
        self.inner.info.lock().expect("session info lock").clone()
    }

    /// Expiry time of the current access token.
    pub async fn access_token_expires_at(&self) -> jiff::Timestamp {
        self.inner.token.lock().await.expires_at_utc
    }

    /// Base URL of the grant API advertised by the server.
    pub fn grant_api(&self) -> Result<Url, LoginError> {
        self.inner
            .config
            .ferry_grant_api
            .clone()
            .ok_or_else(|| LoginError::NoGrantApi {
                fhir_base_url: self.inner.context.profile.fhir_base_url.to_string(),
            })
    }

    pub fn context(&self) -> &ProfileContext {
        &self.inner.context
    }

    pub fn smart_configuration(&self) -> &SmartConfiguration {
        &self.inner.config
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.inner.context.http
    }
}

fn access_token_of(response: &SmartTokenResponse) -> AccessToken {
    let lifetime = response.expires_in().unwrap_or(ASSUMED_TOKEN_LIFETIME);
    let expires_at_utc = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(lifetime).unwrap_or(jiff::SignedDuration::ZERO))
        .unwrap_or(jiff::Timestamp::MAX);
    AccessToken {
        secret: Secret::new(response.access_token().secret().clone()),
        expires_at: Instant::now() + lifetime,
        expires_at_utc,
    }
}

fn update_info(info: &mut SessionInfo, response: &SmartTokenResponse, config: &SmartConfiguration) {
    if let Some(patient) = &response.extra_fields().patient {
        info.patient = Some(patient.clone());
    }
    if let Some(scopes) = response.scopes() {
        info.scopes = scopes.iter().map(|scope| scope.to_string()).collect();
    }
    info.grant_api = config.ferry_grant_api.clone();
}

/// Exchanges the stored refresh token for new tokens. The caller holds the
/// profile lock, and the token is read inside it because another process
/// may have rotated it since this one last looked. A refresh token the
/// server rejects with `invalid_grant` is deleted, and the user must sign in
/// again; there is no retry.
async fn refresh_with_stored_token(
    context: &ProfileContext,
    config: &SmartConfiguration,
) -> Result<SmartTokenResponse, LoginError> {
    let sign_in_again = || LoginError::SignInAgain {
        profile: context.profile.name.to_string(),
    };
    let refresh_token = read_refresh_token(context)
        .await?
        .ok_or_else(sign_in_again)?;

    let client = smart_client(config, &context.profile.client_id, None);
    let result = client
        .exchange_refresh_token(&RefreshToken::new(refresh_token.expose().to_owned()))
        .request_async(&OAuthHttp(&context.http))
        .await;

    let response = match result {
        Ok(response) => response,
        Err(RequestTokenError::ServerResponse(error))
            if *error.error() == BasicErrorResponseType::InvalidGrant =>
        {
            tracing::warn!(profile = %context.profile.name, "refresh token rejected; deleting it");
            delete_refresh_token(context).await?;
            mark_signed_out(context)?;
            return Err(sign_in_again());
        }
        Err(error) => return Err(token_error(config, "refresh token", error)),
    };

    // RFC 6749 §6: the server may issue a new refresh token, which replaces
    // the old one; without one, the old one stays valid.
    if let Some(rotated) = response.refresh_token() {
        store_refresh_token(context, Secret::new(rotated.secret().clone())).await?;
    }
    Ok(response)
}

/// Formats a token endpoint failure: the server's `error` and
/// `error_description`, or the transport error.
pub(super) fn token_error<E: std::error::Error + 'static>(
    config: &SmartConfiguration,
    stage: &'static str,
    error: RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
) -> LoginError {
    if is_transient(&error) {
        return LoginError::TokenEndpointUnavailable {
            url: display_url(&config.token_endpoint),
            stage,
            detail: crate::error_chain(&error),
        };
    }
    let detail = match &error {
        RequestTokenError::ServerResponse(response) => match response.error_description() {
            Some(description) => format!("{}: {description}", response.error()),
            None => response.error().to_string(),
        },
        RequestTokenError::Parse(parse_error, _body) => {
            format!("the response is not a valid token response: {parse_error}")
        }
        other => crate::error_chain(other),
    };
    LoginError::TokenRequest {
        url: display_url(&config.token_endpoint),
        stage,
        detail,
    }
}

/// Returns true for token endpoint failures that carry no verdict on the
/// grant: no response (connection refused or reset, timeout, DNS, TLS), a 5xx
/// or 429 answer, or the error `temporarily_unavailable`, which some
/// servers send from the token endpoint as well.
fn is_transient<E: std::error::Error + 'static>(
    error: &RequestTokenError<E, oauth2::basic::BasicErrorResponse>,
) -> bool {
    match error {
        RequestTokenError::Request(inner) => {
            let inner: &(dyn std::error::Error + 'static) = inner;
            match inner.downcast_ref::<HttpClientError<HttpError>>() {
                Some(HttpClientError::Reqwest(http)) => {
                    matches!(**http, HttpError::Request { .. } | HttpError::Unavailable { .. })
                }
                Some(HttpClientError::Io(_)) => true,
                Some(_) | None => false,
            }
        }
        RequestTokenError::ServerResponse(response) => matches!(
            response.error(),
            BasicErrorResponseType::Extension(code) if code == "temporarily_unavailable"
        ),
        RequestTokenError::Parse(..) | RequestTokenError::Other(_) => false,
    }
}

/// Whether a server revoked the refresh token at sign-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutReport {
    /// The refresh token was revoked at the server (RFC 7009).
    pub revoked: bool,
    /// Reason the revocation was skipped or failed. The local token is
    /// deleted unless `kept_refresh_token` is set.
    pub revocation_problem: Option<String>,
    /// A refresh token was stored before sign-out.
    pub had_refresh_token: bool,
    /// The server could not be asked to revoke the token, so the token and
    /// the session were kept ([`UnreachableServer::KeepToken`]).
    pub kept_refresh_token: bool,
}

/// Sign-out's handling of the refresh token when the server cannot revoke
/// it: discovery or the revocation request got no response, or a 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnreachableServer {
    /// Delete the token here anyway. It stays valid at the server until it
    /// expires.
    #[default]
    DeleteLocally,
    /// Keep the token and the session, so that sign-out can be tried again
    /// once the server responds.
    KeepToken,
}

/// Reason a refresh token was not revoked.
#[derive(Debug)]
enum RevokeFailure {
    /// No response from the server, or a 5xx, so trying again later may work.
    Unreachable(String),
    /// The server cannot revoke the token, or rejected the request with a
    /// 4xx, for example because the token is already invalid.
    Refused(String),
}

/// Signs out: revokes the stored refresh token at the server (RFC 7009)
/// when it has a revocation endpoint, then deletes the token and the session
/// file. A failed revocation is reported, not fatal, so sign-out works
/// offline.
pub async fn logout(context: &ProfileContext) -> Result<LogoutReport, LoginError> {
    logout_with(context, UnreachableServer::DeleteLocally).await
}

/// Signs out like [`logout`], but with `when_unreachable` deciding whether
/// the token is kept when the server cannot be asked to revoke it.
#[tracing::instrument(skip_all, fields(profile = %context.profile.name))]
pub async fn logout_with(
    context: &ProfileContext,
    when_unreachable: UnreachableServer,
) -> Result<LogoutReport, LoginError> {
    let _lock = ProfileLock::acquire_async(&context.dirs, &context.profile.name).await?;
    let refresh_token = read_refresh_token(context).await?;

    let mut report = LogoutReport {
        revoked: false,
        revocation_problem: None,
        had_refresh_token: refresh_token.is_some(),
        kept_refresh_token: false,
    };
    if let Some(refresh_token) = refresh_token {
        match revoke(context, refresh_token).await {
            Ok(()) => report.revoked = true,
            Err(RevokeFailure::Unreachable(problem))
                if when_unreachable == UnreachableServer::KeepToken =>
            {
                tracing::warn!(%problem, "refresh token not revoked at the server; keeping it");
                report.revocation_problem = Some(problem);
                report.kept_refresh_token = true;
                return Ok(report);
            }
            Err(RevokeFailure::Unreachable(problem) | RevokeFailure::Refused(problem)) => {
                tracing::warn!(%problem, "refresh token not revoked at the server");
                report.revocation_problem = Some(problem);
            }
        }
    }

    delete_refresh_token(context).await?;
    let path = session_file(&context.dirs, context);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(LoginError::SessionFile {
                action: "delete",
                path,
                source,
            });
        }
    }
    tracing::info!(revoked = report.revoked, "signed out");
    Ok(report)
}

/// Revokes a refresh token (RFC 7009 §2.1). The request is built here
/// rather than with `oauth2`, which rejects a revocation endpoint that is not
/// `https://`, and so also the sandbox's loopback `http://` endpoint.
async fn revoke(context: &ProfileContext, refresh_token: Secret) -> Result<(), RevokeFailure> {
    let config = discover(&context.http, &context.profile.fhir_base_url)
        .await
        .map_err(|error| RevokeFailure::Unreachable(crate::error_chain(&error)))?;
    let Some(endpoint) = config.revocation_endpoint else {
        return Err(RevokeFailure::Refused(
            "the server has no revocation endpoint".to_owned(),
        ));
    };
    require_secure(&endpoint).map_err(|error| RevokeFailure::Refused(error.to_string()))?;

    let form = [
        ("token", refresh_token.expose()),
        ("token_type_hint", "refresh_token"),
        ("client_id", context.profile.client_id.as_str()),
    ];
    let response = context
        .http
        .post(endpoint.clone())
        .form(&form)
        .send()
        .await
        .map_err(|error| {
            RevokeFailure::Unreachable(format!(
                "the revocation request to {} failed: {}",
                display_url(&endpoint),
                crate::error_chain(&error)
            ))
        })?;

    // RFC 7009 §2.2: 200 means revoked, or the token was already invalid.
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let detail = match read_json::<serde_json::Value>(response).await {
        Ok(body) => body
            .get("error")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| status.to_string()),
        Err(_) => status.to_string(),
    };
    let problem = format!(
        "the revocation endpoint {} returned {detail}",
        display_url(&endpoint)
    );
    if status.is_server_error() {
        Err(RevokeFailure::Unreachable(problem))
    } else {
        Err(RevokeFailure::Refused(problem))
    }
}

/// Returns the stored facts of the profile's sign-in, or `None` when it has
/// no usable refresh token. It makes no network request, but reads the
/// credential store, which may block.
pub fn whoami(context: &ProfileContext) -> Result<Option<SessionInfo>, LoginError> {
    let Some(info) = read_session_info(&context.dirs, context)? else {
        return Ok(None);
    };
    if !info.refresh_token_stored
        || context
            .store
            .get(&context.profile.refresh_token_entry(&context.dirs)?)?
            .is_none()
    {
        return Ok(None);
    }
    Ok(Some(info))
}

/// Returns the credential store entry that held a profile's refresh token
/// before entries were prefixed with the data folder's device id.
///
/// NOTE: that entry was shared by every data folder on the machine, so the
/// first data folder that reads it after the update takes the token.
fn legacy_refresh_token_entry(context: &ProfileContext) -> String {
    format!("profile/{}/refresh-token", context.profile.name)
}

/// Reads the profile's refresh token. A token found only under the entry
/// name used before device ids ([`legacy_refresh_token_entry`]) is moved to
/// the current entry, and the old entry is deleted.
pub(super) async fn read_refresh_token(
    context: &ProfileContext,
) -> Result<Option<Secret>, LoginError> {
    let store = context.store.clone();
    let entry = context.profile.refresh_token_entry(&context.dirs)?;
    let legacy = legacy_refresh_token_entry(context);

    let (token, migrated) = tokio::task::spawn_blocking(move || {
        if let Some(token) = store.get(&entry)? {
            return Ok((Some(token), false));
        }
        let Some(token) = store.get(&legacy)? else {
            return Ok((None, false));
        };
        // The new entry is written before the old one is deleted, so a
        // failure in between leaves a token under at least one name.
        store.set(&entry, &token)?;
        store.delete(&legacy)?;
        Ok::<_, SecretStoreError>((Some(token), true))
    })
    .await
    .expect("the credential store task does not panic")?;

    if migrated {
        tracing::info!(
            profile = %context.profile.name,
            "moved the refresh token from its entry before device ids to the current entry"
        );
    }
    Ok(token)
}

pub(super) async fn store_refresh_token(
    context: &ProfileContext,
    token: Secret,
) -> Result<(), LoginError> {
    let store = context.store.clone();
    let entry = context.profile.refresh_token_entry(&context.dirs)?;
    tokio::task::spawn_blocking(move || store.set(&entry, &token))
        .await
        .expect("the credential store task does not panic")?;
    Ok(())
}

pub(super) async fn delete_refresh_token(context: &ProfileContext) -> Result<(), LoginError> {
    let store = context.store.clone();
    let entry = context.profile.refresh_token_entry(&context.dirs)?;
    tokio::task::spawn_blocking(move || store.delete(&entry))
        .await
        .expect("the credential store task does not panic")?;
    Ok(())
}

fn session_file(dirs: &FerryDirs, context: &ProfileContext) -> PathBuf {
    dirs.profile_data_dir(&context.profile.name)
        .join("session.json")
}

fn read_session_info(
    dirs: &FerryDirs,
    context: &ProfileContext,
) -> Result<Option<SessionInfo>, LoginError> {
    let path = session_file(dirs, context);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LoginError::SessionFile {
                action: "read",
                path,
                source,
            });
        }
    };
    match serde_json::from_str::<SessionInfo>(&text) {
        // A session file of another server (the profile's URL changed since)
        // does not count.
        Ok(info) if info.fhir_base_url == context.profile.fhir_base_url => Ok(Some(info)),
        Ok(_) => Ok(None),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "unreadable session file ignored");
            Ok(None)
        }
    }
}

pub(super) fn write_session_info(dirs: &FerryDirs, info: &SessionInfo) -> Result<(), LoginError> {
    let name = crate::profile::ProfileName::new(&info.profile)?;
    let folder = dirs.profile_data_dir(&name);
    let path = folder.join("session.json");
    let write_error = |source| LoginError::SessionFile {
        action: "write",
        path: path.clone(),
        source,
    };
    dirs.create_private_data_dir().map_err(write_error)?;
    std::fs::create_dir_all(&folder).map_err(write_error)?;
    let temporary = folder.join("session.json.tmp");
    let text = serde_json::to_string_pretty(info).expect("session info serialises");
    std::fs::write(&temporary, text).map_err(write_error)?;
    std::fs::rename(&temporary, &path).map_err(write_error)
}

/// Records that the profile has no usable refresh token any more.
fn mark_signed_out(context: &ProfileContext) -> Result<(), LoginError> {
    if let Some(mut info) = read_session_info(&context.dirs, context)? {
        info.refresh_token_stored = false;
        write_session_info(&context.dirs, &info)?;
    }
    Ok(())
}

impl crate::grant::AccessTokenSource for Session {
    fn access_token(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<Secret, crate::grant::AccessTokenError>> {
        Box::pin(async move { Session::access_token(self).await.map_err(access_token_error) })
    }

    fn renewed_access_token(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<Secret, crate::grant::AccessTokenError>> {
        Box::pin(async move {
            self.refresh().await.map_err(access_token_error)?;
            Session::access_token(self).await.map_err(access_token_error)
        })
    }
}

fn access_token_error(error: LoginError) -> crate::grant::AccessTokenError {
    crate::grant::AccessTokenError {
        sign_in_required: matches!(
            error,
            LoginError::SignInAgain { .. } | LoginError::NotSignedIn { .. }
        ),
        transient: matches!(error, LoginError::TokenEndpointUnavailable { .. }),
        message: error.to_string(),
    }
}
