//! Wire types of Ferry's grant API, shared by the client (`ferry-core`) and
//! the reference gateway (`ferry-gateway`). `docs/grant-api.md` describes
//! the contract with request and response examples.
//!
//! Conventions that hold for every type here:
//! - sizes are bytes as `u64`, so files of 4 GiB and more are described exactly;
//! - `sha256` fields are lowercase hex of the SHA-256 digest (64 characters);
//! - times are RFC 3339 timestamps in UTC;
//! - requests reject unknown fields, so a misspelt field is an error rather
//!   than a silently ignored option.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Version of the grant API contract, used as the path prefix (`/grant/v1`).
pub const API_VERSION: &str = "v1";

/// Field of the SMART configuration document (`/.well-known/smart-configuration`)
/// in which a Ferry gateway advertises the base URL of its grant API.
pub const SMART_CONFIGURATION_GRANT_API_FIELD: &str = "ferry_grant_api";

/// Smallest part the S3 multipart protocol accepts, except for the last part.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Largest part the S3 multipart protocol accepts.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Largest number of parts in one S3 multipart upload.
pub const MAX_PART_COUNT: u32 = 10_000;
/// Largest number of part URLs one `part-urls` request may ask for.
pub const MAX_PART_URLS_PER_REQUEST: usize = 100;

/// A URL signed by the store (S3 SigV4 presigned URL). Its query string is a
/// bearer credential, so `Debug` and `Display` show only scheme, host and path.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SignedUrl(String);

impl SignedUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// Returns the full URL, signature included, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Returns the URL without its query string, safe to log.
    pub fn redacted(&self) -> &str {
        self.0.split(['?', '#']).next().unwrap_or_default()
    }
}

impl fmt::Debug for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedUrl({}?[redacted])", self.redacted())
    }
}

impl fmt::Display for SignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}?[redacted]", self.redacted())
    }
}

/// `POST /grant/v1/uploads`: ask for permission to upload one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadGrantRequest {
    /// File name shown to users and stored in the `DocumentReference`; a
    /// plain name without path separators.
    pub file_name: String,
    pub size: u64,
    /// MIME type, for example `application/zip` or `application/dicom`.
    pub media_type: String,
    /// Logical id of the FHIR `Patient` the file belongs to. A token with a
    /// patient context may only name that patient.
    pub patient: String,
    /// Part size the client proposes. The gateway raises it only to respect
    /// the store's limits (`MIN_PART_SIZE`, `MAX_PART_COUNT`).
    pub part_size: u64,
    /// Imaging study carried by the file, registered as a FHIR `ImagingStudy`
    /// on completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<StudySummary>,
    /// The user's explicit confirmation that the file may be filed under this
    /// patient although its content names another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_mismatch_confirmation: Option<PatientMismatchConfirmation>,
}

/// Summary of an imaging study sent with an upload grant request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySummary {
    pub study_instance_uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    pub series: Vec<SeriesSummary>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesSummary {
    pub series_instance_uid: String,
    pub modality: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub instance_count: u32,
}

/// Confirmation of a patient mismatch found by the client's study scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientMismatchConfirmation {
    /// Why the user proceeds, in their words.
    pub reason: String,
    /// What the scan found, for example "Patient ID 8812 in the study does
    /// not match Patient/pat-001".
    pub findings: Vec<String>,
}

/// Response to an upload grant request (`201 Created`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadGrant {
    /// Id of this upload at the gateway, used in every later call.
    pub upload_id: String,
    pub part_size: u64,
    pub part_count: u32,
    pub size: u64,
    /// Until when the upload can be resumed; after that the gateway aborts it
    /// and deletes its parts.
    pub expires_at: Timestamp,
    /// Id that joins this transfer's records in the client's log and the
    /// gateway's audit.
    pub correlation_id: String,
}

/// `POST /grant/v1/uploads/{upload_id}/part-urls`: ask for URLs of some parts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartUrlsRequest {
    /// At most `MAX_PART_URLS_PER_REQUEST` parts.
    pub parts: Vec<PartChecksum>,
}

