//! HTTP client of the grant API (`docs/grant-api.md`): upload and download
//! grants, part URLs, upload state, completion, abort and the JWKS that signs
//! receipts.
//!
//! The client asks its [`AccessTokenSource`] for a token right before every
//! request, because the step before a request (hashing a large file) can
//! outlast an access token. It does not retry: the transfer engine decides
//! which calls are safe to repeat.
//!
//! Response bodies are read with a bound: success bodies fail past
//! [`MAX_JSON_BODY_BYTES`], and error bodies are cut at
//! [`MAX_ERROR_BODY_BYTES`], so an endless body cannot exhaust memory.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::{
    ApiError, CompleteUploadRequest, CompletedUpload, DownloadGrant, DownloadGrantRequest,
    ErrorCode, PartChecksum, PartUrl, PartUrls, PartUrlsRequest, Receipt, SignedReceipt,
    SignedUrl, UploadGrant, UploadGrantRequest, UploadState,
};
use futures::future::BoxFuture;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use url::Url;

use crate::http::{
    HttpError, MAX_ERROR_BODY_BYTES, MAX_JSON_BODY_BYTES, read_limited, read_prefix, require_secure,
};
use crate::secrets::Secret;

/// Largest object a download grant may describe: 5 TiB, the largest
/// object S3 stores and the gateway's upload limit. No real object is
/// larger, and planning the ranges of a larger `size` can exhaust memory:
/// 1 PiB in 256 KiB ranges needs about 300 GB of range records.
pub const MAX_DOWNLOAD_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// Maximum length of an unexpected response body kept in an error message.
const MAX_BODY_IN_ERROR: usize = 300;

/// Failure to obtain an access token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no access token is available: {message}")]
pub struct AccessTokenError {
    pub message: String,
    /// True when only a new sign-in can fix it (the refresh token was
    /// rejected or is missing).
    pub sign_in_required: bool,
    /// True when the token endpoint could not be reached or returned 5xx or
    /// 429, so the same request may pass once the network or the
    /// server is back. The refresh token is kept in that case.
    pub transient: bool,
}

/// A source of SMART access tokens for the grant API. The sign-in session
/// implements it; it refreshes the token when it is about to expire.
pub trait AccessTokenSource: Send + Sync {
    fn access_token(&self) -> BoxFuture<'_, Result<Secret, AccessTokenError>>;

    /// Returns a new access token after the gateway rejected the current
    /// one with 401, refreshing it even when it has not expired. The default
    /// returns the token of [`AccessTokenSource::access_token`].
    fn renewed_access_token(&self) -> BoxFuture<'_, Result<Secret, AccessTokenError>> {
        self.access_token()
    }
}

/// A fixed access token, for tests and for callers that manage tokens themselves.
pub struct StaticAccessToken(pub Secret);

impl AccessTokenSource for StaticAccessToken {
    fn access_token(&self) -> BoxFuture<'_, Result<Secret, AccessTokenError>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

/// Failure of a grant API call. Each variant names the call (`stage`).
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("{stage}: {source}")]
    AccessToken {
        stage: &'static str,
        #[source]
        source: AccessTokenError,
    },
    /// The gateway responded with the grant API's error body.
    #[error("{stage}: the gateway returned {status} {code}: {}{}", .error.message, field_suffix(.error.field.as_deref()))]
    Api {
        stage: &'static str,
        status: u16,
        code: ErrorCodeName,
        error: ApiError,
        retry_after: Option<Duration>,
    },
    /// The gateway responded with a status and a body that is not the grant
    /// API's error body, or a success body that does not parse.
    #[error("{stage}: the gateway returned {status} with an unexpected body: {body}")]
    UnexpectedResponse {
        stage: &'static str,
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// The response body was larger than [`MAX_JSON_BODY_BYTES`].
    #[error(
        "{stage}: the gateway's response is larger than the limit of {limit} bytes; \
         check that the grant API URL points at a Ferry gateway"
    )]
    BodyTooLarge { stage: &'static str, limit: usize },
    /// The gateway sent a signed URL that Ferry must not use: plain http
    /// to a host that is not loopback, or a scheme other than http(s).
    /// Nothing is sent to it, because file bytes and the URL's signature
    /// would cross the network unencrypted.
    #[error("{stage}: the gateway sent a store URL that is not allowed: {source}; ask the gateway's operator to serve the store over https")]
    InsecureStoreUrl {
        stage: &'static str,
        #[source]
        source: HttpError,
    },
    /// The gateway's answer describes something other than what was
    /// requested, for example a download grant for another document.
    #[error("{stage}: the gateway answered for {field} {actual:?} but {expected:?} was requested; nothing was transferred")]
    MismatchedAnswer {
        stage: &'static str,
        field: &'static str,
        expected: String,
        actual: String,
    },
    /// No response: connection refused or reset, DNS, TLS, timeout.
    #[error("{stage}: the request to the gateway failed: {source}")]
    Transport {
        stage: &'static str,
        #[source]
        source: reqwest::Error,
    },
}

