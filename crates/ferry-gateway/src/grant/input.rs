//! Request bodies: JSON parsing that names the field at fault, and the
//! checks on names, ids, sizes and hashes that the types cannot express.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use super::GrantError;

/// Largest request body the grant API reads (1 MiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// Longest file name accepted, in bytes (common file system limit).
const MAX_FILE_NAME: usize = 255;

/// Parses a JSON body sent as `application/json` (or a `+json` type),
/// naming the field at fault as a JSON path.
pub fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, GrantError> {
    check_json_content_type(headers)?;

    let body = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            GrantError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                ferry_api::ErrorCode::TooLarge,
                format!("the request body is larger than {MAX_BODY} bytes"),
            )
        } else {
            GrantError::invalid("", format!("failed to read the request body: {rejection}"))
        }
    })?;

    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = inner.to_string();
        // For an unknown field the path already ends with the field's name.
        // The path is `.` for the whole body and `?` when the JSON is malformed.
        let field = if path == "." || path == "?" {
            String::new()
        } else {
            path
        };
        let described = if field.is_empty() {
            format!("the request body is not valid JSON for this call: {message}")
        } else {
            format!("{field}: {message}")
        };
        GrantError::invalid(field, described)
    })?;
    deserializer.end().map_err(|error| {
        GrantError::invalid("", format!("trailing data after the JSON body: {error}"))
    })?;
    Ok(value)
}

/// Rejects a body whose `Content-Type` is not JSON with 415.
fn check_json_content_type(headers: &HeaderMap) -> Result<(), GrantError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        return Ok(());
    }
    let shown = if content_type.is_empty() {
        "none"
    } else {
        content_type
    };
    Err(GrantError::new(
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ferry_api::ErrorCode::UnsupportedMediaType,
        format!("the request body must be sent as Content-Type: application/json; got {shown}"),
    ))
}

/// Checks a file name: a plain name, no path.
pub fn check_file_name(field: &str, name: &str) -> Result<(), GrantError> {
    let reject = |why: &str| {
        Err(GrantError::invalid(
            field,
            format!("{field} {why}; send the file's name without folders"),
        ))
    };
    if name.is_empty() {
        return reject("must not be empty");
    }
    if name.len() > MAX_FILE_NAME {
        return reject(&format!(
            "must be at most {MAX_FILE_NAME} bytes; got {}",
            name.len()
        ));
    }
    if name.contains(['/', '\\']) {
        return reject("must not contain '/' or '\\'");
    }
    if name == "." || name == ".." {
        return reject("must not be '.' or '..'");
    }
    if name.chars().any(char::is_control) {
        return reject("must not contain control characters");
    }
    Ok(())
}

/// Checks a FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`, FHIR R4 `id` type).
pub fn check_fhir_id(field: &str, id: &str) -> Result<(), GrantError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.');
    if valid {
        Ok(())
    } else {
        Err(GrantError::invalid(
            field,
            format!("{field} must be a FHIR id: 1 to 64 letters, digits, '-' or '.'"),
        ))
    }
}

/// Checks a lowercase hex SHA-256.
pub fn check_sha256(field: &str, value: &str) -> Result<(), GrantError> {
    let valid = value.len() == 64
        && value
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    if valid {
        Ok(())
    } else {
        Err(GrantError::invalid(
            field,
            format!("{field} must be a SHA-256 digest as 64 lowercase hex digits"),
        ))
    }
}

/// Checks a MIME type's syntax (`type/subtype`, RFC 6838 characters).
pub fn check_media_type(field: &str, value: &str) -> Result<(), GrantError> {
    let token = |part: &str| {
        !part.is_empty()
            && part.len() <= 127
            && part
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&byte))
    };
    match value.split_once('/') {
        Some((kind, subtype)) if token(kind) && token(subtype) => Ok(()),
        _ => Err(GrantError::invalid(
            field,
            format!("{field} must be a media type such as application/zip"),
        )),
    }
}

/// Checks a short free-text field: present and at most `max` bytes.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), GrantError> {
    if value.trim().is_empty() {
        return Err(GrantError::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if value.len() > max {
        return Err(GrantError::invalid(
            field,
            format!("{field} must be at most {max} bytes; got {}", value.len()),
        ));
    }
    Ok(())
}

/// Checks a DICOM UID: digits and dots, at most 64 characters (DICOM PS3.5 §9.1).
pub fn check_dicom_uid(field: &str, value: &str) -> Result<(), GrantError> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte == b'.')
        && !value.starts_with('.')
        && !value.ends_with('.');
    if valid {
        Ok(())
    } else {
        Err(GrantError::invalid(
            field,
            format!("{field} must be a DICOM UID: digits and dots, at most 64 characters"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        size: u64,
        parts: Vec<Part>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Part {
        part_number: u32,
    }

    fn field_of(json: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        parse_json::<Body>(&headers, Ok(Bytes::from(json.to_owned())))
            .unwrap_err()
            .body
            .field
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(
            field_of(r#"{"size": -1, "parts": []}"#).as_deref(),
            Some("size")
        );
        assert_eq!(
            field_of(r#"{"size": 1, "parts": [{"part_number": 1}, {"part_number": 99999999999}]}"#)
                .as_deref(),
            Some("parts[1].part_number")
        );
        assert_eq!(
            field_of(r#"{"size": 1, "parts": [], "extra": 1}"#).as_deref(),
            Some("extra")
        );
        assert_eq!(
            field_of(r#"{"size": 1, "parts": [{"part_number": 1, "x": 2}]}"#).as_deref(),
            Some("parts[0].x")
        );
        assert_eq!(field_of("{not json"), None);
    }

    #[test]
    fn path_like_file_names_are_rejected() {
        for name in ["../etc/passwd", "a/b.zip", "a\\b", "..", "", "a\u{0}b"] {
            assert!(
                check_file_name("file_name", name).is_err(),
                "{name:?} was accepted"
            );
        }
        assert!(check_file_name("file_name", "ct study (1).zip").is_ok());
    }
}
