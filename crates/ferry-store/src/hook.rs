//! The access hook, through which the embedding gateway observes and controls every request.

use std::fmt;

/// What a request to the store asks for. Built from the method, path and query
/// of the request; the signature has been checked when `access_key_id` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRequest {
    /// The access key whose signature was verified. `None` when the request was
    /// rejected before or during authentication (missing, invalid or expired
    /// signature, unknown access key).
    pub access_key_id: Option<String>,
    /// The S3 operation, such as `UploadPart` or `GetObject`. `None` when the
    /// request was rejected before the operation was resolved.
    pub operation: Option<String>,
    /// HTTP method.
    pub method: String,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// The `uploadId` query parameter, if any.
    pub upload_id: Option<String>,
    /// The `partNumber` query parameter, if any and numeric.
    pub part_number: Option<u32>,
    /// True when the request carries a presigned-URL signature in its query.
    pub presigned: bool,
}

/// The hook's answer to an authenticated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessDecision {
    Allow,
    /// Reject with 403 `AccessDenied`. The reason goes to the hook's
    /// [`AccessHook::record`] call and to the store's log, not to the client.
    Deny {
        reason: String,
    },
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessOutcome {
    /// The hook allowed the request and the store answered with `status`
    /// (2xx on success; 4xx or 5xx when the operation failed, such as 400
    /// `BadDigest` or 404 `NoSuchKey`). For `GetObject` the status is sent
    /// before the body, so a download that breaks off midway still reports 200 or 206.
    Responded { status: u16 },
    /// The hook denied the request; the client got 403 `AccessDenied`.
    DeniedByHook { reason: String },
    /// The request failed authentication (tampered, expired or re-targeted
    /// URL, wrong key, no signature) or could not be parsed; the client got `status`.
    Rejected { status: u16 },
}

/// Callbacks from the store to the embedding code.
///
/// `authorize` runs for every authenticated request before the store acts on
/// it; `record` runs once for every request, authenticated or not, after the
/// response status is known. Both run on the request's task, so they must
/// return quickly: keep deny lists in memory and hand audit records to a
/// channel or an append-only file rather than doing network calls.
pub trait AccessHook: Send + Sync + 'static {
    /// Decides whether an authenticated request may proceed. Allows everything by default.
    fn authorize(&self, request: &AccessRequest) -> AccessDecision {
        let _ = request;
        AccessDecision::Allow
    }

    /// Observes a finished request. Does nothing by default.
    fn record(&self, request: &AccessRequest, outcome: &AccessOutcome) {
        let _ = (request, outcome);
    }
}

/// A hook that allows everything and records nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAll;

impl AccessHook for AllowAll {}

impl fmt::Display for AccessOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Responded { status } => write!(f, "responded {status}"),
            Self::DeniedByHook { reason } => write!(f, "denied: {reason}"),
            Self::Rejected { status } => write!(f, "rejected {status}"),
        }
    }
}

/// Describes a request from its method and URI, without credentials.
pub(crate) fn describe_request(method: &http::Method, uri: &http::Uri) -> AccessRequest {
    let decoded_path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy();
    let (bucket, key) = match s3s::path::parse_path_style(&decoded_path) {
        Ok(path) => (
            path.get_bucket_name().map(str::to_owned),
            path.get_object_key().map(str::to_owned),
        ),
        Err(_) => (None, None),
    };

    let mut upload_id = None;
    let mut part_number = None;
    let mut presigned = false;
    for (name, value) in url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "uploadId" => upload_id = Some(value.into_owned()),
            "partNumber" => part_number = value.parse().ok(),
            "X-Amz-Signature" => presigned = true,
            _ => {}
        }
    }

    AccessRequest {
        access_key_id: None,
        operation: None,
        method: method.as_str().to_owned(),
        bucket,
        key,
        upload_id,
        part_number,
        presigned,
    }
}