fn field_suffix(field: Option<&str>) -> String {
    match field {
        Some(field) => format!(" (field `{field}`)"),
        None => String::new(),
    }
}

/// The wire name of an [`ErrorCode`], for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCodeName(pub ErrorCode);

impl fmt::Display for ErrorCodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = serde_json::to_value(self.0)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{:?}", self.0));
        f.write_str(&name)
    }
}

impl GrantError {
    /// Returns the HTTP status of the gateway's response, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::UnexpectedResponse { status, .. } => Some(*status),
            Self::AccessToken { .. }
            | Self::Transport { .. }
            | Self::BodyTooLarge { .. }
            | Self::InsecureStoreUrl { .. }
            | Self::MismatchedAnswer { .. } => None,
        }
    }

    /// Returns the grant API's error code, if the gateway sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { error, .. } => Some(error.error),
            _ => None,
        }
    }

    /// Returns true for failures that may pass when the same request is sent
    /// again later: no response at all, 5xx and 429, also from the token
    /// endpoint while refreshing the access token.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::AccessToken { source, .. } => source.transient,
            Self::Api { status, .. } | Self::UnexpectedResponse { status, .. } => {
                *status >= 500 || *status == 429
            }
            Self::BodyTooLarge { .. } | Self::InsecureStoreUrl { .. } | Self::MismatchedAnswer { .. } => false,
        }
    }

    /// Returns true when no response arrived because the connection failed,
    /// which usually means the network is down.
    pub fn is_connection_failure(&self) -> bool {
        matches!(self, Self::Transport { source, .. } if source.is_connect() || source.is_timeout())
    }

    /// Returns the delay the gateway asked for with `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } | Self::UnexpectedResponse { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// Client of one gateway's grant API.
#[derive(Clone)]
pub struct GrantClient {
    base_url: Url,
    http: reqwest::Client,
    tokens: Arc<dyn AccessTokenSource>,
}

impl fmt::Debug for GrantClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantClient").field("base_url", &self.base_url.as_str()).finish()
    }
}

impl GrantClient {
    /// Creates a client for the grant API at `base_url` (the SMART
    /// configuration's `ferry_grant_api`, for example
    /// `http://127.0.0.1:7420/grant/v1`).
    pub fn new(base_url: Url, http: reqwest::Client, tokens: Arc<dyn AccessTokenSource>) -> Self {
        Self { base_url, http, tokens }
    }

    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// `POST /uploads`. Not idempotent: sending it twice creates two uploads,
    /// and the one left unused expires at the gateway.
    pub async fn create_upload(&self, request: &UploadGrantRequest) -> Result<UploadGrant, GrantError> {
        let stage = "creating the upload grant";
        let builder = self.http.post(self.url(&["uploads"])).json(request);
        let grant: UploadGrant = self.send_json(stage, builder).await?;
        check_upload_plan(stage, request, &grant)?;
        Ok(grant)
    }

