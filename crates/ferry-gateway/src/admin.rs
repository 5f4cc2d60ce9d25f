//! Command-line pieces of the grant side: `serve --config FILE`,
//! `deny add|remove|list`, and the sandbox store's connection details.
//!
//! `deny` edits the deny list in the data folder's database directly; a
//! running gateway reads the list on every request, so an entry takes
//! effect with the next request without a restart.

use std::io::Write as _;
use std::path::PathBuf;

use crate::db::Db;
use crate::policy::DenyKind;
use crate::repository::{GrantRepository, SqliteRepository};
use crate::sandbox_grant::StoreInfo;
use crate::serve::{ServeConfig, start};

/// Arguments of `ferry-gateway serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML) naming the OpenID Connect issuer, the S3
    /// store and the policy; `docs/gateway.md` describes it.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Arguments of `ferry-gateway deny`.
#[derive(Debug, clap::Args)]
pub struct DenyArgs {
    #[command(subcommand)]
    pub action: DenyAction,
    /// Data folder of the gateway whose deny list to edit.
    #[arg(long, env = "FERRY_GATEWAY_DATA", global = true)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum DenyAction {
    /// Add an entry: no more URLs, no completion, and (on the embedded
    /// store) no object access for it from the next request on.
    Add(DenyEntry),
    /// Remove an entry.
    Remove(DenyEntry),
    /// List the entries as `kind value` lines.
    List,
}

/// One deny-list entry: exactly one of the options.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct DenyEntry {
    /// A user, by the `sub` of their access tokens.
    #[arg(long)]
    pub user: Option<String>,
    /// A patient, by FHIR logical id (e.g. pat-002).
    #[arg(long)]
    pub patient: Option<String>,
    /// A store object, by key (e.g. uploads/upl_…).
    #[arg(long)]
    pub object: Option<String>,
}

impl DenyEntry {
    fn kind_and_value(&self) -> (DenyKind, &str) {
        match (&self.user, &self.patient, &self.object) {
            (Some(user), _, _) => (DenyKind::User, user),
            (_, Some(patient), _) => (DenyKind::Patient, patient),
            (_, _, Some(object)) => (DenyKind::Object, object),
            // clap's group makes exactly one option present.
            _ => unreachable!("one deny-list option is required"),
        }
    }
}

/// Runs `deny`, printing what changed.
pub fn run_deny(args: DenyArgs, default_data_dir: Option<PathBuf>) -> Result<(), String> {
    let data_dir = args
        .data_dir
        .or(default_data_dir)
        .ok_or("no data folder; pass --data-dir or set FERRY_GATEWAY_DATA")?;
    if !data_dir.exists() {
        return Err(format!(
            "the data folder {} does not exist; pass the --data-dir of the running gateway",
            data_dir.display()
        ));
    }
    let db = Db::open(&data_dir).map_err(|error| error.to_string())?;
    let repository = SqliteRepository::new(db);
    let mut stdout = std::io::stdout().lock();

    match args.action {
        DenyAction::Add(entry) => {
            let (kind, value) = entry.kind_and_value();
            if let Some(problem) = crate::admin_api::deny_value_problem(kind, value) {
                return Err(problem);
            }
            let added = repository
                .add_deny(kind, value)
                .map_err(|error| error.to_string())?;
            let state = if added { "added" } else { "already present" };
            let _ = writeln!(stdout, "{state}: {} {value}", kind.as_str());
            tracing::info!(kind = kind.as_str(), value, added, "deny list entry added");
        }
        DenyAction::Remove(entry) => {
            let (kind, value) = entry.kind_and_value();
            let removed = repository
                .remove_deny(kind, value)
                .map_err(|error| error.to_string())?;
            let state = if removed { "removed" } else { "not present" };
            let _ = writeln!(stdout, "{state}: {} {value}", kind.as_str());
            tracing::info!(
                kind = kind.as_str(),
                value,
                removed,
                "deny list entry removed"
            );
        }
        DenyAction::List => {
            let list = repository.deny_list().map_err(|error| error.to_string())?;
            for user in &list.users {
                let _ = writeln!(stdout, "user {user}");
            }
            for patient in &list.patients {
                let _ = writeln!(stdout, "patient {patient}");
            }
            for object in &list.objects {
                let _ = writeln!(stdout, "object {object}");
            }
        }
    }
    Ok(())
}

/// Runs `serve` until the process is stopped.
pub async fn run_serve(args: ServeArgs) -> Result<(), String> {
    let config = ServeConfig::load(&args.config).map_err(|error| error.to_string())?;
    let handle = start(config).await.map_err(|error| error.to_string())?;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "grant-api: {}", handle.grant_api());
    let _ = stdout.flush();
    drop(stdout);
    handle
        .wait()
        .await
        .map_err(|error| format!("the server failed: {error}"))
}

/// Prints how to point aws-cli or rclone at the sandbox's store. The
/// secret is printed on purpose: it exists only for this sandbox run.
pub fn print_store_info(info: &StoreInfo) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "store-endpoint: {}", info.endpoint);
    let _ = writeln!(stdout, "store-region: {}", info.region);
    let _ = writeln!(stdout, "store-bucket: {}", info.bucket);
    let _ = writeln!(stdout, "store-access-key-id: {}", info.access_key_id);
    let _ = writeln!(
        stdout,
        "store-secret-access-key: {}",
        info.secret_access_key.expose()
    );
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_object(data_dir: &std::path::Path, key: &str) -> Result<(), String> {
        let entry = DenyEntry {
            user: None,
            patient: None,
            object: Some(key.to_owned()),
        };
        let args = DenyArgs {
            action: DenyAction::Add(entry),
            data_dir: Some(data_dir.to_owned()),
        };
        run_deny(args, None)
    }

    #[test]
    fn deny_add_rejects_parent_segment() {
        let data = tempfile::tempdir().unwrap();

        let error = add_object(data.path(), "uploads/../secret").unwrap_err();

        assert!(error.contains("'..' segment"), "{error}");
        let db = Db::open(data.path()).unwrap();
        let listed = SqliteRepository::new(db).deny_list().unwrap();
        assert!(listed.objects.is_empty(), "nothing was added: {listed:?}");
    }

    #[test]
    fn deny_add_rejects_blank_value() {
        let data = tempfile::tempdir().unwrap();

        let error = add_object(data.path(), "   ").unwrap_err();

        assert!(error.contains("not only spaces"), "{error}");
    }
}
