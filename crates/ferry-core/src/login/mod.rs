//! Sign-in with SMART App Launch 2 (standalone launch): discovery,
//! authorization code with PKCE `S256`, a loopback redirect listener,
//! refresh, and revocation at sign-out.
//!
//! The access token stays in memory inside a [`Session`]. The refresh token
//! goes to a [`SecretStore`] under `profile/{name}/refresh-token`, and the
//! non-secret facts of the sign-in (user, patient, scopes) to
//! `{data_dir}/profiles/{name}/session.json`, so another process can resume
//! the session with [`Session::resume`].
//!
//! Not covered: EHR launch (`launch` parameter), confidential clients
//! (client secrets or private-key JWT), and dynamic client registration.

mod browser;
mod callback;
mod discovery;
mod id_token;
mod oauth;
mod session;

use std::sync::Arc;
use std::time::Duration;

use oauth2::{CsrfToken, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use url::Url;

pub use browser::{BrowserError, BrowserLauncher, NoBrowser, RedirectFollower, SystemBrowser};
pub use callback::{
    CALLBACK_PATH, CallbackCheck, CallbackOutcome, LoopbackListener, check_callback,
    check_pasted_url,
};
pub use discovery::{SmartConfiguration, discover, smart_configuration_url};
pub use id_token::IdTokenClaims;
pub use oauth::{SmartTokenFields, SmartTokenResponse, parse_token_response};
pub use session::{LogoutReport, Session, SessionInfo, UnreachableServer, logout, logout_with, whoami};

use crate::http::HttpError;
use crate::profile::{FerryDirs, Profile, ProfileError, ProfileLock};
use crate::secrets::{Secret, SecretStore, SecretStoreError};
use oauth::{OAuthHttp, smart_client};

/// Default time to wait for the browser to come back.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// Scopes requested with every sign-in kind: an id_token with `fhirUser`,
/// and a refresh token.
pub const IDENTITY_SCOPES: [&str; 3] = ["openid", "fhirUser", "offline_access"];

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("discovery at {url} failed: {detail}")]
    Discovery { url: String, detail: String },
    #[error(
        "the server at {url} does not offer PKCE with S256 (code_challenge_methods_supported: {offered:?}); \
         Ferry signs in only with S256, so ask the server's administrators to enable it"
    )]
    NoS256 { url: String, offered: Vec<String> },
    #[error("failed to listen for the sign-in redirect on 127.0.0.1 or [::1]: {0}")]
    Listener(#[source] std::io::Error),
    #[error(
        "sign-in timed out after {} without a response from the browser; run the sign-in again and \
         finish it in the browser within that time, or, when the browser runs on another machine, \
         paste the address that the browser shows after signing in",
        describe_duration(*waited)
    )]
    TimedOut { waited: Duration },
    #[error("the server refused the sign-in: {error}{}", description.as_ref().map(|text| format!(": {text}")).unwrap_or_default())]
    Authorization {
        error: String,
        description: Option<String>,
    },
    #[error(
        "the sign-in response came from issuer {received}, not from {expected}; \
         it was rejected because another server may have intercepted the sign-in (RFC 9207)"
    )]
    IssuerMismatch { expected: String, received: String },
    #[error(
        "the sign-in response has no `iss` although the server promises one (RFC 9207); \
         expected {expected}; it was rejected"
    )]
    MissingIssuer { expected: String },
    #[error("the sign-in response has neither a code nor an error")]
    MissingCode,
    #[error("the token endpoint {url} rejected the {stage}: {detail}")]
    TokenRequest {
        url: String,
        stage: &'static str,
        detail: String,
    },
    /// No response from the token endpoint, or a 5xx or 429 response. The
    /// network or the server may be back later, so the refresh token is kept.
    #[error(
        "failed to reach the token endpoint {url} for the {stage}: {detail}; \
         check the network connection, Ferry keeps the sign-in and tries again"
    )]
    TokenEndpointUnavailable {
        url: String,
        stage: &'static str,
        detail: String,
    },
    #[error("the id_token from the server is invalid: {0}")]
    IdToken(String),
    #[error(
        "the server granted no patient context for a clinician sign-in; choose a patient when signing in, \
         or sign in as imaging staff"
    )]
    NoPatientContext,
    #[error("profile '{profile}' is not signed in; run `ferry login --profile {profile}`")]
    NotSignedIn { profile: String },
    #[error(
        "the sign-in of profile '{profile}' has ended because the server no longer accepts its \
         refresh token; sign in again with `ferry login --profile {profile}`"
    )]
    SignInAgain { profile: String },
    #[error(
        "the server at {fhir_base_url} publishes no grant API (ferry_grant_api) in its SMART configuration"
    )]
    NoGrantApi { fhir_base_url: String },
    #[error(transparent)]
    SecretStore(#[from] SecretStoreError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("failed to {action} {path}: {source}")]
    SessionFile {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn describe_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        60 => "1 minute".to_owned(),
        _ if seconds >= 60 && seconds.is_multiple_of(60) => format!("{} minutes", seconds / 60),
        1 => "1 second".to_owned(),
        _ => format!("{seconds} seconds"),
    }
}