    /// `POST /uploads/{upload_id}/part-urls` for at most
    /// [`ferry_api::MAX_PART_URLS_PER_REQUEST`] parts.
    pub async fn part_urls(&self, upload_id: &str, parts: &[PartChecksum]) -> Result<Vec<PartUrl>, GrantError> {
        let stage = "requesting part URLs";
        let body = PartUrlsRequest { parts: parts.to_vec() };
        let builder = self.http.post(self.url(&["uploads", upload_id, "part-urls"])).json(&body);
        let urls: PartUrls = self.send_json(stage, builder).await?;
        for url in &urls.urls {
            check_store_url(stage, &url.url)?;
        }
        Ok(urls.urls)
    }

    /// `GET /uploads/{upload_id}`: the parts the store holds and the
    /// completion, once there is one.
    pub async fn upload_state(&self, upload_id: &str) -> Result<UploadState, GrantError> {
        let stage = "reading the upload's state";
        let builder = self.http.get(self.url(&["uploads", upload_id]));
        self.send_json(stage, builder).await
    }

    /// `POST /uploads/{upload_id}/complete`. Completing twice returns the same
    /// receipt, so the call is safe to repeat.
    pub async fn complete(
        &self,
        upload_id: &str,
        request: &CompleteUploadRequest,
    ) -> Result<CompletedUpload, GrantError> {
        let stage = "completing the upload";
        let builder = self.http.post(self.url(&["uploads", upload_id, "complete"])).json(request);
        self.send_json(stage, builder).await
    }

    /// `DELETE /uploads/{upload_id}`. Aborting an aborted upload succeeds.
    pub async fn abort(&self, upload_id: &str) -> Result<(), GrantError> {
        let stage = "aborting the upload";
        let builder = self.http.delete(self.url(&["uploads", upload_id]));
        let response = self.send(stage, builder).await?;
        let _ = read_prefix(response, MAX_ERROR_BODY_BYTES).await;
        Ok(())
    }

    /// `POST /downloads`.
    pub async fn download(&self, document_id: &str) -> Result<DownloadGrant, GrantError> {
        let stage = "requesting the download grant";
        let body = DownloadGrantRequest { document_id: document_id.to_owned() };
        let builder = self.http.post(self.url(&["downloads"])).json(&body);
        let grant: DownloadGrant = self.send_json(stage, builder).await?;
        if grant.document_id != document_id {
            return Err(GrantError::MismatchedAnswer {
                stage,
                field: "document_id",
                expected: document_id.to_owned(),
                actual: grant.document_id,
            });
        }
        if grant.size > MAX_DOWNLOAD_SIZE {
            return Err(GrantError::UnexpectedResponse {
                stage,
                status: 200,
                body: format!(
                    "the grant's size of {} bytes is larger than the {MAX_DOWNLOAD_SIZE} bytes (5 TiB) \
                     an object can have",
                    grant.size
                ),
                retry_after: None,
            });
        }
        check_store_url(stage, &grant.url)?;
        Ok(grant)
    }

    /// `GET /keys`: the JWKS whose keys sign receipts and checkpoints.
    pub async fn keys(&self) -> Result<JwkSet, GrantError> {
        let stage = "fetching the gateway's signing keys";
        let builder = self.http.get(self.url(&["keys"]));
        self.send_json(stage, builder).await
    }

    /// `POST /checkpoints`: the gateway countersigns the transfer log's
    /// head. Sending the same head again returns the same checkpoint, so the
    /// call is safe to repeat.
    pub async fn checkpoint(
        &self,
        request: &ferry_api::CheckpointRequest,
    ) -> Result<ferry_api::Checkpoint, GrantError> {
        let stage = "countersigning the transfer log's head";
        let builder = self.http.post(self.url(&["checkpoints"])).json(request);
        self.send_json(stage, builder).await
    }