/// A part the client has read and hashed, before it is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartChecksum {
    /// 1-based part number, at most `part_count`.
    pub part_number: u32,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartUrls {
    pub urls: Vec<PartUrl>,
}

/// A presigned `UploadPart` request. The client sends exactly `method`, to
/// `url`, with every header in `headers` (which the signature binds, among
/// them `x-amz-checksum-sha256`), and nothing that identifies the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartUrl {
    pub part_number: u32,
    pub method: String,
    pub url: SignedUrl,
    pub headers: BTreeMap<String, String>,
    pub expires_at: Timestamp,
}

/// State of an upload at the gateway, as `GET /grant/v1/uploads/{upload_id}` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadState {
    pub upload_id: String,
    pub status: UploadStatus,
    pub file_name: String,
    pub size: u64,
    pub part_size: u64,
    pub part_count: u32,
    /// Parts the store holds, in part-number order.
    pub parts: Vec<StoredPart>,
    pub expires_at: Timestamp,
    pub correlation_id: String,
    /// Present once the upload is completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<CompletedUpload>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadStatus {
    Open,
    Completed,
    Aborted,
    Expired,
    /// Refused by policy after the grant was issued (deny list).
    Denied,
}

/// A part as the store reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPart {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
    pub sha256: String,
}

/// `POST /grant/v1/uploads/{upload_id}/complete`. Completing twice returns the
/// same receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteUploadRequest {
    /// Every part, in part-number order.
    pub parts: Vec<CompletedPart>,
    /// SHA-256 of the whole file, computed by the client while it read the file.
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
    pub sha256: String,
}

/// Response to a completion: the FHIR `DocumentReference` created for the
/// file and the gateway's signed receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedUpload {
    pub document_id: String,
    pub receipt: SignedReceipt,
}

/// What the gateway attests about a completed upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub upload_id: String,
    pub document_id: String,
    /// Store object key.
    pub object: String,
    pub size: u64,
    pub sha256: String,
    /// SHA-256 (hex) of the concatenated binary SHA-256 digests of the parts
    /// in part-number order: the S3 composite checksum, as hex.
    pub parts_sha256: String,
    pub part_count: u32,
    pub patient: String,
    pub completed_at: Timestamp,
    pub correlation_id: String,
}

/// A receipt with its signature: `jws` is a compact JWS (ES256) whose payload
/// is the JSON of `receipt`, signed by a key published in the gateway's JWKS
/// at `GET /grant/v1/keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    pub jws: String,
}

/// `POST /grant/v1/downloads`: ask for permission to download one document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownloadGrantRequest {
    /// Logical id of the FHIR `DocumentReference`.
    pub document_id: String,
}

/// A presigned `GET` for one object. Ranged requests (`Range`, `If-Range`)
/// are allowed; no other header is needed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadGrant {
    pub document_id: String,
    pub url: SignedUrl,
    pub expires_at: Timestamp,
    pub size: u64,
    pub sha256: String,
    /// File name as uploaded. Clients must not trust it as a path.
    pub file_name: String,
    pub media_type: String,
    pub patient: String,
    pub correlation_id: String,
}

/// `POST /grant/v1/checkpoints`: the client's transfer-log head, which the
/// gateway countersigns and stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRequest {
    pub device_id: String,
    /// Id (a UUID) of the log on that device; one device keeps one log per
    /// profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_id: Option<String>,
    /// Sequence number of the log's last record.
    pub seq: u64,
    /// SHA-256 (hex) of the log's last record.
    pub head_sha256: String,
    /// Number of the log's current signing epoch.
    pub epoch: u64,
    /// Public key (hex, Ed25519) of that epoch.
    pub epoch_public_key: String,
    /// Public key (hex, Ed25519) of epoch 0, which the log's first record
    /// introduces: the device's key for this log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_public_key: Option<String>,
    /// The log's epoch records since its last recorded checkpoint, oldest
    /// first, from which the gateway checks that each new epoch key was
    /// signed by the key of the epoch before it. The gateway does not sign
    /// or store them: a countersigned checkpoint never carries them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epoch_links: Vec<EpochLink>,
}

