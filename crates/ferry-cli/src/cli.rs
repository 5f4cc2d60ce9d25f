//! Command-line arguments of `ferry`, parsed with clap's derive API.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Text shown after `--help`: the exit codes that scripts can rely on.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    failure (a server, the network or the local disk failed)
  2    usage error (an invalid argument or a missing file)
  3    sign-in required (run `ferry login`)
  4    transfer or verification failed (a checksum, a receipt or the log did not verify)
  5    interrupted and resumable (for example the network stayed away past
         --offline-timeout, or the server kept failing); run `ferry resume`,
         or `ferry transfers resume ID` for a transfer listed as failed.
         `ferry logout` exits 5 when the server cannot be reached to revoke
         the token, which it then keeps
  6    upload blocked because the study names another patient
         (check the study, or pass --confirm-patient-mismatch REASON)
  7    not found: a document, patient or upload id does not exist or is not
         visible to the signed-in user (list them with `ferry documents` or `ferry patients`)
  130  stopped by Ctrl-C; transfers are paused in the journal, run `ferry resume`";

/// Ferry moves clinical files between this workstation and a healthcare
/// platform: the gateway decides, signed URLs deliver.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Server profile to use (see `ferry profiles`); the built-in `sandbox`
    /// profile when omitted.
    #[arg(long, global = true, env = "FERRY_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,

    /// Print machine-readable JSON to stdout: one document per command, or
    /// one JSON event per line for transfers.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output on stderr: -v for info, -vv for debug.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sign in with SMART on FHIR in the system browser.
    Login(LoginArgs),
    /// Revoke the refresh token at the server and delete it from this
    /// machine. When the server cannot be reached, the token is kept and
    /// the exit code is 5, unless --local is given.
    Logout(LogoutArgs),
    /// Show who is signed in, with which scopes and patient context.
    Whoami,
    /// List, add or remove server profiles.
    Profiles {
        #[command(subcommand)]
        action: Option<ProfilesAction>,
    },
    /// Upload files, study folders or zip archives.
    Upload(UploadArgs),
    /// Download documents by their DocumentReference id.
    Download(DownloadArgs),
    /// List the documents that can be downloaded.
    Documents {
        /// Logical id of the FHIR Patient (imaging staff); a clinician's
        /// patient context is used when omitted.
        #[arg(long, value_name = "ID")]
        patient: Option<String>,
    },
    /// Search the server's patients.
    Patients {
        /// Part of the patient's name.
        #[arg(long, value_name = "TEXT")]
        name: Option<String>,
    },
    /// List transfers in the journal, or pause, resume or cancel one.
    Transfers {
        #[command(subcommand)]
        action: Option<TransfersAction>,
    },
    /// Finish every interrupted transfer in the journal.
    Resume {
        #[command(flatten)]
        rate: RateArgs,
        #[command(flatten)]
        offline: OfflineArgs,
    },
    /// Scan a DICOM folder or zip archive and check its patient, without uploading.
    Scan(ScanArgs),
    /// Show, verify or export the signed transfer log.
    Log {
        #[command(subcommand)]
        action: LogAction,
    },
    /// Run the main job on a sandbox gateway started for this run: sign in,
    /// upload the sample imaging archive, download it and verify it.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Which kind of sign-in to request.
    #[arg(long = "as", value_enum, default_value_t = LoginRole::ImagingStaff)]
    pub role: LoginRole,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Delete the refresh token here even when the server cannot be reached
    /// to revoke it. The token then stays valid at the server until it
    /// expires, and anyone holding a copy of it can still use it.
    #[arg(long)]
    pub local: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LoginRole {
    /// One patient's context: `launch/patient` and `patient/` scopes.
    Clinician,
    /// Any patient, chosen per transfer: `user/` scopes.
    ImagingStaff,
}