    /// `GET /checkpoints?device_id=…`: the checkpoints the gateway keeps for
    /// one device and the caller, in sequence order.
    pub async fn checkpoints(&self, device_id: &str) -> Result<Vec<ferry_api::Checkpoint>, GrantError> {
        let stage = "listing the gateway's checkpoints";
        let builder = self.http.get(self.url(&["checkpoints"])).query(&[("device_id", device_id)]);
        self.send_json(stage, builder).await
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        {
            let mut path = url.path_segments_mut().expect("the grant API base URL is an http(s) URL");
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    async fn send_json<T: DeserializeOwned>(
        &self,
        stage: &'static str,
        builder: reqwest::RequestBuilder,
    ) -> Result<T, GrantError> {
        let response = self.send(stage, builder).await?;
        let status = response.status().as_u16();
        let body = read_limited(response, MAX_JSON_BODY_BYTES)
            .await
            .map_err(|error| body_error(stage, error))?;
        serde_json::from_slice(&body).map_err(|error| GrantError::UnexpectedResponse {
            stage,
            status,
            body: format!("{error}; body: {}", truncate_body(&body)),
            retry_after: None,
        })
    }

    /// Sends the request with a fresh bearer token and maps error statuses
    /// to [`GrantError`]. A 401 answer means the gateway rejected the token
    /// (RFC 6750 §3.1 `invalid_token`, for example after a revocation), so
    /// the request is sent once more with a renewed token.
    async fn send(
        &self,
        stage: &'static str,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, GrantError> {
        let token = self
            .tokens
            .access_token()
            .await
            .map_err(|source| GrantError::AccessToken { stage, source })?;
        let retry = builder.try_clone();
        let mut response = builder
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(|source| GrantError::Transport { stage, source })?;

        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && let Some(retry) = retry
        {
            tracing::info!(stage, "the gateway rejected the access token; renewing it and retrying once");
            let _ = read_prefix(response, MAX_ERROR_BODY_BYTES).await;
            let token = self
                .tokens
                .renewed_access_token()
                .await
                .map_err(|source| GrantError::AccessToken { stage, source })?;
            response = retry
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(|source| GrantError::Transport { stage, source })?;
        }

        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        let (body, _truncated) = read_prefix(response, MAX_ERROR_BODY_BYTES)
            .await
            .map_err(|error| body_error(stage, error))?;
        Err(match serde_json::from_slice::<ApiError>(&body) {
            Ok(error) => GrantError::Api {
                stage,
                status: status.as_u16(),
                code: ErrorCodeName(error.error),
                error,
                retry_after,
            },
            Err(_) => GrantError::UnexpectedResponse {
                stage,
                status: status.as_u16(),
                body: truncate_body(&body),
                retry_after,
            },
        })
    }
}

/// Checks an upload grant's part plan against the S3 multipart limits and
/// the request. The gateway may raise the proposed part size but never
/// lower it. Without this check a gateway that sent 1-byte parts would make
/// the client plan one part record per byte of the file.
fn check_upload_plan(stage: &'static str, request: &UploadGrantRequest, grant: &UploadGrant) -> Result<(), GrantError> {
    let problem = if grant.part_size < request.part_size {
        format!("a part size of {} bytes, below the {} bytes requested", grant.part_size, request.part_size)
    } else if grant.part_size > ferry_api::MAX_PART_SIZE {
        format!("a part size of {} bytes, above the S3 limit of {} bytes", grant.part_size, ferry_api::MAX_PART_SIZE)
    } else if grant.part_count > ferry_api::MAX_PART_COUNT {
        format!("{} parts, more than the S3 limit of {}", grant.part_count, ferry_api::MAX_PART_COUNT)
    } else {
        return Ok(());
    };
    Err(GrantError::UnexpectedResponse {
        stage,
        status: 201,
        body: format!("upload {} has {problem}", grant.upload_id),
        retry_after: None,
    })
}

/// Checks a signed URL from the gateway with the same rule as every other
/// URL Ferry sends to: `https://`, or `http://` to a loopback host.
fn check_store_url(stage: &'static str, url: &SignedUrl) -> Result<(), GrantError> {
    let parsed = Url::parse(url.expose()).map_err(|_| GrantError::UnexpectedResponse {
        stage,
        status: 200,
        body: format!("the store URL {} is not a valid URL", url.redacted()),
        retry_after: None,
    })?;
    require_secure(&parsed).map_err(|source| GrantError::InsecureStoreUrl { stage, source })
}

/// Maps a failure to read a body, which is either a transport error or a
/// body over its bound.
fn body_error(stage: &'static str, error: HttpError) -> GrantError {
    match error {
        HttpError::Request { source, .. } => GrantError::Transport { stage, source },
        HttpError::BodyTooLarge { limit, .. } => GrantError::BodyTooLarge { stage, limit },
        other => unreachable!("reading a body failed with {other}"),
    }
}

fn truncate_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut end = text.len().min(MAX_BODY_IN_ERROR);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if end < text.len() {
        format!("{}…", &text[..end])
    } else {
        text.into_owned()
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date (RFC 9110
/// §10.2.3). A date in the past gives zero.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = date.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Failure to verify a completion receipt.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    #[error("the receipt's {field} is {actual} but the client computed {expected}")]
    Mismatch { field: &'static str, expected: String, actual: String },
    #[error(
        "the receipt's signature names key {}, which is not in the gateway's JWKS",
        kid.as_deref().unwrap_or("(no kid)")
    )]
    UnknownKey { kid: Option<String> },
    #[error("the receipt's signature is invalid: {0}")]
    Signature(#[source] jsonwebtoken::errors::Error),
    #[error("the signed payload differs from the receipt the gateway returned")]
    PayloadDiffers,
    #[error(
        "the receipt files document {document_id} under patient {actual}, but the upload was for patient {expected}. \
         The file is now stored at the gateway under patient {actual}: report document {document_id} to the \
         platform's administrators so they remove it from that patient's record"
    )]
    PatientMismatch { expected: String, actual: String, document_id: String },
    #[error(
        "the gateway's completion response names document {completed} but its signed receipt names document {receipt}. \
         The file is stored at the gateway: report both documents to the platform's administrators, who can tell \
         which one holds the file"
    )]
    DocumentMismatch { completed: String, receipt: String },
}

