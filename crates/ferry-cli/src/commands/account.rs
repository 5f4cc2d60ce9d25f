//! `ferry login`, `logout`, `whoami` and `profiles`.

use std::io::IsTerminal as _;
use std::sync::Arc;

use ferry_core::login::{
    self, LoginOptions, LoginPrompt, SessionInfo, SignInKind, UnreachableServer,
};
use ferry_core::profile::{Profile, Profiles};
use serde_json::json;

use ferry_core::log::{Event, NewEntry};

use crate::activity::ActivityLog;
use crate::cli::{LoginArgs, LoginRole, LogoutArgs, ProfilesAction};
use crate::context::{self, login_error, profile_error};
use crate::exit::{CliError, CliResult, Exit};
use crate::output::{Output, table};

impl From<LoginRole> for SignInKind {
    fn from(role: LoginRole) -> SignInKind {
        match role {
            LoginRole::Clinician => SignInKind::Clinician,
            LoginRole::ImagingStaff => SignInKind::ImagingStaff,
        }
    }
}

pub async fn login(profile: Option<&str>, args: LoginArgs, output: Output) -> CliResult<()> {
    let context = context::profile_context(profile)?;
    output.status(format!(
        "Signing in to {} (profile {}) as {}.",
        context.profile.fhir_base_url,
        context.profile.name,
        role_name(args.role)
    ));

    let mut options = LoginOptions::new(args.role.into());
    options.prompt = Arc::new(move |prompt: LoginPrompt| output.status(prompt.message()));
    // A redirect URL pasted on a terminal completes the sign-in when the
    // browser runs on another machine.
    if std::io::stdin().is_terminal() {
        options.paste = Some(login::stdin_paste_source());
    }

    let session = login::login(&context, options).await.map_err(login_error)?;
    let info = session.info();
    // The first checkpoint of a log takes the device's epoch 0 key to the
    // gateway; every sign-in sends one.
    if let Some(mut log) = ActivityLog::for_context(&context, Some(&info), output).await {
        log.append(NewEntry::new(Event::SignedIn), output);
        log.checkpoint_with(&context, &session, output).await;
        log.close(output);
    }
    output.status(format!("Signed in: {}.", describe_session(&info)));
    output.json_result(&info);
    Ok(())
}

pub async fn logout(profile: Option<&str>, args: LogoutArgs, output: Output) -> CliResult<()> {
    let context = context::profile_context(profile)?;
    let signed_in = login::whoami(&context).ok().flatten();
    let when_unreachable = if args.local {
        UnreachableServer::DeleteLocally
    } else {
        UnreachableServer::KeepToken
    };
    let report = login::logout_with(&context, when_unreachable)
        .await
        .map_err(login_error)?;
    let name = &context.profile.name;
    if report.kept_refresh_token {
        return Err(CliError::new(
            Exit::Interrupted,
            format!(
                "not signed out of profile {name}: the server could not be reached to revoke the \
                 refresh token ({}), so the token is kept. Run `ferry logout` again once the server \
                 is reachable, or `ferry logout --local` to delete the token here only; it then \
                 stays valid at the server until it expires",
                report
                    .revocation_problem
                    .as_deref()
                    .unwrap_or("no reason given")
            ),
        ));
    }
    if let Some(info) = &signed_in
        && let Some(mut log) = ActivityLog::for_context(&context, Some(info), output).await
    {
        log.append(NewEntry::new(Event::SignedOut), output);
        log.close(output);
    }

    if !report.had_refresh_token {
        output.status(format!(
            "Profile {name} was not signed in; nothing to revoke."
        ));
    } else if report.revoked {
        output.status(format!(
            "Signed out of profile {name}: the refresh token was revoked at the server and deleted here."
        ));
    } else {
        output.status(format!(
            "warning: signed out of profile {name}: the refresh token was deleted here but not \
             revoked at the server ({}), so it stays valid there until it expires.",
            report
                .revocation_problem
                .as_deref()
                .unwrap_or("no reason given")
        ));
    }
    output.json_result(&json!({
        "profile": name.as_str(),
        "had_refresh_token": report.had_refresh_token,
        "revoked": report.revoked,
        "revocation_problem": report.revocation_problem,
    }));
    Ok(())
}