#[derive(Debug, Subcommand)]
pub enum ProfilesAction {
    /// List the server profiles (the default action).
    List,
    /// Add a server profile.
    Add {
        /// Profile name: letters, digits, `-` and `_`.
        name: String,
        /// FHIR base URL, for example https://fhir.hospital.example/r4.
        fhir_url: String,
    },
    /// Remove a server profile and its stored refresh token.
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Files, DICOM study folders or zip archives to upload.
    #[arg(required = true, value_name = "FILE|FOLDER|ZIP")]
    pub paths: Vec<PathBuf>,

    /// Logical id of the FHIR Patient the files belong to; a clinician's
    /// patient context is used when omitted.
    #[arg(long, value_name = "ID")]
    pub patient: Option<String>,

    /// Part size in MiB (5 to 5120); the gateway may raise it for very large files.
    #[arg(long, value_name = "MiB", value_parser = clap::value_parser!(u64).range(5..=5120))]
    pub part_size: Option<u64>,

    /// Parts sent at the same time (memory use is about this times the part size).
    #[arg(long, value_name = "N", value_parser = parse_parallel)]
    pub parallel: Option<NonZeroUsize>,

    /// Upload a study although its Patient ID, name or birth date does not
    /// match the chosen patient; REASON is recorded in the signed log and
    /// the gateway's audit.
    #[arg(long, value_name = "REASON")]
    pub confirm_patient_mismatch: Option<String>,

    #[command(flatten)]
    pub rate: RateArgs,

    #[command(flatten)]
    pub offline: OfflineArgs,
}

/// How long one command's transfers wait for a network that went away.
#[derive(Debug, Clone, Copy, Args)]
pub struct OfflineArgs {
    /// Pause the transfers and exit with code 5 once the gateway or the
    /// store has been unreachable for this long: a whole number with the
    /// unit s, m or h (90s, 10m, 1h). Without it, transfers wait and
    /// continue by themselves until Ctrl-C pauses them.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub offline_timeout: Option<Duration>,
}

/// The bandwidth cap of one command's transfers.
#[derive(Debug, Args)]
pub struct RateArgs {
    /// Bandwidth cap shared by all transfers of this command, in bytes per
    /// second; the suffixes K, M and G multiply by 1024, 1024² and 1024³
    /// (20M is 20 MiB/s). 0 means no cap, the default.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Logical ids of FHIR DocumentReferences (see `ferry documents`).
    #[arg(required = true, value_name = "DOCUMENT_ID")]
    pub document_ids: Vec<String>,

    /// Folder to download into; the current folder when omitted.
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,

    /// Replace files that already exist in the folder.
    #[arg(long)]
    pub overwrite: bool,

    /// Unpack each downloaded zip into a folder named after it. Files of an
    /// archive packed by Ferry are checked against its manifest's sizes and
    /// SHA-256 hashes, and files of a plain zip only against its CRC-32s.
    #[arg(long)]
    pub unpack: bool,

    #[command(flatten)]
    pub rate: RateArgs,

    #[command(flatten)]
    pub offline: OfflineArgs,
}