/// What the client knows about an upload, to check a receipt against.
#[derive(Debug, Clone)]
pub struct ExpectedReceipt<'a> {
    pub upload_id: &'a str,
    pub size: u64,
    pub sha256: &'a str,
    /// Each part's SHA-256 (hex) in part-number order.
    pub part_sha256: &'a [String],
    /// The FHIR Patient id the user chose for the upload.
    pub patient: &'a str,
    /// The document id of the gateway's completion response, outside the
    /// signed receipt.
    pub document_id: &'a str,
}

/// Computes the S3 composite checksum: SHA-256 (hex) of the parts' binary
/// SHA-256 digests concatenated in part-number order.
pub fn parts_sha256(part_sha256: &[String]) -> String {
    let mut hasher = Sha256::new();
    for part in part_sha256 {
        let digest = hex::decode(part).unwrap_or_default();
        hasher.update(&digest);
    }
    hex::encode(hasher.finalize())
}

/// Verifies a receipt: its fields match what the client computed and the
/// patient it chose, its document id matches the completion response's, and
/// its `jws` is an ES256 signature by a key of `keys` over the same receipt.
pub fn verify_receipt(
    signed: &SignedReceipt,
    expected: &ExpectedReceipt<'_>,
    keys: &JwkSet,
) -> Result<(), ReceiptError> {
    let receipt = &signed.receipt;
    check_field("upload_id", expected.upload_id, &receipt.upload_id)?;
    check_field("size", &expected.size.to_string(), &receipt.size.to_string())?;
    check_field("sha256", expected.sha256, &receipt.sha256)?;
    check_field(
        "part_count",
        &expected.part_sha256.len().to_string(),
        &receipt.part_count.to_string(),
    )?;
    check_field("parts_sha256", &parts_sha256(expected.part_sha256), &receipt.parts_sha256)?;
    // FHIR ids are case-sensitive, so the patient and document ids are
    // compared exactly, unlike the hex digests above.
    if receipt.patient != expected.patient {
        return Err(ReceiptError::PatientMismatch {
            expected: expected.patient.to_owned(),
            actual: receipt.patient.clone(),
            document_id: receipt.document_id.clone(),
        });
    }
    if receipt.document_id != expected.document_id {
        return Err(ReceiptError::DocumentMismatch {
            completed: expected.document_id.to_owned(),
            receipt: receipt.document_id.clone(),
        });
    }

    let header = jsonwebtoken::decode_header(&signed.jws).map_err(ReceiptError::Signature)?;
    let jwk = match header.kid.as_deref() {
        Some(kid) => keys.find(kid),
        None if keys.keys.len() == 1 => keys.keys.first(),
        None => None,
    }
    .ok_or_else(|| ReceiptError::UnknownKey { kid: header.kid.clone() })?;
    let key = DecodingKey::from_jwk(jwk).map_err(ReceiptError::Signature)?;

    // The receipt is not a JWT: no registered claims are required or checked.
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let signed_receipt = jsonwebtoken::decode::<Receipt>(&signed.jws, &key, &validation)
        .map_err(ReceiptError::Signature)?
        .claims;
    if &signed_receipt != receipt {
        return Err(ReceiptError::PayloadDiffers);
    }
    Ok(())
}

