//! What most commands need before they start: the profile chosen with
//! `--profile`, Ferry's folders, the credential store, an HTTP client and,
//! for commands that talk to the gateway, a resumed sign-in.

use std::sync::Arc;

use ferry_core::fhir::FhirError;
use ferry_core::http::{HttpOptions, build_client};
use ferry_core::login::{LoginError, ProfileContext, Session};
use ferry_core::profile::{FerryDirs, Profile, ProfileError, Profiles};
use ferry_core::secrets::{SecretStore, SecretStoreError};

use crate::exit::{CliError, CliResult, Exit, error_chain};

/// Ferry's folders, from `FERRY_HOME` or the platform's conventions.
pub fn ferry_dirs() -> CliResult<FerryDirs> {
    FerryDirs::from_env().map_err(profile_error)
}

/// Loads the saved profiles and returns the one named (or the default).
pub fn load_profile(dirs: &FerryDirs, name: Option<&str>) -> CliResult<(Profiles, Profile)> {
    let profiles = Profiles::load(dirs).map_err(profile_error)?;
    let profile = match name {
        Some(name) => profiles.get(name),
        None => profiles.default_profile(),
    }
    .map_err(profile_error)?;
    Ok((profiles, profile))
}

/// Opens the operating system's credential store.
pub fn open_secret_store() -> CliResult<Arc<dyn SecretStore>> {
    let store = ferry_core::credentials::open_credential_store().map_err(secret_store_error)?;
    Ok(Arc::new(store))
}

/// Builds the HTTP client with proxy settings from the environment and the
/// operating system's trust store.
pub fn http_client() -> CliResult<reqwest::Client> {
    build_client(&HttpOptions::default())
        .map_err(|error| CliError::from_chain(Exit::Failure, &error))
}

/// The sign-in context of the profile named by `--profile`.
pub fn profile_context(name: Option<&str>) -> CliResult<ProfileContext> {
    let dirs = ferry_dirs()?;
    let (_, profile) = load_profile(&dirs, name)?;
    let store = open_secret_store()?;
    let http = http_client()?;
    Ok(ProfileContext {
        profile,
        dirs,
        store,
        http,
    })
}

/// Resumes the profile's sign-in from its stored refresh token.
pub async fn resume_session(context: &ProfileContext) -> CliResult<Session> {
    Session::resume(context).await.map_err(login_error)
}

/// Maps a sign-in failure to an exit code: 3 when only a new sign-in helps.
pub fn login_error(error: LoginError) -> CliError {
    let exit = match &error {
        LoginError::NotSignedIn { .. } | LoginError::SignInAgain { .. } => Exit::SignInRequired,
        _ => Exit::Failure,
    };
    let mut cli_error = CliError::from_chain(exit, &error);
    if let LoginError::Discovery { .. } = error {
        cli_error.message.push_str(
            "; check that the server is running and that the profile's FHIR base URL is right (`ferry profiles` lists it)",
        );
    }
    cli_error
}

/// Maps a FHIR read or search failure to an exit code, adding what to do:
/// 3 when only a new sign-in helps, 7 when the resource does not exist.
pub fn fhir_error(error: FhirError) -> CliError {
    if let FhirError::SignIn(error) = error {
        return login_error(error);
    }
    let message = error_chain(&error);
    if error.is_sign_in_required() {
        CliError::sign_in_required(format!("{message}; run `ferry login`"))
    } else if error.is_not_found() {
        CliError::not_found(message)
    } else if error.is_forbidden() {
        CliError::failure(format!(
            "{message}; the signed-in user's scopes or patient context do not cover it (see `ferry whoami`)"
        ))
    } else {
        CliError::failure(message)
    }
}

pub fn profile_error(error: ProfileError) -> CliError {
    let exit = match &error {
        ProfileError::InvalidName(_)
        | ProfileError::InvalidUrl { .. }
        | ProfileError::NotFound(_) => Exit::Usage,
        _ => Exit::Failure,
    };
    CliError::from_chain(exit, &error)
}

pub fn secret_store_error(error: SecretStoreError) -> CliError {
    CliError::from_chain(Exit::Failure, &error)
}

pub fn journal_error(error: &ferry_core::journal::JournalError) -> CliError {
    CliError::from_chain(Exit::Failure, error)
}
