//! Ferry's headless engine. It has no dependency on Tauri or WebKit: the
//! desktop app and the `ferry` CLI are thin layers over it.

pub mod activity;
pub mod grant;
pub mod journal;
pub mod log;
pub mod secrets;
pub mod transfer;
pub mod credentials;
pub mod fhir;
pub mod http;
pub mod login;
pub mod profile;
pub mod study;

/// Joins an error's message with those of its sources, separated by ": ",
/// leaving out a source whose text the message already contains. Used where
/// the root cause, such as "Connection refused", must reach a log or a user.
pub fn error_chain(error: &dyn std::error::Error) -> String {
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