pub fn whoami(profile: Option<&str>, output: Output) -> CliResult<()> {
    let context = context::profile_context(profile)?;
    let Some(info) = login::whoami(&context).map_err(login_error)? else {
        let name = &context.profile.name;
        return Err(CliError::sign_in_required(format!(
            "profile {name} is not signed in; run `ferry login --profile {name}`"
        )));
    };

    output.text(format!(
        "profile:   {}\nserver:    {}\nuser:      {}\nkind:      {}\npatient:   {}\nscopes:    {}\nsigned in: {}",
        info.profile,
        info.fhir_base_url,
        info.fhir_user.as_deref().unwrap_or("(unknown)"),
        kind_name(info.kind),
        info.patient.as_deref().unwrap_or("(none; chosen per transfer)"),
        info.scopes.join(" "),
        info.signed_in_at,
    ));
    output.json_result(&info);
    Ok(())
}

pub fn profiles(action: Option<ProfilesAction>, output: Output) -> CliResult<()> {
    let dirs = context::ferry_dirs()?;
    let mut profiles = Profiles::load(&dirs).map_err(profile_error)?;

    match action.unwrap_or(ProfilesAction::List) {
        ProfilesAction::List => {
            let default = profiles.default_profile().map_err(profile_error)?;
            list_profiles(&profiles.list(), &default, output);
        }
        ProfilesAction::Add { name, fhir_url } => {
            let profile = Profile::new(&name, &fhir_url, None).map_err(profile_error)?;
            let url = profile.fhir_base_url.clone();
            profiles.insert(profile);
            profiles.save().map_err(profile_error)?;
            output.status(format!(
                "Added profile {name} for {url}; sign in with `ferry login --profile {name}`."
            ));
            output.json_result(&json!({ "name": name, "fhir_base_url": url.as_str() }));
        }
        ProfilesAction::Remove { name } => {
            let removed = profiles.remove(&name).map_err(profile_error)?;
            profiles.save().map_err(profile_error)?;
            // The stored refresh token goes with the profile; a missing
            // credential store leaves nothing to delete.
            match context::open_secret_store() {
                Ok(store) => {
                    if let Err(error) =
                        store.delete(&removed.refresh_token_entry(&dirs).map_err(profile_error)?)
                    {
                        output.status(format!(
                            "warning: failed to delete the refresh token of profile {name}: {error}"
                        ));
                    }
                }
                Err(error) => {
                    tracing::info!(error = %error.message, "no credential store to clean up")
                }
            }
            // The signed transfer log is an audit record, so removing a
            // profile keeps it, its signing key and the journal.
            let profile_dir = dirs.profile_data_dir(&removed.name);
            if profile_dir.exists() {
                output.status(format!(
                    "Removed profile {name}. Its signed transfer log and journal stay in {} and its log signing key \
                     stays in the credential store, so the log can still be verified; delete that folder to remove them.",
                    profile_dir.display()
                ));
            } else {
                output.status(format!("Removed profile {name}."));
            }
            output.json_result(&json!({ "removed": name, "kept_data_dir": profile_dir.exists().then(|| profile_dir.display().to_string()) }));
        }
    }
    Ok(())
}

fn list_profiles(list: &[Profile], default: &Profile, output: Output) {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|profile| {
            let marker = if profile.name == default.name {
                "*"
            } else {
                ""
            };
            vec![
                format!("{}{marker}", profile.name),
                profile.fhir_base_url.to_string(),
                profile.client_id.clone(),
            ]
        })
        .collect();
    output.text(table(&["NAME", "FHIR BASE URL", "CLIENT ID"], &rows));
    output.json_result(&json!({
        "default": default.name.as_str(),
        "profiles": list.iter().map(|profile| json!({
            "name": profile.name.as_str(),
            "fhir_base_url": profile.fhir_base_url.as_str(),
            "client_id": profile.client_id,
        })).collect::<Vec<_>>(),
    }));
}

/// One line about a sign-in: user, patient context and kind.
pub fn describe_session(info: &SessionInfo) -> String {
    let user = info.fhir_user.as_deref().unwrap_or("unknown user");
    match &info.patient {
        Some(patient) => format!("{user} for Patient/{patient} ({})", kind_name(info.kind)),
        None => format!("{user} ({})", kind_name(info.kind)),
    }
}

fn kind_name(kind: SignInKind) -> &'static str {
    match kind {
        SignInKind::Clinician => "clinician",
        SignInKind::ImagingStaff => "imaging staff",
    }
}

fn role_name(role: LoginRole) -> &'static str {
    kind_name(role.into())
}