#[derive(Debug, Subcommand)]
pub enum TransfersAction {
    /// List the transfers in the journal (the default action).
    List,
    /// Mark a queued or interrupted transfer as paused, so that `ferry
    /// resume` leaves it until it is resumed by id. A transfer that another
    /// `ferry` process is running is paused with Ctrl-C in that process.
    Pause {
        /// Transfer id from `ferry transfers`.
        #[arg(value_name = "TRANSFER_ID")]
        id: String,
    },
    /// Resume a paused, interrupted or failed transfer and wait for it to finish.
    Resume {
        /// Transfer id from `ferry transfers`.
        #[arg(value_name = "TRANSFER_ID")]
        id: String,
        #[command(flatten)]
        rate: RateArgs,
        #[command(flatten)]
        offline: OfflineArgs,
    },
    /// Cancel a transfer that no other `ferry` process is running; an
    /// upload is aborted at the gateway.
    Cancel {
        /// Transfer id from `ferry transfers`.
        #[arg(value_name = "TRANSFER_ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// DICOM folder, mounted disc or zip archive.
    pub path: PathBuf,
    /// Logical id of the FHIR Patient to compare the study with.
    #[arg(long, value_name = "ID")]
    pub patient: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LogAction {
    /// Show the entries of this profile's transfer log.
    Show {
        /// Only entries at or after this time: an RFC 3339 timestamp or a
        /// date (2026-12-04).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only entries about this patient (logical id).
        #[arg(long, value_name = "ID")]
        patient: Option<String>,
    },
    /// Verify the log's hash chain, seals and checkpoints.
    Verify {
        /// Verify an exported log with its verification bundle instead of
        /// this profile's log.
        #[arg(long, value_name = "FILE")]
        bundle: Option<PathBuf>,
        /// Log file to verify instead of this profile's log; with --bundle
        /// the default is the copy written beside the bundle by `log export`.
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
    /// Show the gateway's audit records (FHIR AuditEvents) of one transfer,
    /// by the correlation id that its log entries carry.
    Audit {
        /// Correlation id from `ferry log show` or a transfer's output.
        #[arg(value_name = "CORRELATION_ID")]
        correlation_id: String,
    },
    /// Export the log as FHIR R4 AuditEvent resources (NDJSON) and a
    /// verification bundle.
    Export {
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Output file for the AuditEvents; FILE.bundle.json (the
        /// verification bundle) and FILE.log.ndjson (a copy of the log) are
        /// written beside it. Without it, the AuditEvents go to stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// NDJSON of FHIR R4 AuditEvent resources.
    Fhir,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Sign in as the sandbox clinician (patient context) instead of the
    /// imaging technologist.
    #[arg(long = "as", value_enum, default_value_t = LoginRole::ImagingStaff)]
    pub role: LoginRole,
    /// Keep the gateway's data folder and the downloaded files in this
    /// folder instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// Parses a rate such as `500K`, `20M` or `1G` into bytes per second.
fn parse_rate(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let (digits, multiplier) = match trimmed.char_indices().last() {
        Some((at, 'k' | 'K')) => (&trimmed[..at], 1024),
        Some((at, 'm' | 'M')) => (&trimmed[..at], 1024 * 1024),
        Some((at, 'g' | 'G')) => (&trimmed[..at], 1024 * 1024 * 1024),
        _ => (trimmed, 1),
    };
    let value: u64 = digits.parse().map_err(|_| {
        format!("'{text}' is not a rate; give bytes per second with an optional K, M or G suffix, e.g. 20M")
    })?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("'{text}' is too large a rate; give at most 16000000G"))
}

/// Parses a duration such as `90s`, `10m` or `1h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!("'{text}' is not a duration; give a whole number with the unit s, m or h, e.g. 10m")
    };
    let trimmed = text.trim();
    let (digits, seconds_per_unit) = match trimmed.char_indices().last() {
        Some((at, 's' | 'S')) => (&trimmed[..at], 1),
        Some((at, 'm' | 'M')) => (&trimmed[..at], 60),
        Some((at, 'h' | 'H')) => (&trimmed[..at], 3600),
        _ => return Err(invalid()),
    };
    let value: u64 = digits.parse().map_err(|_| invalid())?;
    if value == 0 {
        return Err(format!("'{text}' is zero; give at least 1s"));
    }
    value
        .checked_mul(seconds_per_unit)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

fn parse_parallel(text: &str) -> Result<NonZeroUsize, String> {
    let value: usize = text
        .parse()
        .map_err(|_| format!("'{text}' is not a whole number; use 1 to 64"))?;
    match NonZeroUsize::new(value) {
        Some(value) if value.get() <= 64 => Ok(value),
        _ => Err(format!(
            "{value} parts in flight is out of range; use 1 to 64"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parallel_zero_is_rejected() {
        let error =
            Cli::try_parse_from(["ferry", "upload", "a.zip", "--parallel", "0"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("out of range"), "{error}");
    }

    #[test]
    fn upload_options_parse() {
        let cli = Cli::try_parse_from([
            "ferry",
            "--json",
            "upload",
            "a.zip",
            "b",
            "--patient",
            "pat-001",
            "--part-size",
            "8",
            "--parallel",
            "6",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Upload(upload) = cli.command else {
            panic!("expected upload, got {:?}", cli.command);
        };
        assert_eq!(
            upload.paths,
            vec![PathBuf::from("a.zip"), PathBuf::from("b")]
        );
        assert_eq!(upload.patient.as_deref(), Some("pat-001"));
        assert_eq!(upload.part_size, Some(8));
        assert_eq!(upload.parallel.map(NonZeroUsize::get), Some(6));
    }

    #[test]
    fn limit_rate_takes_binary_suffixes() {
        assert_eq!(parse_rate("20M"), Ok(20 * 1024 * 1024));
        assert_eq!(parse_rate("512k"), Ok(512 * 1024));
        assert_eq!(parse_rate("1G"), Ok(1024 * 1024 * 1024));
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("0"), Ok(0));
    }

    #[test]
    fn limit_rate_rejects_other_text() {
        for text in ["", "M", "20 MB", "-1M", "1.5M", "99999999999999999999G"] {
            assert!(parse_rate(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn limit_rate_parses_on_upload_download_and_resume() {
        let Command::Upload(upload) =
            Cli::try_parse_from(["ferry", "upload", "a.zip", "--limit-rate", "20M"])
                .unwrap()
                .command
        else {
            panic!("expected upload");
        };
        assert_eq!(upload.rate.limit_rate, Some(20 * 1024 * 1024));

        let Command::Download(download) =
            Cli::try_parse_from(["ferry", "download", "doc-1", "--limit-rate", "1K"])
                .unwrap()
                .command
        else {
            panic!("expected download");
        };
        assert_eq!(download.rate.limit_rate, Some(1024));

        let Command::Resume { rate, .. } =
            Cli::try_parse_from(["ferry", "resume", "--limit-rate", "5M"])
                .unwrap()
                .command
        else {
            panic!("expected resume");
        };
        assert_eq!(rate.limit_rate, Some(5 * 1024 * 1024));
    }

    #[test]
    fn offline_timeout_takes_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for text in ["", "10", "0s", "1.5m", "m", "-1s", "10 days"] {
            assert!(parse_duration(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn transfers_resume_takes_limit_rate_and_offline_timeout() {
        let cli = Cli::try_parse_from([
            "ferry",
            "transfers",
            "resume",
            "t-1",
            "--limit-rate",
            "1M",
            "--offline-timeout",
            "2m",
        ])
        .unwrap();
        let Command::Transfers {
            action: Some(TransfersAction::Resume { id, rate, offline }),
        } = cli.command
        else {
            panic!("expected transfers resume, got {:?}", cli.command);
        };
        assert_eq!(id, "t-1");
        assert_eq!(rate.limit_rate, Some(1024 * 1024));
        assert_eq!(offline.offline_timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn part_size_below_store_minimum_is_rejected() {
        let error =
            Cli::try_parse_from(["ferry", "upload", "a.zip", "--part-size", "4"]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn global_flags_follow_subcommands() {
        let cli = Cli::try_parse_from(["ferry", "whoami", "--profile", "work", "-vv"]).unwrap();
        assert_eq!(cli.profile.as_deref(), Some("work"));
        assert_eq!(cli.verbose, 2);
    }

    #[test]
    fn login_role_defaults_to_imaging_staff() {
        let cli = Cli::try_parse_from(["ferry", "login"]).unwrap();
        let Command::Login(login) = cli.command else {
            panic!("expected login");
        };
        assert_eq!(login.role, LoginRole::ImagingStaff);
        let cli = Cli::try_parse_from(["ferry", "login", "--as", "clinician"]).unwrap();
        let Command::Login(login) = cli.command else {
            panic!("expected login");
        };
        assert_eq!(login.role, LoginRole::Clinician);
    }
}
