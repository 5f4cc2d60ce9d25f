//! The sandbox sign-in page: choose a user and, for a patient context, a
//! patient. Submitting the form posts the authorization request back to
//! `/authorize` with the choice added.

use std::fmt::Write as _;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::authorize::AuthorizationRequest;
use crate::SharedState;
use crate::directory::{self, Role};

pub(super) async fn page(
    state: &SharedState,
    request: &AuthorizationRequest,
    message: Option<&str>,
) -> Response {
    let listing = {
        let connection = state.db.lock();
        directory::practitioners(&connection)
            .and_then(|practitioners| Ok((practitioners, directory::patients(&connection)?)))
    };
    let (practitioners, patients) = match listing {
        Ok(listing) => listing,
        Err(error) => return internal_error(error),
    };

    let mut html = String::from(HEAD);
    html.push_str("<h1>Ferry sandbox sign-in</h1>\n");
    html.push_str("<p>Sandbox users only: no password. Clinicians sign in for one patient; imaging staff act for any patient.</p>\n");
    if let Some(message) = message {
        let _ = writeln!(html, "<p class=\"error\" role=\"alert\">{}</p>", escape(message));
    }
    html.push_str("<form method=\"post\" action=\"/authorize\">\n");
    for (name, value) in &request.forwarded {
        let _ = writeln!(
            html,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(value)
        );
    }

    html.push_str("<fieldset><legend>User</legend>\n");
    for practitioner in &practitioners {
        let role = match practitioner.role {
            Role::Clinician => "clinician",
            Role::ImagingStaff => "imaging staff",
        };
        let _ = writeln!(
            html,
            "<label><input type=\"radio\" name=\"user\" value=\"{id}\"> {name} ({role}, {id})</label><br>",
            id = escape(&practitioner.id),
            name = escape(&practitioner.display_name()),
        );
    }
    html.push_str("</fieldset>\n<fieldset><legend>Patient (clinicians)</legend>\n");
    for patient in &patients {
        let _ = writeln!(
            html,
            "<label><input type=\"radio\" name=\"patient\" value=\"{id}\"> {name}, born {birth}, {mrn} ({id})</label><br>",
            id = escape(&patient.id),
            name = escape(&patient.display_name()),
            birth = escape(&patient.birth_date),
            mrn = escape(&patient.mrn),
        );
    }
    html.push_str("</fieldset>\n<p><button type=\"submit\">Sign in</button></p>\n</form>\n</body></html>\n");

    let status = if message.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut response = (status, Html(html)).into_response();
    super::set_no_store(&mut response);
    response
}

/// An authorization error shown to the user instead of a redirect.
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    tracing::info!(status = status.as_u16(), message, "rejected an authorization request");
    let html = format!(
        "{HEAD}<h1>Sign-in failed</h1>\n<p class=\"error\" role=\"alert\">{}</p>\n</body></html>\n",
        escape(message)
    );
    let mut response = (status, Html(html)).into_response();
    super::set_no_store(&mut response);
    response
}

pub(super) fn internal_error(error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "sign-in failed");
    error_page(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the gateway log")
}

const HEAD: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Ferry sandbox sign-in</title>\
<style>body{font-family:sans-serif;max-width:40em;margin:2em auto}.error{color:#a00}fieldset{margin:1em 0}</style>\
</head><body>\n";

/// Escapes text for HTML element content and double-quoted attributes.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}
