//! The error every command returns to the UI: one sentence (the error and
//! its causes joined), because the webview shows it as it is.

use serde::Serialize;

/// Failure of a command, shown to the user as `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CommandError {
    pub message: String,
}

impl CommandError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }

    /// Returns an error whose message is `error` followed by each cause that
    /// its message does not already contain.
    pub fn from_chain(error: &(dyn std::error::Error + 'static)) -> Self {
        Self { message: error_chain(error) }
    }
}

impl Serialize for CommandError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.message)
    }
}

/// Joins an error and its sources with ": ", skipping sources whose text is
/// already part of the message.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

macro_rules! from_error {
    ($($type:ty),* $(,)?) => {
        $(impl From<$type> for CommandError {
            fn from(error: $type) -> Self {
                Self::from_chain(&error)
            }
        })*
    };
}

from_error!(
    ferry_core::login::LoginError,
    ferry_core::fhir::FhirError,
    ferry_core::profile::ProfileError,
    ferry_core::secrets::SecretStoreError,
    ferry_core::http::HttpError,
    ferry_core::transfer::TransferError,
    ferry_core::journal::JournalError,
    ferry_core::log::LogError,
    ferry_core::study::ScanError,
    ferry_core::study::GuardError,
    ferry_core::study::PackError,
);

pub type CommandResult<T> = Result<T, CommandError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_causes() {
        let error = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&error), "outer failed: disk full");
    }

    #[test]
    fn command_error_serializes_as_its_message() {
        let json = serde_json::to_string(&CommandError::new("no patient chosen")).unwrap();
        assert_eq!(json, "\"no patient chosen\"");
    }
}
