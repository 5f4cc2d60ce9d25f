//! Server profiles, Ferry's folders, and the per-profile lock.
//!
//! A profile is a name and a FHIR base URL. Profiles live in
//! `{config_dir}/profiles.toml`, which contains no secrets: refresh tokens go to
//! the credential store (see `credentials`). Each profile has a data folder
//! `{data_dir}/profiles/{name}/` for its journal, log and lock file.
//!
//! Folders come from the platform's conventions (`directories` crate) unless
//! `FERRY_HOME` is set, in which case everything lives below it
//! (`$FERRY_HOME/config`, `$FERRY_HOME/data`).
//!
//! The desktop app and the CLI share these per-profile files and entries,
//! all named by [`FerryDirs`]:
//!
//! | what | where |
//! |---|---|
//! | device id | `{data_dir}/device-id` |
//! | transfer journal | `{data_dir}/profiles/{name}/journal.sqlite` |
//! | signed transfer log | `{data_dir}/profiles/{name}/transfer-log.ndjson` |
//! | refresh token | credential store entry `{device}/profile/{name}/refresh-token` |
//! | transfer log key | credential store entry `{device}/profile/{name}/transfer-log-key` |
//!
//! Credential store entries start with the device id, which is random per
//! data folder, so two data folders (two `FERRY_HOME`s) with a profile of the
//! same name keep separate refresh tokens and log keys in the one credential
//! store of the user account. The device id file moves with the data folder,
//! so a moved data folder keeps its entries.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::http::{HttpError, require_secure};

/// Name of the built-in profile for the local sandbox gateway.
pub const SANDBOX_PROFILE: &str = "sandbox";
/// FHIR base URL of the sandbox gateway at its default address.
pub const SANDBOX_FHIR_BASE_URL: &str = "http://127.0.0.1:7420/fhir";
/// OAuth 2.0 client id that Ferry uses unless a profile names another one.
pub const DEFAULT_CLIENT_ID: &str = "ferry-desktop";
/// Environment variable that moves all of Ferry's folders below one root.
pub const FERRY_HOME_ENV: &str = "FERRY_HOME";

const MAX_PROFILE_NAME_LEN: usize = 64;

