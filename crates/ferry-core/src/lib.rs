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