fn check_field(field: &'static str, expected: &str, actual: &str) -> Result<(), ReceiptError> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(ReceiptError::Mismatch { field, expected: expected.to_owned(), actual: actual.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_accepts_http_date_in_past() {
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_accepts_http_date_in_future() {
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
        let value = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&later)
            .unwrap();
        let wait = parse_retry_after(&value).unwrap();
        assert!(wait > Duration::from_secs(60), "{wait:?} from {value}");
    }

    #[test]
    fn retry_after_rejects_garbage() {
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn urls_join_below_base_path() {
        let client = GrantClient::new(
            Url::parse("http://127.0.0.1:7420/grant/v1").unwrap(),
            reqwest::Client::new(),
            Arc::new(StaticAccessToken(Secret::new("t"))),
        );
        assert_eq!(
            client.url(&["uploads", "upl_1", "part-urls"]).as_str(),
            "http://127.0.0.1:7420/grant/v1/uploads/upl_1/part-urls"
        );
        let trailing = GrantClient::new(
            Url::parse("http://127.0.0.1:7420/grant/v1/").unwrap(),
            reqwest::Client::new(),
            Arc::new(StaticAccessToken(Secret::new("t"))),
        );
        assert_eq!(trailing.url(&["keys"]).as_str(), "http://127.0.0.1:7420/grant/v1/keys");
    }

    #[test]
    fn parts_sha256_hashes_binary_digests_in_order() {
        let a = hex::encode(Sha256::digest(b"a"));
        let b = hex::encode(Sha256::digest(b"b"));
        let mut concatenated = Sha256::digest(b"a").to_vec();
        concatenated.extend_from_slice(&Sha256::digest(b"b"));
        assert_eq!(parts_sha256(&[a.clone(), b.clone()]), hex::encode(Sha256::digest(&concatenated)));
        assert_ne!(parts_sha256(&[b, a]), hex::encode(Sha256::digest(&concatenated)));
    }

    #[test]
    fn error_message_keeps_message_and_field() {
        let error = GrantError::Api {
            stage: "creating the upload grant",
            status: 400,
            code: ErrorCodeName(ErrorCode::InvalidRequest),
            error: ApiError {
                error: ErrorCode::InvalidRequest,
                message: "size must be at most 5 TiB".into(),
                field: Some("size".into()),
                correlation_id: None,
            },
            retry_after: None,
        };
        assert_eq!(
            error.to_string(),
            "creating the upload grant: the gateway returned 400 invalid_request: \
             size must be at most 5 TiB (field `size`)"
        );
        assert!(!error.is_retryable());
    }
}
