//! Parsers for what the store sends back besides object bytes: S3 XML error
//! bodies and the `Content-Range` header of ranged responses. They are
//! public so that the fuzz targets in `fuzz/` can feed them any input.

use std::fmt;

use crate::http::{MAX_ERROR_BODY_BYTES, read_prefix};

/// Characters of a body that is not an S3 error document kept in a message.
const MAX_EXCERPT_CHARS: usize = 200;

/// The `Code` and `Message` elements of an S3 error document, for example
/// `<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub code: Option<String>,
    pub message: Option<String>,
}

/// Extracts `Code` and `Message` from an S3 error body. The body is not
/// validated as XML: the first `<Code>…</Code>` and `<Message>…</Message>`
/// are taken as they are, entities included.
pub fn parse_s3_error(body: &str) -> S3Error {
    S3Error {
        code: element_text(body, "Code"),
        message: element_text(body, "Message"),
    }
}

fn element_text(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&close)? + start;
    Some(body[start..end].to_owned())
}

/// Summarises a store's error body for a message: `Code: Message` from an
/// S3 error document, or the body's first 200 characters.
pub fn s3_error_summary(body: &str) -> String {
    match parse_s3_error(body) {
        S3Error {
            code: Some(code),
            message: Some(message),
        } => format!("{code}: {message}"),
        S3Error {
            code: Some(code),
            message: None,
        } => code,
        S3Error { code: None, .. } => {
            let excerpt: String = body.chars().take(MAX_EXCERPT_CHARS).collect();
            if excerpt.is_empty() {
                "no response body".to_owned()
            } else {
                excerpt
            }
        }
    }
}

/// Returns true when a store's 403 body reports that the presigned URL
/// expired: AWS S3 and s3s send the message "Request has expired", and
/// some stores send the code `ExpiredToken`.
pub fn is_expired_url_body(body: &str) -> bool {
    body.contains("Request has expired") || body.contains("<Code>ExpiredToken</Code>")
}

/// Reads at most [`MAX_ERROR_BODY_BYTES`] of a store's error response as
/// text. A body that cannot be read gives an empty string, because the
/// status already names the failure.
pub(crate) async fn read_error_body(response: reqwest::Response) -> String {
    match read_prefix(response, MAX_ERROR_BODY_BYTES).await {
        Ok((body, _truncated)) => String::from_utf8_lossy(&body).into_owned(),
        Err(_) => String::new(),
    }
}

/// A satisfied byte range of a `206 Partial Content` response (RFC 9110
/// §14.4): `bytes first-last/complete_length`, the length `None` for `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    pub complete_length: Option<u64>,
}

/// Reason a `Content-Range` value is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentRangeError {
    #[error("the unit is not `bytes`")]
    NotBytes,
    #[error("it is not of the form `first-last/length`")]
    Malformed,
    #[error("a position does not fit in 64 bits")]
    Overflow,
    #[error("the last position is before the first")]
    Reversed,
    #[error("the range ends at or after the complete length")]
    PastEnd,
}

impl fmt::Display for ContentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.complete_length {
            Some(length) => write!(f, "bytes {}-{}/{length}", self.first, self.last),
            None => write!(f, "bytes {}-{}/*", self.first, self.last),
        }
    }
}

/// Parses a `Content-Range` value of a 206 response. The unsatisfied form
/// `bytes */length`, which belongs to a 416 response, is rejected as
/// malformed.
pub fn parse_content_range(value: &str) -> Result<ContentRange, ContentRangeError> {
    let (unit, rest) = value
        .trim()
        .split_once(' ')
        .ok_or(ContentRangeError::Malformed)?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return Err(ContentRangeError::NotBytes);
    }
    let (range, length) = rest
        .trim_start()
        .split_once('/')
        .ok_or(ContentRangeError::Malformed)?;
    let (first, last) = range.split_once('-').ok_or(ContentRangeError::Malformed)?;

    let first = parse_position(first)?;
    let last = parse_position(last)?;
    let complete_length = match length {
        "*" => None,
        digits => Some(parse_position(digits)?),
    };

    if last < first {
        return Err(ContentRangeError::Reversed);
    }
    if complete_length.is_some_and(|length| last >= length) {
        return Err(ContentRangeError::PastEnd);
    }
    Ok(ContentRange {
        first,
        last,
        complete_length,
    })
}

/// Parses 1*DIGIT: no sign, no spaces.
fn parse_position(digits: &str) -> Result<u64, ContentRangeError> {
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ContentRangeError::Malformed);
    }
    digits.parse().map_err(|_| ContentRangeError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_summary_keeps_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>\
                    <Message>Request has expired</Message></Error>";
        assert_eq!(s3_error_summary(body), "AccessDenied: Request has expired");
        assert!(is_expired_url_body(body));
        assert!(!is_expired_url_body(
            "<Error><Code>AccessDenied</Code></Error>"
        ));
    }

    #[test]
    fn s3_error_without_message_gives_code() {
        let error = parse_s3_error("<Error><Code>SlowDown</Code></Error>");
        assert_eq!(error.code.as_deref(), Some("SlowDown"));
        assert_eq!(error.message, None);
        assert_eq!(
            s3_error_summary("<Error><Code>SlowDown</Code></Error>"),
            "SlowDown"
        );
    }

    #[test]
    fn non_xml_error_body_gives_excerpt() {
        let body = "é".repeat(500);
        assert_eq!(s3_error_summary(&body).chars().count(), MAX_EXCERPT_CHARS);
        assert_eq!(s3_error_summary(""), "no response body");
    }

    #[test]
    fn unclosed_s3_element_is_ignored() {
        let error = parse_s3_error("<Error><Code>Internal<Message>x</Message>");
        assert_eq!(error.code, None);
        assert_eq!(error.message.as_deref(), Some("x"));
    }

    #[test]
    fn content_range_with_length_parses() {
        let range = parse_content_range("bytes 0-499/1234").unwrap();
        assert_eq!(
            range,
            ContentRange {
                first: 0,
                last: 499,
                complete_length: Some(1234)
            }
        );
        assert_eq!(range.to_string(), "bytes 0-499/1234");
    }

    #[test]
    fn content_range_with_unknown_length_parses() {
        let range = parse_content_range("bytes 5242880-10485759/*").unwrap();
        assert_eq!(range.first, 5_242_880);
        assert_eq!(range.last, 10_485_759);
        assert_eq!(range.complete_length, None);
    }

    #[test]
    fn content_range_beyond_four_gib_parses() {
        let range = parse_content_range("bytes 4294967296-4294967300/4294967301").unwrap();
        assert_eq!(range.last, 4_294_967_300);
    }

    #[test]
    fn content_range_rejects_bad_values() {
        let cases = [
            ("items 0-1/2", ContentRangeError::NotBytes),
            ("bytes */1234", ContentRangeError::Malformed),
            ("bytes 0-499", ContentRangeError::Malformed),
            ("bytes -1-499/1234", ContentRangeError::Malformed),
            ("bytes +0-499/1234", ContentRangeError::Malformed),
            ("bytes 0 -499/1234", ContentRangeError::Malformed),
            ("bytes0-499/1234", ContentRangeError::Malformed),
            (
                "bytes 0-99999999999999999999/*",
                ContentRangeError::Overflow,
            ),
            ("bytes 500-499/1234", ContentRangeError::Reversed),
            ("bytes 0-1234/1234", ContentRangeError::PastEnd),
            ("", ContentRangeError::Malformed),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_content_range(value), Err(expected), "{value:?}");
        }
    }
}
