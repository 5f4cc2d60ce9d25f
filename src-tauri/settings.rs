//! The desktop app's settings, kept as JSON in
//! `{config_dir}/desktop-settings.json` beside the profiles file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CommandError, CommandResult};

pub const SETTINGS_FILE: &str = "desktop-settings.json";
/// Range accepted for parts (and download ranges) in flight per transfer.
pub const PARTS_IN_FLIGHT_RANGE: std::ops::RangeInclusive<usize> = 1..=32;

/// Settings the user changes on the Settings screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Parts of one upload, or ranges of one download, sent at the same time.
    pub parts_in_flight: usize,
    /// Bandwidth cap in KiB per second; `None` means no cap.
    pub bandwidth_cap_kib: Option<u64>,
    /// Folder that downloads go to unless the user picks another.
    pub download_folder: Option<PathBuf>,
    /// Profile used at start-up.
    pub profile: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            parts_in_flight: ferry_core::transfer::EngineOptions::default().parts_in_flight,
            bandwidth_cap_kib: None,
            download_folder: None,
            profile: None,
        }
    }
}

impl Settings {
    /// Reads the settings file; a missing or unreadable file gives the
    /// defaults, and the problem is logged.
    pub fn load(config_dir: &Path) -> Settings {
        let path = config_dir.join(SETTINGS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "invalid settings file; using the defaults");
                Settings::default()
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Settings::default(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "failed to read the settings file; using the defaults");
                Settings::default()
            }
        }
    }

    /// Checks the values a user can enter.
    pub fn validate(&self) -> CommandResult<()> {
        if !PARTS_IN_FLIGHT_RANGE.contains(&self.parts_in_flight) {
            return Err(CommandError::new(format!(
                "{} parts in flight is out of range; use {} to {}",
                self.parts_in_flight,
                PARTS_IN_FLIGHT_RANGE.start(),
                PARTS_IN_FLIGHT_RANGE.end()
            )));
        }
        if self.bandwidth_cap_kib == Some(0) {
            return Err(CommandError::new("a bandwidth cap of 0 KiB/s would stop every transfer; leave it empty for no cap"));
        }
        if let Some(folder) = &self.download_folder
            && !folder.is_dir()
        {
            return Err(CommandError::new(format!(
                "the download folder {} does not exist; choose an existing folder",
                folder.display()
            )));
        }
        Ok(())
    }

    /// Writes the settings, replacing the file atomically.
    pub fn save(&self, config_dir: &Path) -> CommandResult<()> {
        let path = config_dir.join(SETTINGS_FILE);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(config_dir)?;
            let temporary = config_dir.join(format!("{SETTINGS_FILE}.tmp"));
            std::fs::write(&temporary, serde_json::to_vec_pretty(self).expect("settings serialize"))?;
            std::fs::rename(&temporary, &path)
        };
        write().map_err(|error| CommandError::new(format!("failed to write {}: {error}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_file() {
        let dir = std::env::temp_dir().join(format!("ferry-settings-{}", std::process::id()));
        let settings = Settings { parts_in_flight: 6, bandwidth_cap_kib: Some(512), ..Settings::default() };
        settings.save(&dir).unwrap();
        assert_eq!(Settings::load(&dir), settings);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zero_parts_in_flight_is_rejected() {
        let settings = Settings { parts_in_flight: 0, ..Settings::default() };
        let error = settings.validate().unwrap_err();
        assert!(error.message.contains("out of range"), "{error}");
    }
}