/// Who signs in, which decides the scopes requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignInKind {
    /// A clinician working for one patient chosen at sign-in
    /// (`launch/patient` and `patient/` scopes).
    Clinician,
    /// Imaging staff who choose the patient per transfer (`user/` scopes).
    ImagingStaff,
}

impl SignInKind {
    /// SMART scopes of this kind, without [`IDENTITY_SCOPES`].
    pub fn resource_scopes(self) -> &'static [&'static str] {
        match self {
            SignInKind::Clinician => &[
                "launch/patient",
                "patient/DocumentReference.rs",
                "patient/DocumentReference.c",
                "patient/Patient.rs",
            ],
            SignInKind::ImagingStaff => &[
                "user/DocumentReference.rs",
                "user/DocumentReference.c",
                "user/Patient.rs",
            ],
        }
    }

    /// Returns all scopes requested by this kind.
    pub fn scopes(self) -> Vec<&'static str> {
        let mut scopes = self.resource_scopes().to_vec();
        scopes.extend(IDENTITY_SCOPES);
        scopes
    }
}

/// Something the user should see during sign-in.
#[derive(Debug, Clone)]
pub enum LoginPrompt {
    /// The browser was started with the authorization URL.
    BrowserOpened { url: Url },
    /// No browser could be started: the user opens the URL and, when the
    /// browser cannot reach this machine, pastes the redirect back.
    OpenUrlManually { url: Url, reason: String },
    /// A response to the listener or a pasted URL did not belong to this
    /// sign-in; the wait goes on.
    ResponseIgnored { reason: String },
}

impl LoginPrompt {
    /// Returns the text to show the user.
    pub fn message(&self) -> String {
        match self {
            LoginPrompt::BrowserOpened { url } => format!(
                "Opened the browser to sign in. If it did not open, visit:\n  {url}\n\
                 If the browser cannot reach this machine, paste the address it shows after signing in here."
            ),
            LoginPrompt::OpenUrlManually { url, reason } => format!(
                "Could not open a browser ({reason}). Visit this address to sign in:\n  {url}\n\
                 Then paste the address that the browser shows after signing in here."
            ),
            LoginPrompt::ResponseIgnored { reason } => {
                format!("Ignored a sign-in response: {reason}. Still waiting.")
            }
        }
    }
}

/// Everything a profile's sign-in uses: the profile, its folders, its
/// credential store and the HTTP client (from `http::build_client`).
#[derive(Clone)]
pub struct ProfileContext {
    pub profile: Profile,
    pub dirs: FerryDirs,
    pub store: Arc<dyn SecretStore>,
    pub http: reqwest::Client,
}

/// Settings of one interactive sign-in.
pub struct LoginOptions {
    pub kind: SignInKind,
    pub browser: Arc<dyn BrowserLauncher>,
    /// Redirect URLs pasted by the user, one per message (the CLI sends the
    /// lines of standard input; see [`stdin_paste_source`]).
    pub paste: Option<mpsc::Receiver<String>>,
    pub timeout: Duration,
    pub prompt: Arc<dyn Fn(LoginPrompt) + Send + Sync>,
}

impl LoginOptions {
    /// Returns options with the system browser, no paste source, the default
    /// timeout, and prompts logged at `info` level.
    pub fn new(kind: SignInKind) -> LoginOptions {
        LoginOptions {
            kind,
            browser: Arc::new(SystemBrowser),
            paste: None,
            timeout: DEFAULT_LOGIN_TIMEOUT,
            prompt: Arc::new(|prompt: LoginPrompt| tracing::info!("{}", prompt.message())),
        }
    }
}