/// File name of a profile's transfer journal in its data folder.
pub const JOURNAL_FILE: &str = "journal.sqlite";
/// File name of a profile's signed transfer log in its data folder.
pub const TRANSFER_LOG_FILE: &str = "transfer-log.ndjson";
/// File name of the device id in the data folder.
pub const DEVICE_ID_FILE: &str = "device-id";

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "profile name '{0}' is invalid: use 1 to 64 characters from a-z, 0-9, '-' and '_', \
         starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("profile '{name}' has an invalid FHIR base URL: {source}")]
    InvalidUrl {
        name: String,
        #[source]
        source: HttpError,
    },
    #[error("profile '{0}' does not exist; add it with `ferry profiles add {0} FHIR_BASE_URL`")]
    NotFound(String),
    #[error("profile '{0}' is built in and cannot be removed")]
    BuiltIn(String),
    #[error("no home folder found to place Ferry's configuration; set {FERRY_HOME_ENV}")]
    NoHome,
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid profiles file: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("failed to write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "failed to read or create the device id {path}: {source}; check that the data folder is writable"
    )]
    DeviceId {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to lock profile '{name}' with {path}: {source}")]
    Lock {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Ferry's configuration and data folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FerryDirs {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl FerryDirs {
    /// Returns the folders below `$FERRY_HOME` when it is set, otherwise the
    /// platform's folders for the application `ferry`.
    pub fn from_env() -> Result<FerryDirs, ProfileError> {
        if let Some(home) = std::env::var_os(FERRY_HOME_ENV).filter(|value| !value.is_empty()) {
            return Ok(FerryDirs::under(Path::new(&home)));
        }
        let project =
            directories::ProjectDirs::from("org", "Ferry", "ferry").ok_or(ProfileError::NoHome)?;
        Ok(FerryDirs {
            config_dir: project.config_dir().to_path_buf(),
            data_dir: project.data_dir().to_path_buf(),
        })
    }

    /// Returns the folders `{root}/config` and `{root}/data`.
    pub fn under(root: &Path) -> FerryDirs {
        FerryDirs {
            config_dir: root.join("config"),
            data_dir: root.join("data"),
        }
    }

    pub fn profiles_file(&self) -> PathBuf {
        self.config_dir.join("profiles.toml")
    }

    /// Creates the data folder readable by its owner only (mode 0700 on
    /// Unix), or removes group and other permissions from an existing one.
    /// The journal, the transfer log and the session file below it name
    /// patients, documents and local paths, so other local users must not
    /// read them. Other platforms keep the folder's inherited permissions.
    pub fn create_private_data_dir(&self) -> std::io::Result<()> {
        create_private_dir(&self.data_dir)
    }

    /// Returns `{data_dir}/profiles/{name}`; the name must be valid.
    pub fn profile_data_dir(&self, name: &ProfileName) -> PathBuf {
        self.data_dir.join("profiles").join(name.as_str())
    }

    /// Creates the profile's data folder below a data folder made private by
    /// [`FerryDirs::create_private_data_dir`], and returns its path. Every
    /// entry point calls it before it opens the profile's journal or log.
    pub fn create_profile_data_dir(&self, name: &ProfileName) -> std::io::Result<PathBuf> {
        self.create_private_data_dir()?;
        let folder = self.profile_data_dir(name);
        std::fs::create_dir_all(&folder)?;
        Ok(folder)
    }

    /// Returns `{data_dir}/profiles/{name}/journal.sqlite`.
    pub fn journal_path(&self, name: &ProfileName) -> PathBuf {
        self.profile_data_dir(name).join(JOURNAL_FILE)
    }

    /// Returns `{data_dir}/profiles/{name}/transfer-log.ndjson`.
    pub fn transfer_log_path(&self, name: &ProfileName) -> PathBuf {
        self.profile_data_dir(name).join(TRANSFER_LOG_FILE)
    }

    /// Returns this data folder's device id (`dev-` and 16 hex digits) from
    /// `{data_dir}/device-id`, creating the file on first use.
    ///
    /// The id names the workstation in transfer log entries and checkpoints
    /// and prefixes credential store entries. Two processes creating it at
    /// once agree on one id, because the file is created with `create_new`
    /// and the loser reads the winner's id.
    pub fn device_id(&self) -> Result<String, ProfileError> {
        let path = self.data_dir.join(DEVICE_ID_FILE);
        let error = |source| ProfileError::DeviceId { path: path.clone(), source };
        if let Some(id) = read_device_id(&path).map_err(error)? {
            return Ok(id);
        }

        self.create_private_data_dir().map_err(error)?;
        let id = format!("dev-{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
        let created = OpenOptions::new().write(true).create_new(true).open(&path);
        match created {
            Ok(mut file) => {
                use std::io::Write as _;
                file.write_all(id.as_bytes()).and_then(|()| file.sync_all()).map_err(error)?;
                Ok(id)
            }
            Err(source) if source.kind() == std::io::ErrorKind::AlreadyExists => {
                read_device_id(&path).map_err(error)?.ok_or_else(|| {
                    error(std::io::Error::other("the file is empty; delete it to create a new id"))
                })
            }
            Err(source) => Err(error(source)),
        }
    }

    /// Returns the credential store entry `{device}/profile/{name}/{item}`.
    pub fn credential_entry(&self, name: &ProfileName, item: &str) -> Result<String, ProfileError> {
        Ok(format!("{}/profile/{name}/{item}", self.device_id()?))
    }

    /// Returns the credential store entry of the profile's transfer log key.
    pub fn transfer_log_key_entry(&self, name: &ProfileName) -> Result<String, ProfileError> {
        self.credential_entry(name, "transfer-log-key")
    }
}

/// Reads a device id file; `None` when it is missing or empty.
fn read_device_id(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|id| !id.is_empty())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// A validated profile name, safe to use as a folder name and in credential
/// store entries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProfileName(String);

impl ProfileName {
    pub fn new(name: &str) -> Result<ProfileName, ProfileError> {
        let valid_length = !name.is_empty() && name.len() <= MAX_PROFILE_NAME_LEN;
        let valid_chars = name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
        });
        let valid_start = name
            .bytes()
            .next()
            .is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
        if valid_length && valid_chars && valid_start {
            Ok(ProfileName(name.to_owned()))
        } else {
            Err(ProfileError::InvalidName(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProfileName {
    type Error = ProfileError;

    fn try_from(name: String) -> Result<ProfileName, ProfileError> {
        ProfileName::new(&name)
    }
}

impl From<ProfileName> for String {
    fn from(name: ProfileName) -> String {
        name.0
    }
}

impl std::fmt::Display for ProfileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A server that Ferry signs in to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: ProfileName,
    /// FHIR base URL; also the `aud` of authorization requests.
    pub fhir_base_url: Url,
    /// OAuth 2.0 client id registered at the server for Ferry.
    pub client_id: String,
}

impl Profile {
    /// Builds a profile, checking the name and that the URL is `https://` or
    /// loopback `http://`.
    pub fn new(
        name: &str,
        fhir_base_url: &str,
        client_id: Option<&str>,
    ) -> Result<Profile, ProfileError> {
        let name = ProfileName::new(name)?;
        let url = parse_fhir_base_url(&name, fhir_base_url)?;
        Ok(Profile {
            name,
            fhir_base_url: url,
            client_id: client_id.unwrap_or(DEFAULT_CLIENT_ID).to_owned(),
        })
    }

    /// Returns the built-in profile for the sandbox gateway at its default
    /// address.
    pub fn sandbox() -> Profile {
        Profile::new(SANDBOX_PROFILE, SANDBOX_FHIR_BASE_URL, None)
            .expect("the sandbox profile is valid")
    }

    /// Credential store entry of this profile's refresh token in the data
    /// folder `dirs`: `{device}/profile/{name}/refresh-token`.
    pub fn refresh_token_entry(&self, dirs: &FerryDirs) -> Result<String, ProfileError> {
        dirs.credential_entry(&self.name, "refresh-token")
    }
}

fn parse_fhir_base_url(name: &ProfileName, text: &str) -> Result<Url, ProfileError> {
    let invalid = |source| ProfileError::InvalidUrl {
        name: name.to_string(),
        source,
    };
    let mut url = Url::parse(text).map_err(|_| {
        invalid(HttpError::UnsupportedScheme {
            url: text.to_owned(),
            scheme: "(not a URL)".to_owned(),
        })
    })?;
    require_secure(&url).map_err(invalid)?;

    // `aud` must match the server's FHIR base URL exactly, which is written
    // without a trailing slash by SMART servers.
    if url.path().len() > 1 && url.path().ends_with('/') {
        let trimmed = url.path().trim_end_matches('/').to_owned();
        url.set_path(&trimmed);
    }
    Ok(url)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ProfilesFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, ProfileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ProfileEntry {
    fhir_base_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
}

/// The saved profiles plus the built-in sandbox profile.
#[derive(Debug, Clone)]
pub struct Profiles {
    path: PathBuf,
    default: Option<ProfileName>,
    saved: BTreeMap<ProfileName, Profile>,
}

impl Profiles {
    /// Reads `{config_dir}/profiles.toml`; a missing file means no saved
    /// profiles.
    pub fn load(dirs: &FerryDirs) -> Result<Profiles, ProfileError> {
        let path = dirs.profiles_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(ProfileError::Read { path, source }),
        };
        let file: ProfilesFile = toml::from_str(&text).map_err(|source| ProfileError::Parse {
            path: path.clone(),
            source,
        })?;

        let mut saved = BTreeMap::new();
        for (name, entry) in file.profiles {
            let profile = Profile::new(&name, &entry.fhir_base_url, entry.client_id.as_deref())?;
            saved.insert(profile.name.clone(), profile);
        }
        let default = file.default.as_deref().map(ProfileName::new).transpose()?;
        Ok(Profiles {
            path,
            default,
            saved,
        })
    }

    /// Writes the saved profiles, replacing the file atomically.
    pub fn save(&self) -> Result<(), ProfileError> {
        let file = ProfilesFile {
            default: self.default.as_ref().map(|name| name.to_string()),
            profiles: self
                .saved
                .values()
                .map(|profile| {
                    let client_id =
                        (profile.client_id != DEFAULT_CLIENT_ID).then(|| profile.client_id.clone());
                    let entry = ProfileEntry {
                        fhir_base_url: profile.fhir_base_url.to_string(),
                        client_id,
                    };
                    (profile.name.to_string(), entry)
                })
                .collect(),
        };
        let text = toml::to_string_pretty(&file).expect("profiles serialise to TOML");

        let write_error = |source| ProfileError::Write {
            path: self.path.clone(),
            source,
        };
        let folder = self
            .path
            .parent()
            .expect("the profiles file has a parent folder");
        std::fs::create_dir_all(folder).map_err(write_error)?;
        let temporary = self.path.with_extension("toml.tmp");
        std::fs::write(&temporary, text).map_err(write_error)?;
        std::fs::rename(&temporary, &self.path).map_err(write_error)
    }

    /// Returns the profile by name; `sandbox` exists unless a saved profile
    /// of that name replaces it.
    pub fn get(&self, name: &str) -> Result<Profile, ProfileError> {
        let name = ProfileName::new(name)?;
        if let Some(profile) = self.saved.get(&name) {
            return Ok(profile.clone());
        }
        if name.as_str() == SANDBOX_PROFILE {
            return Ok(Profile::sandbox());
        }
        Err(ProfileError::NotFound(name.to_string()))
    }

    /// Returns the profile named by `default` in the file, or `sandbox`.
    pub fn default_profile(&self) -> Result<Profile, ProfileError> {
        match &self.default {
            Some(name) => self.get(name.as_str()),
            None => Ok(Profile::sandbox()),
        }
    }

    pub fn set_default(&mut self, name: &str) -> Result<(), ProfileError> {
        let profile = self.get(name)?;
        self.default = Some(profile.name);
        Ok(())
    }

    /// Adds or replaces a saved profile (not yet written; call [`save`]).
    ///
    /// [`save`]: Profiles::save
    pub fn insert(&mut self, profile: Profile) {
        self.saved.insert(profile.name.clone(), profile);
    }

    /// Removes a saved profile (not yet written; call [`Profiles::save`]).
    pub fn remove(&mut self, name: &str) -> Result<Profile, ProfileError> {
        let name = ProfileName::new(name)?;
        match self.saved.remove(&name) {
            Some(profile) => {
                if self.default.as_ref() == Some(&name) {
                    self.default = None;
                }
                Ok(profile)
            }
            None if name.as_str() == SANDBOX_PROFILE => {
                Err(ProfileError::BuiltIn(name.to_string()))
            }
            None => Err(ProfileError::NotFound(name.to_string())),
        }
    }

    /// Returns all profiles, the built-in sandbox first unless a saved one
    /// replaces it.
    pub fn list(&self) -> Vec<Profile> {
        let sandbox = ProfileName::new(SANDBOX_PROFILE).expect("valid name");
        let mut profiles = Vec::new();
        if !self.saved.contains_key(&sandbox) {
            profiles.push(Profile::sandbox());
        }
        profiles.extend(self.saved.values().cloned());
        profiles
    }
}

/// An exclusive, cross-process lock on one profile, released on drop.
///
/// It serialises the refresh of tokens, the claiming of transfers and
/// appends to the transfer log between Ferry processes (the desktop app and
/// the CLI). It is an advisory lock on `{data_dir}/profiles/{name}/lock`,
/// taken with [`File::lock`] (`flock` on Unix, `LockFileEx` on Windows).
/// Two acquisitions in the same process also exclude each other, because
/// each opens the file anew.
#[derive(Debug)]
pub struct ProfileLock {
    _file: File,
    path: PathBuf,
}

impl ProfileLock {
    /// Waits until the lock is free and takes it. This blocks the thread; in
    /// async code use [`ProfileLock::acquire_async`].
    pub fn acquire(dirs: &FerryDirs, name: &ProfileName) -> Result<ProfileLock, ProfileError> {
        let (file, path) = open_lock_file(dirs, name)?;
        file.lock().map_err(|source| ProfileError::Lock {
            name: name.to_string(),
            path: path.clone(),
            source,
        })?;
        tracing::trace!(profile = %name, "profile lock acquired");
        Ok(ProfileLock { _file: file, path })
    }

    /// Takes the lock if it is free, or returns `None` at once.
    pub fn try_acquire(
        dirs: &FerryDirs,
        name: &ProfileName,
    ) -> Result<Option<ProfileLock>, ProfileError> {
        let (file, path) = open_lock_file(dirs, name)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(ProfileLock { _file: file, path })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(source)) => Err(ProfileError::Lock {
                name: name.to_string(),
                path,
                source,
            }),
        }
    }

    /// Waits for the lock on a blocking thread, so the async runtime keeps
    /// running meanwhile.
    pub async fn acquire_async(
        dirs: &FerryDirs,
        name: &ProfileName,
    ) -> Result<ProfileLock, ProfileError> {
        let dirs = dirs.clone();
        let name = name.clone();
        tokio::task::spawn_blocking(move || ProfileLock::acquire(&dirs, &name))
            .await
            .expect("the profile lock task does not panic")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_lock_file(dirs: &FerryDirs, name: &ProfileName) -> Result<(File, PathBuf), ProfileError> {
    let folder = dirs.profile_data_dir(name);
    let path = folder.join("lock");
    let lock_error = |source| ProfileError::Lock {
        name: name.to_string(),
        path: path.clone(),
        source,
    };
    dirs.create_private_data_dir().map_err(lock_error)?;
    std::fs::create_dir_all(&folder).map_err(lock_error)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lock_error)?;
    Ok((file, path))
}

#[cfg(unix)]
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    const OWNER_ONLY: u32 = 0o700;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(OWNER_ONLY)
        .create(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        // A folder of another owner cannot be changed; it still works, so
        // the failure is logged rather than returned.
        let restricted = std::fs::Permissions::from_mode(mode & OWNER_ONLY);
        match std::fs::set_permissions(path, restricted) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "data folder restricted to its owner");
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "failed to restrict the data folder to its owner");
            }
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_are_checked() {
        for valid in ["sandbox", "st-mary_2", "0day"] {
            assert!(ProfileName::new(valid).is_ok(), "{valid} was rejected");
        }
        for invalid in [
            "",
            "Upper",
            "../etc",
            "a/b",
            "-lead",
            "sp ace",
            &"x".repeat(65),
        ] {
            assert!(ProfileName::new(invalid).is_err(), "{invalid} was accepted");
        }
    }

    #[test]
    fn sandbox_profile_is_built_in() {
        let root = tempfile::tempdir().unwrap();
        let profiles = Profiles::load(&FerryDirs::under(root.path())).unwrap();
        let sandbox = profiles.get("sandbox").unwrap();
        assert_eq!(sandbox.fhir_base_url.as_str(), SANDBOX_FHIR_BASE_URL);
        assert_eq!(sandbox.client_id, DEFAULT_CLIENT_ID);
        assert_eq!(profiles.default_profile().unwrap(), sandbox);
        assert!(matches!(
            profiles.get("other"),
            Err(ProfileError::NotFound(_))
        ));
    }

    #[test]
    fn profiles_round_trip_through_file() {
        let root = tempfile::tempdir().unwrap();
        let dirs = FerryDirs::under(root.path());
        let mut profiles = Profiles::load(&dirs).unwrap();
        profiles.insert(
            Profile::new(
                "st-mary",
                "https://fhir.st-mary.example/r4/",
                Some("ferry-st-mary"),
            )
            .unwrap(),
        );
        profiles.set_default("st-mary").unwrap();
        profiles.save().unwrap();

        let loaded = Profiles::load(&dirs).unwrap();
        let profile = loaded.get("st-mary").unwrap();
        assert_eq!(
            profile.fhir_base_url.as_str(),
            "https://fhir.st-mary.example/r4"
        );
        assert_eq!(profile.client_id, "ferry-st-mary");
        assert_eq!(loaded.default_profile().unwrap(), profile);
        let names: Vec<String> = loaded
            .list()
            .into_iter()
            .map(|p| p.name.to_string())
            .collect();
        assert_eq!(names, ["sandbox", "st-mary"]);
    }

    #[test]
    fn remote_plain_http_profile_is_rejected() {
        let error = Profile::new("remote", "http://fhir.example/r4", None).unwrap_err();
        assert!(
            error.to_string().contains("http://fhir.example/r4"),
            "{error}"
        );
    }

    #[test]
    fn sandbox_profile_cannot_be_removed() {
        let root = tempfile::tempdir().unwrap();
        let mut profiles = Profiles::load(&FerryDirs::under(root.path())).unwrap();
        assert!(matches!(
            profiles.remove("sandbox"),
            Err(ProfileError::BuiltIn(_))
        ));
    }

    #[test]
    fn credential_entries_differ_between_data_folders() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let profile = Profile::sandbox();

        let first_entry = profile.refresh_token_entry(&FerryDirs::under(first.path())).unwrap();
        let again = profile.refresh_token_entry(&FerryDirs::under(first.path())).unwrap();
        let second_entry = profile.refresh_token_entry(&FerryDirs::under(second.path())).unwrap();

        assert_eq!(first_entry, again, "the device id is kept in the data folder");
        assert_ne!(first_entry, second_entry);
        assert!(first_entry.ends_with("/profile/sandbox/refresh-token"), "{first_entry}");
        assert!(first_entry.starts_with("dev-"), "{first_entry}");
    }

    #[test]
    fn profile_files_live_in_profile_folder() {
        let root = tempfile::tempdir().unwrap();
        let dirs = FerryDirs::under(root.path());
        let name = ProfileName::new("st-mary").unwrap();

        assert_eq!(dirs.journal_path(&name), root.path().join("data/profiles/st-mary/journal.sqlite"));
        assert_eq!(
            dirs.transfer_log_path(&name),
            root.path().join("data/profiles/st-mary/transfer-log.ndjson")
        );
        let device = dirs.device_id().unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("data/device-id")).unwrap(), device);
        assert_eq!(
            dirs.transfer_log_key_entry(&name).unwrap(),
            format!("{device}/profile/st-mary/transfer-log-key")
        );
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    #[cfg(unix)]
    fn data_folder_is_created_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let dirs = FerryDirs::under(&root.path().join("home"));

        dirs.device_id().unwrap();

        assert_eq!(mode_of(&dirs.data_dir), 0o700);
    }

    #[test]
    #[cfg(unix)]
    fn open_data_folder_is_restricted_by_lock() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dirs = FerryDirs::under(root.path());
        std::fs::create_dir_all(&dirs.data_dir).unwrap();
        std::fs::set_permissions(&dirs.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let name = ProfileName::new("clinic").unwrap();

        open_lock_file(&dirs, &name).unwrap();

        assert_eq!(mode_of(&dirs.data_dir), 0o700);
    }

    #[test]
    #[cfg(unix)]
    fn open_data_folder_is_restricted_by_profile_folder() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dirs = FerryDirs::under(root.path());
        std::fs::create_dir_all(&dirs.data_dir).unwrap();
        std::fs::set_permissions(&dirs.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let name = ProfileName::new("clinic").unwrap();

        let folder = dirs.create_profile_data_dir(&name).unwrap();

        assert_eq!(folder, root.path().join("data/profiles/clinic"));
        assert!(folder.is_dir());
        assert_eq!(mode_of(&dirs.data_dir), 0o700);
    }

    #[test]
    fn profile_lock_excludes_second_holder() {
        let root = tempfile::tempdir().unwrap();
        let dirs = FerryDirs::under(root.path());
        let name = ProfileName::new("sandbox").unwrap();

        let first = ProfileLock::acquire(&dirs, &name).unwrap();
        assert_eq!(first.path(), root.path().join("data/profiles/sandbox/lock"));
        assert!(ProfileLock::try_acquire(&dirs, &name).unwrap().is_none());

        drop(first);
        assert!(ProfileLock::try_acquire(&dirs, &name).unwrap().is_some());
    }
}
