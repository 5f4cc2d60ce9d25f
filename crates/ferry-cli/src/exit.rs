//! Exit codes and the error type every command returns.
//!
//! Scripts branch on the exit code, so each failure maps to exactly one of
//! the documented codes (`--help` and docs/cli.md list them).

use std::fmt;
use std::process::ExitCode;

/// The documented exit codes of `ferry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// A server, the network or the local disk failed in a way that
    /// retrying later will not fix by itself.
    Failure,
    /// An invalid argument or a missing input file.
    Usage,
    /// No valid sign-in for the profile: run `ferry login`.
    SignInRequired,
    /// A transfer failed for good, or a checksum, receipt or log did not verify.
    TransferFailed,
    /// Stopped part way through (for example the network went away) with
    /// the journal intact; `ferry resume` finishes the work.
    Interrupted,
    /// An upload was blocked because its study names another patient.
    PatientMismatch,
    /// A document, patient or upload named on the command line does not
    /// exist, or the signed-in user may not see it.
    NotFound,
    /// Stopped by Ctrl-C after pausing transfers in the journal.
    CtrlC,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::SignInRequired => 3,
            Exit::TransferFailed => 4,
            Exit::Interrupted => 5,
            Exit::PatientMismatch => 6,
            Exit::NotFound => 7,
            Exit::CtrlC => 130,
        }
    }

    /// Name used in JSON output (`"exit": "sign_in_required"`).
    pub fn name(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Failure => "failure",
            Exit::Usage => "usage",
            Exit::SignInRequired => "sign_in_required",
            Exit::TransferFailed => "transfer_failed",
            Exit::Interrupted => "interrupted",
            Exit::PatientMismatch => "patient_mismatch",
            Exit::NotFound => "not_found",
            Exit::CtrlC => "ctrl_c",
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// A command's failure: the message printed after `error: ` and the exit
/// code. The message names the value at fault and the fix; it never contains a
/// token or a signed URL's query string.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            message: message.into(),
        }
    }

    pub fn failure(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Failure, message)
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Usage, message)
    }

    pub fn sign_in_required(message: impl Into<String>) -> CliError {
        CliError::new(Exit::SignInRequired, message)
    }

    /// A transfer or a verification failed (exit code 4).
    pub fn transfer(message: impl Into<String>) -> CliError {
        CliError::new(Exit::TransferFailed, message)
    }

    /// Builds the error of a named document, patient or upload that does
    /// not exist (exit code 7).
    pub fn not_found(message: impl Into<String>) -> CliError {
        CliError::new(Exit::NotFound, message)
    }

    /// Builds the message from an error and its chain of sources, each
    /// joined with ": ", skipping a source whose text the message already holds.
    pub fn from_chain(exit: Exit, error: &(dyn std::error::Error + 'static)) -> CliError {
        CliError::new(exit, error_chain(error))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Joins an error with its sources into one line. A source whose text is
/// already part of the message so far is skipped, so errors that repeat
/// their cause in their own message are not printed twice.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

pub type CliResult<T> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to read the part list")]
    struct Outer {
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("failed to open journal.sqlite: disk full")]
    struct Repeating {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn documented_codes_are_stable() {
        let codes: Vec<u8> = [
            Exit::Success,
            Exit::Failure,
            Exit::Usage,
            Exit::SignInRequired,
            Exit::TransferFailed,
            Exit::Interrupted,
            Exit::PatientMismatch,
            Exit::NotFound,
            Exit::CtrlC,
        ]
        .iter()
        .map(|exit| exit.code())
        .collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6, 7, 130]);
    }

    #[test]
    fn error_chain_appends_sources() {
        let error = Outer {
            source: std::io::Error::other("permission denied"),
        };
        assert_eq!(
            error_chain(&error),
            "failed to read the part list: permission denied"
        );
    }

    #[test]
    fn error_chain_skips_repeated_source() {
        let error = Repeating {
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(
            error_chain(&error),
            "failed to open journal.sqlite: disk full"
        );
    }
}