/// Reads lines of standard input on a background thread and sends each to
/// the returned receiver, for [`LoginOptions::paste`]. The thread ends at the
/// end of input or when the receiver is dropped and another line arrives.
pub fn stdin_paste_source() -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            if sender.blocking_send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Signs in interactively: discovery, the authorization request in the
/// browser, the loopback redirect, the code exchange, and verification of
/// the id_token. The refresh token is stored before this returns.
#[tracing::instrument(skip_all, fields(profile = %context.profile.name, kind = ?options.kind))]
pub async fn login(context: &ProfileContext, options: LoginOptions) -> Result<Session, LoginError> {
    let profile = &context.profile;
    let config = discover(&context.http, &profile.fhir_base_url).await?;

    let listener = LoopbackListener::bind().await?;
    let redirect_uri = RedirectUrl::from_url(listener.redirect_uri().clone());
    let client = smart_client(&config, &profile.client_id, Some(redirect_uri));

    // RFC 7636: a fresh verifier per sign-in; only its S256 challenge leaves
    // the process before the code exchange.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = CsrfToken::new_random();
    let scopes = options.kind.scopes();
    let (authorization_url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(scopes.iter().map(|scope| Scope::new((*scope).to_owned())))
        .set_pkce_challenge(challenge)
        .add_extra_param("aud", profile.fhir_base_url.as_str())
        .add_extra_param("nonce", nonce.secret())
        .url();

    match options.browser.open(&authorization_url) {
        Ok(()) => (options.prompt)(LoginPrompt::BrowserOpened {
            url: authorization_url.clone(),
        }),
        Err(error) => (options.prompt)(LoginPrompt::OpenUrlManually {
            url: authorization_url.clone(),
            reason: error.to_string(),
        }),
    }
    tracing::info!(redirect_uri = %listener.redirect_uri(), "waiting for the authorization response");

    let check = CallbackCheck {
        state: state.secret().clone(),
        issuer: config.issuer.clone(),
        require_iss: config.authorization_response_iss_parameter_supported,
    };
    let code = listener
        .wait(
            check,
            options.paste,
            options.timeout,
            options.prompt.as_ref(),
        )
        .await?;

    let response = client
        .exchange_code(code)
        .set_pkce_verifier(verifier)
        .request_async(&OAuthHttp(&context.http))
        .await
        .map_err(|error| session::token_error(&config, "authorization code", error))?;

    let fhir_user = match &response.extra_fields().id_token {
        Some(id_token) => {
            id_token::verify_id_token(
                &context.http,
                &config,
                &profile.client_id,
                id_token,
                nonce.secret(),
            )
            .await?
            .fhir_user
        }
        None => {
            tracing::warn!("the token response has no id_token, so fhirUser is unknown");
            None
        }
    };
    let patient = response.extra_fields().patient.clone();
    if options.kind == SignInKind::Clinician && patient.is_none() {
        return Err(LoginError::NoPatientContext);
    }

    let granted_scopes = match response.scopes() {
        Some(granted) => granted.iter().map(|scope| scope.to_string()).collect(),
        None => scopes.iter().map(|scope| (*scope).to_owned()).collect(),
    };
    let refresh_token = response
        .refresh_token()
        .map(|token| Secret::new(token.secret().clone()));
    let info = SessionInfo {
        profile: profile.name.to_string(),
        fhir_base_url: profile.fhir_base_url.clone(),
        kind: options.kind,
        fhir_user,
        patient,
        scopes: granted_scopes,
        grant_api: config.ferry_grant_api.clone(),
        signed_in_at: jiff::Timestamp::now(),
        refresh_token_stored: refresh_token.is_some(),
    };

    let _lock = ProfileLock::acquire_async(&context.dirs, &profile.name).await?;
    match &refresh_token {
        Some(token) => session::store_refresh_token(context, token.clone()).await?,
        None => {
            tracing::warn!(
                "the server issued no refresh token; the session ends when the access token expires"
            );
            session::delete_refresh_token(context).await?;
        }
    }
    session::write_session_info(&context.dirs, &info)?;
    tracing::info!(fhir_user = ?info.fhir_user, patient = ?info.patient, "signed in");

    Ok(Session::new(context.clone(), config, info, &response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clinician_scopes_include_patient_context() {
        assert_eq!(
            SignInKind::Clinician.scopes().join(" "),
            "launch/patient patient/DocumentReference.rs patient/DocumentReference.c patient/Patient.rs \
             openid fhirUser offline_access"
        );
    }

    #[test]
    fn imaging_staff_scopes_are_user_level() {
        assert_eq!(
            SignInKind::ImagingStaff.scopes().join(" "),
            "user/DocumentReference.rs user/DocumentReference.c user/Patient.rs openid fhirUser offline_access"
        );
    }

    #[test]
    fn timeout_message_names_minutes() {
        let error = LoginError::TimedOut {
            waited: Duration::from_secs(300),
        };
        assert!(
            error
                .to_string()
                .starts_with("sign-in timed out after 5 minutes"),
            "{error}"
        );
    }
}