/// A key rotation of a transfer log, as its `epoch` record states it: the
/// key of epoch `epoch - 1` signed `public_key` at `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochLink {
    /// The epoch that starts with the record.
    pub epoch: u64,
    /// Sequence number of the record.
    pub seq: u64,
    /// SHA-256 (hex) of the log's line before the record.
    pub prev: String,
    /// Public key (hex, Ed25519) of the new epoch.
    pub public_key: String,
    /// Signature (hex, Ed25519) by the previous epoch's key over
    /// [`epoch_message`].
    pub signature: String,
}

const EPOCH_DOMAIN: &[u8] = b"ferry-transfer-log/v1/epoch\0";

/// Bytes the outgoing key of a transfer log signs at a rotation: the
/// domain, the log id (the UUID's 16 bytes), the new epoch, the record's
/// seq (both big-endian), the head hash and the new public key.
pub fn epoch_message(
    log_id: &[u8; 16],
    new_epoch: u64,
    seq: u64,
    head: &[u8; 32],
    new_public_key: &[u8; 32],
) -> Vec<u8> {
    let mut message = EPOCH_DOMAIN.to_vec();
    message.extend_from_slice(log_id);
    message.extend_from_slice(&new_epoch.to_be_bytes());
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(head);
    message.extend_from_slice(new_public_key);
    message
}

/// A checkpoint countersigned by the gateway: `jws` is a compact JWS (ES256)
/// over the JSON of `checkpoint`, verifiable with `GET /grant/v1/keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub checkpoint: CheckpointRequest,
    pub subject: String,
    pub recorded_at: Timestamp,
    pub jws: String,
}

/// Body of every error response of the grant API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ErrorCode,
    /// A sentence naming the problem and, where one exists, the fix.
    pub message: String,
    /// The request field at fault, as a JSON path (`parts[3].sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: malformed body or a field out of range.
    InvalidRequest,
    /// 401: missing, invalid or expired access token.
    InvalidToken,
    /// 403: the token lacks the scope this action needs.
    InsufficientScope,
    /// 403: policy refused (patient compartment, deny list, media type).
    Forbidden,
    /// 404: no such upload or document, or none visible to this token.
    NotFound,
    /// 409: the request contradicts the upload's state (part list mismatch,
    /// wrong whole-file hash, upload already aborted).
    Conflict,
    /// 410: the upload expired and was aborted.
    Expired,
    /// 413: body or file larger than allowed.
    TooLarge,
    /// 415: media type not on the allow-list.
    UnsupportedMediaType,
    /// 429: slow down; honour `Retry-After`.
    RateLimited,
    /// 5xx: the gateway or the store failed; retry later.
    Internal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_url_debug_hides_query() {
        let url = SignedUrl::new("https://store.example/b/k?X-Amz-Signature=abc&partNumber=1");
        assert_eq!(format!("{url:?}"), "SignedUrl(https://store.example/b/k?[redacted])");
        assert_eq!(url.to_string(), "https://store.example/b/k?[redacted]");
        assert!(!format!("{url:?}").contains("abc"));
    }

    #[test]
    fn upload_request_rejects_unknown_fields() {
        let body = r#"{"file_name":"a.zip","size":1,"media_type":"application/zip",
            "patient":"pat-001","part_size":8388608,"sizee":2}"#;
        let error = serde_json::from_str::<UploadGrantRequest>(body).unwrap_err();
        assert!(error.to_string().contains("unknown field `sizee`"), "{error}");
    }

    #[test]
    fn sizes_past_four_gib_round_trip() {
        let request = UploadGrantRequest {
            file_name: "ct.zip".into(),
            size: 5 * 1024 * 1024 * 1024 + 7,
            media_type: "application/zip".into(),
            patient: "pat-001".into(),
            part_size: MIN_PART_SIZE,
            study: None,
            patient_mismatch_confirmation: None,
        };
        let json = serde_json::to_string(&request).unwrap();
        assert!(json.contains("\"size\":5368709127"), "{json}");
        assert_eq!(serde_json::from_str::<UploadGrantRequest>(&json).unwrap(), request);
    }
}
