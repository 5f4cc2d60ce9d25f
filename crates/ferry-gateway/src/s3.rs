//! The gateway's client of an S3-compatible store: AWS Signature Version 4
//! presigned URLs for clients, and header-signed requests for the multipart
//! calls the gateway makes itself (create, list parts, complete, abort) and
//! for `HEAD`, `GET` (read-back) and `DELETE` of objects.
//!
//! Works against the embedded store and external ones (AWS S3, MinIO,
//! s3s-fs): endpoint, region, bucket, path-style or virtual-hosted URLs.
//! Signing follows "Authenticating Requests: AWS Signature Version 4" of the
//! Amazon S3 API reference: header-signed requests sign the payload's
//! SHA-256, presigned URLs sign `UNSIGNED-PAYLOAD`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use ferry_api::SignedUrl;
use futures::StreamExt as _;
use hmac::{Hmac, Mac as _};
use jiff::Timestamp;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use url::Url;

/// Most parts one `ListParts` response returns (S3's limit and default).
pub const LIST_PARTS_PAGE: u32 = 1000;

/// Maximum lifetime SigV4 allows for a presigned URL (7 days).
pub const MAX_PRESIGN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// An S3 secret access key; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretAccessKey(String);

impl SecretAccessKey {
    pub fn new(secret: impl Into<String>) -> SecretAccessKey {
        SecretAccessKey(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Where the store is and how to sign for it.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Base URL of the store, e.g. `http://127.0.0.1:7421`.
    pub endpoint: Url,
    pub region: String,
    pub bucket: String,
    /// `true`: `{endpoint}/{bucket}/{key}`; `false`: `{bucket}.{host}/{key}`.
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: SecretAccessKey,
    /// Maximum wait for the next bytes of a store response, so a store that
    /// accepts a connection and then stalls fails the request.
    pub read_timeout: Duration,
}

/// Default of [`S3Config::read_timeout`]: two minutes without a byte from
/// the store.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Errors of store requests. Messages name the operation and object key;
/// they never contain a signature.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("{operation} on '{key}' failed to reach the store: {source}")]
    Transport {
        operation: &'static str,
        key: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{operation} on '{key}' was rejected by the store: HTTP {status} {code}: {message}")]
    Status {
        operation: &'static str,
        key: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{operation} on '{key}' timed out: the store sent nothing for {} s", timeout.as_secs_f64())]
    TimedOut {
        operation: &'static str,
        key: String,
        timeout: Duration,
    },
    #[error("{operation} on '{key}' returned a response that is not valid S3 XML: {detail}")]
    Parse {
        operation: &'static str,
        key: String,
        detail: String,
    },
}

impl S3Error {
    /// The S3 error code (`NoSuchUpload`, `InvalidPart`, …), if the store sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Status { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Returns whether the store request timed out waiting for response bytes.
    pub fn is_timeout(&self) -> bool {
        matches!(self, S3Error::TimedOut { .. })
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            S3Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A part as `ListParts` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    pub part_number: u32,
    /// Empty when the store does not report ETags in its listing.
    pub etag: String,
    pub size: u64,
    /// Base64 SHA-256 of the part, when the upload was created with SHA-256 checksums.
    pub checksum_sha256: Option<String>,
}

/// A part of a `CompleteMultipartUpload` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletePart {
    pub part_number: u32,
    pub etag: String,
    /// Base64 SHA-256 of the part.
    pub checksum_sha256: String,
}

/// Result of `CompleteMultipartUpload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedObject {
    pub etag: String,
    /// The composite checksum, `BASE64-N`, when the store reports one.
    pub checksum_sha256: Option<String>,
}

/// Result of `HeadObject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
    pub etag: Option<String>,
    pub checksum_sha256: Option<String>,
}

/// Client of one bucket of an S3-compatible store.
#[derive(Debug, Clone)]
pub struct S3Client {
    config: S3Config,
    http: reqwest::Client,
}

/// Characters SigV4 leaves unencoded (RFC 3986 unreserved).
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~')
}

/// URI-encodes as SigV4 requires: every byte but the unreserved ones as
/// `%XX` with upper-case hex; `/` kept only when `keep_slash`.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if is_unreserved(byte) || (keep_slash && byte == b'/') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn amz_date(now: Timestamp) -> String {
    now.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Base64 of a part's SHA-256, the form of `x-amz-checksum-sha256`, from hex.
pub fn hex_to_base64(sha256_hex: &str) -> Option<String> {
    let digest = hex::decode(sha256_hex).ok()?;
    (digest.len() == 32).then(|| STANDARD.encode(digest))
}

/// Hex of a SHA-256 given as base64, or `None` when it is not one.
pub fn base64_to_hex(sha256_base64: &str) -> Option<String> {
    let digest = STANDARD.decode(sha256_base64).ok()?;
    (digest.len() == 32).then(|| hex::encode(digest))
}

/// A request ready to sign: method, URL parts and headers.
struct Canonical<'a> {
    method: &'a str,
    /// Encoded path, starting with `/`.
    path: String,
    /// Decoded query parameters.
    query: Vec<(String, String)>,
    /// Lower-case names; `host` included.
    headers: BTreeMap<String, String>,
    payload_hash: &'a str,
}

impl Canonical<'_> {
    fn canonical_query(&self) -> String {
        let mut pairs: Vec<(String, String)> = self
            .query
            .iter()
            .map(|(name, value)| (uri_encode(name, false), uri_encode(value, false)))
            .collect();
        pairs.sort();
        pairs
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    fn signed_headers(&self) -> String {
        self.headers.keys().cloned().collect::<Vec<_>>().join(";")
    }

    fn canonical_request(&self) -> String {
        let headers: String = self
            .headers
            .iter()
            .map(|(name, value)| format!("{name}:{}\n", value.trim()))
            .collect();
        format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            self.method,
            self.path,
            self.canonical_query(),
            headers,
            self.signed_headers(),
            self.payload_hash
        )
    }
}

impl S3Client {
    pub fn new(config: S3Config) -> S3Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(config.read_timeout)
            .build()
            .expect("a reqwest client without custom TLS settings builds");
        S3Client { config, http }
    }

    fn transport_error(&self, operation: &'static str, key: &str, source: reqwest::Error) -> S3Error {
        if source.is_timeout() {
            return S3Error::TimedOut {
                operation,
                key: key.to_owned(),
                timeout: self.config.read_timeout,
            };
        }
        S3Error::Transport {
            operation,
            key: key.to_owned(),
            source,
        }
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    pub fn bucket(&self) -> &str {
        &self.config.bucket
    }

    /// URL without query, the `host` header value and the encoded path of `key`
    /// (or of the bucket itself for an empty key).
    fn locate(&self, key: &str) -> (Url, String, String) {
        let endpoint = &self.config.endpoint;
        let mut url = endpoint.clone();
        let encoded_key = uri_encode(key, true);
        let base_path = endpoint.path().trim_end_matches('/');
        let path = if self.config.path_style {
            if key.is_empty() {
                format!("{base_path}/{}", uri_encode(&self.config.bucket, false))
            } else {
                format!(
                    "{base_path}/{}/{encoded_key}",
                    uri_encode(&self.config.bucket, false)
                )
            }
        } else {
            let host = format!(
                "{}.{}",
                self.config.bucket,
                endpoint.host_str().unwrap_or_default()
            );
            // The bucket name was validated as a DNS label when configured.
            let _ = url.set_host(Some(&host));
            format!("{base_path}/{encoded_key}")
        };
        url.set_path(&path);
        url.set_query(None);
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        (url, host, path)
    }

    fn credential_scope(&self, now: Timestamp) -> String {
        format!(
            "{}/{}/s3/aws4_request",
            now.strftime("%Y%m%d"),
            self.config.region
        )
    }

    fn signature(&self, canonical: &Canonical<'_>, now: Timestamp) -> String {
        let scope = self.credential_scope(now);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
            amz_date(now),
            hex::encode(Sha256::digest(canonical.canonical_request().as_bytes()))
        );

        let date = now.strftime("%Y%m%d").to_string();
        let secret = format!("AWS4{}", self.config.secret_access_key.expose());
        let key = hmac_sha256(secret.as_bytes(), date.as_bytes());
        let key = hmac_sha256(&key, self.config.region.as_bytes());
        let key = hmac_sha256(&key, b"s3");
        let key = hmac_sha256(&key, b"aws4_request");
        hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()))
    }

    /// Presigns a request on `key` for `lifetime` from `now`. Every header in
    /// `headers` becomes a signed header the client must send unchanged.
    pub fn presign(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &BTreeMap<String, String>,
        lifetime: Duration,
        now: Timestamp,
    ) -> SignedUrl {
        let (mut url, host, path) = self.locate(key);
        let lifetime = lifetime.min(MAX_PRESIGN_LIFETIME).as_secs().max(1);

        let mut signed_headers: BTreeMap<String, String> = headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
            .collect();
        signed_headers.insert("host".into(), host);

        let mut query: Vec<(String, String)> = query
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        query.push(("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()));
        query.push((
            "X-Amz-Credential".into(),
            format!(
                "{}/{}",
                self.config.access_key_id,
                self.credential_scope(now)
            ),
        ));
        query.push(("X-Amz-Date".into(), amz_date(now)));
        query.push(("X-Amz-Expires".into(), lifetime.to_string()));
        query.push((
            "X-Amz-SignedHeaders".into(),
            signed_headers.keys().cloned().collect::<Vec<_>>().join(";"),
        ));

        let canonical = Canonical {
            method,
            path,
            query,
            headers: signed_headers,
            payload_hash: "UNSIGNED-PAYLOAD",
        };
        let signature = self.signature(&canonical, now);
        let query_string = format!(
            "{}&X-Amz-Signature={signature}",
            canonical.canonical_query()
        );
        url.set_query(Some(&query_string));
        SignedUrl::new(url.to_string())
    }

    /// Sends a header-signed request and returns the response if its status
    /// is a success; otherwise the S3 error it carries.
    async fn send(
        &self,
        operation: &'static str,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, &str)],
        extra_headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<reqwest::Response, S3Error> {
        let now = Timestamp::now();
        let (mut url, host, path) = self.locate(key);
        let payload_hash = hex::encode(Sha256::digest(&body));

        let mut headers: BTreeMap<String, String> = extra_headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), (*value).to_owned()))
            .collect();
        headers.insert("host".into(), host);
        headers.insert("x-amz-date".into(), amz_date(now));
        headers.insert("x-amz-content-sha256".into(), payload_hash.clone());

        let canonical = Canonical {
            method: method.as_str(),
            path,
            query: query
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            headers,
            payload_hash: &payload_hash,
        };
        let signature = self.signature(&canonical, now);
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={signature}",
            self.config.access_key_id,
            self.credential_scope(now),
            canonical.signed_headers()
        );
        let query_string = canonical.canonical_query();
        url.set_query((!query_string.is_empty()).then_some(query_string.as_str()));

        let mut request = self.http.request(method.clone(), url).body(body);
        for (name, value) in &canonical.headers {
            // reqwest sets `host` from the URL, with the same value.
            if name != "host" {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        request = request.header("authorization", authorization);

        let response = request.send().await.map_err(|source| self.transport_error(operation, key, source))?;
        if response.status().is_success() {
            return Ok(response);
        }

        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let (code, message) =
            parse_error(&text).unwrap_or_else(|| (format!("HTTP{status}"), String::new()));
        Err(S3Error::Status {
            operation,
            key: key.to_owned(),
            status,
            code,
            message,
        })
    }

    async fn send_xml<T: for<'de> Deserialize<'de>>(
        &self,
        operation: &'static str,
        method: reqwest::Method,
        key: &str,
        query: &[(&str, &str)],
        extra_headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<T, S3Error> {
        let response = self
            .send(operation, method, key, query, extra_headers, body)
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|source| self.transport_error(operation, key, source))?;
        // CompleteMultipartUpload may fail after sending 200 OK; the body is
        // then an <Error> document.
        if let Some((code, message)) = parse_error(&text) {
            return Err(S3Error::Status {
                operation,
                key: key.to_owned(),
                status,
                code,
                message,
            });
        }
        quick_xml::de::from_str(&text).map_err(|error| S3Error::Parse {
            operation,
            key: key.to_owned(),
            detail: error.to_string(),
        })
    }

    /// `CreateBucket`; an existing bucket owned by these credentials is fine.
    pub async fn create_bucket(&self) -> Result<(), S3Error> {
        match self
            .send(
                "CreateBucket",
                reqwest::Method::PUT,
                "",
                &[],
                &[],
                Bytes::new(),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(error)
                if matches!(
                    error.code(),
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// `CreateMultipartUpload` with SHA-256 part checksums; returns the upload id.
    pub async fn create_multipart_upload(
        &self,
        key: &str,
        content_type: &str,
    ) -> Result<String, S3Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct InitiateMultipartUploadResult {
            upload_id: String,
        }
        let result: InitiateMultipartUploadResult = self
            .send_xml(
                "CreateMultipartUpload",
                reqwest::Method::POST,
                key,
                &[("uploads", "")],
                &[
                    ("x-amz-checksum-algorithm", "SHA256"),
                    ("content-type", content_type),
                ],
                Bytes::new(),
            )
            .await?;
        Ok(result.upload_id)
    }

    /// `ListParts`, following `NextPartNumberMarker` through every page.
    pub async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<ListedPart>, S3Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct ListPartsResult {
            #[serde(default)]
            is_truncated: bool,
            #[serde(default)]
            next_part_number_marker: Option<u32>,
            #[serde(default, rename = "Part")]
            parts: Vec<PartXml>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct PartXml {
            part_number: u32,
            // s3s-fs 0.14.1 lists parts without ETags.
            #[serde(default, rename = "ETag")]
            etag: String,
            size: u64,
            #[serde(default, rename = "ChecksumSHA256")]
            checksum_sha256: Option<String>,
        }

        let mut parts = Vec::new();
        let mut marker: Option<u32> = None;
        let max_parts = LIST_PARTS_PAGE.to_string();
        loop {
            let marker_text = marker.map(|marker| marker.to_string());
            let mut query = vec![("uploadId", upload_id), ("max-parts", max_parts.as_str())];
            if let Some(marker_text) = &marker_text {
                query.push(("part-number-marker", marker_text.as_str()));
            }
            let page: ListPartsResult = self
                .send_xml(
                    "ListParts",
                    reqwest::Method::GET,
                    key,
                    &query,
                    &[],
                    Bytes::new(),
                )
                .await?;

            let last = page.parts.last().map(|part| part.part_number);
            parts.extend(page.parts.into_iter().map(|part| ListedPart {
                part_number: part.part_number,
                etag: part.etag,
                size: part.size,
                checksum_sha256: part.checksum_sha256.filter(|value| !value.is_empty()),
            }));
            if !page.is_truncated {
                break;
            }
            let next = page.next_part_number_marker.or(last);
            // A truncated page must advance the marker, or the loop would not end.
            if next.is_none() || next == marker {
                return Err(S3Error::Parse {
                    operation: "ListParts",
                    key: key.to_owned(),
                    detail: "a truncated page did not advance NextPartNumberMarker".into(),
                });
            }
            marker = next;
        }
        parts.sort_by_key(|part| part.part_number);
        Ok(parts)
    }

    /// `CompleteMultipartUpload` with each part's ETag and SHA-256.
    pub async fn complete_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletePart],
    ) -> Result<CompletedObject, S3Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct CompleteMultipartUploadResult {
            #[serde(default, rename = "ETag")]
            etag: String,
            #[serde(default, rename = "ChecksumSHA256")]
            checksum_sha256: Option<String>,
        }

        let mut body = String::from(
            r#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#,
        );
        for part in parts {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag><ChecksumSHA256>{}</ChecksumSHA256></Part>",
                part.part_number,
                quick_xml::escape::escape(part.etag.as_str()),
                quick_xml::escape::escape(part.checksum_sha256.as_str()),
            ));
        }
        body.push_str("</CompleteMultipartUpload>");

        let result: CompleteMultipartUploadResult = self
            .send_xml(
                "CompleteMultipartUpload",
                reqwest::Method::POST,
                key,
                &[("uploadId", upload_id)],
                &[("content-type", "application/xml")],
                Bytes::from(body),
            )
            .await?;
        Ok(CompletedObject {
            etag: result.etag,
            checksum_sha256: result.checksum_sha256.filter(|value| !value.is_empty()),
        })
    }

    /// `AbortMultipartUpload`. Returns false when the store no longer knows the
    /// upload (`NoSuchUpload`): it was aborted before, or it was completed and
    /// the object exists.
    pub async fn abort_multipart_upload(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<bool, S3Error> {
        match self
            .send(
                "AbortMultipartUpload",
                reqwest::Method::DELETE,
                key,
                &[("uploadId", upload_id)],
                &[],
                Bytes::new(),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if error.code() == Some("NoSuchUpload") => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// `HeadObject` with checksum mode enabled; `None` when there is no such object.
    pub async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, S3Error> {
        let response = match self
            .send(
                "HeadObject",
                reqwest::Method::HEAD,
                key,
                &[],
                &[("x-amz-checksum-mode", "ENABLED")],
                Bytes::new(),
            )
            .await
        {
            Ok(response) => response,
            Err(error) if error.status() == Some(404) => return Ok(None),
            Err(error) => return Err(error),
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Some(ObjectHead {
            size: header("content-length")
                .and_then(|value| value.parse().ok())
                .unwrap_or_default(),
            etag: header("etag"),
            checksum_sha256: header("x-amz-checksum-sha256"),
        }))
    }

    /// Reads the whole object and returns its size and SHA-256 (hex).
    pub async fn sha256_object(&self, key: &str) -> Result<(u64, String), S3Error> {
        let response = self
            .send(
                "GetObject",
                reqwest::Method::GET,
                key,
                &[],
                &[],
                Bytes::new(),
            )
            .await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| self.transport_error("GetObject", key, source))?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((size, hex::encode(hasher.finalize())))
    }

    /// `DeleteObject`.
    pub async fn delete_object(&self, key: &str) -> Result<(), S3Error> {
        self.send(
            "DeleteObject",
            reqwest::Method::DELETE,
            key,
            &[],
            &[],
            Bytes::new(),
        )
        .await
        .map(drop)
    }
}

/// Parses an S3 `<Error>` document into code and message.
fn parse_error(text: &str) -> Option<(String, String)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct ErrorXml {
        code: String,
        #[serde(default)]
        message: String,
    }
    let trimmed = text.trim_start();
    let body = trimmed
        .strip_prefix("<?xml")
        .and_then(|rest| rest.split_once("?>").map(|(_, rest)| rest.trim_start()))
        .unwrap_or(trimmed);
    if !body.starts_with("<Error>") && !body.starts_with("<Error ") {
        return None;
    }
    quick_xml::de::from_str::<ErrorXml>(text)
        .ok()
        .map(|error| (error.code, error.message))
}

/// The S3 composite checksum of parts given by their hex SHA-256 digests:
/// SHA-256 of the concatenated binary digests, as hex.
pub fn composite_sha256_hex<'a>(part_digests: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut hasher = Sha256::new();
    for digest in part_digests {
        let bytes = hex::decode(digest).ok()?;
        if bytes.len() != 32 {
            return None;
        }
        hasher.update(&bytes);
    }
    Some(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(path_style: bool) -> S3Client {
        S3Client::new(S3Config {
            endpoint: Url::parse("https://s3.amazonaws.com").unwrap(),
            region: "us-east-1".into(),
            bucket: "examplebucket".into(),
            path_style,
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: SecretAccessKey::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            read_timeout: DEFAULT_READ_TIMEOUT,
        })
    }

    /// The presigned-URL example of the Amazon S3 API reference
    /// ("Authenticating Requests: Using Query Parameters").
    #[test]
    fn presign_matches_aws_reference_example() {
        let now: Timestamp = "2013-05-24T00:00:00Z".parse().unwrap();

        let url = client(false).presign(
            "GET",
            "test.txt",
            &[],
            &BTreeMap::new(),
            Duration::from_secs(86400),
            now,
        );

        assert!(
            url.expose().ends_with(
                "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
            ),
            "{}",
            url.expose()
        );
        assert!(
            url.expose()
                .starts_with("https://examplebucket.s3.amazonaws.com/test.txt?")
        );
    }

    #[test]
    fn path_style_url_puts_bucket_in_path() {
        let now: Timestamp = "2013-05-24T00:00:00Z".parse().unwrap();

        let url = client(true).presign(
            "GET",
            "uploads/a b",
            &[],
            &BTreeMap::new(),
            Duration::from_secs(60),
            now,
        );

        assert!(
            url.expose()
                .starts_with("https://s3.amazonaws.com/examplebucket/uploads/a%20b?")
        );
    }

    #[test]
    fn error_document_is_parsed() {
        let text = r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchUpload</Code><Message>gone</Message></Error>"#;

        assert_eq!(
            parse_error(text),
            Some(("NoSuchUpload".into(), "gone".into()))
        );
        assert_eq!(parse_error("<ListPartsResult/>"), None);
    }

    #[test]
    fn checksum_forms_convert() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

        let base64 = hex_to_base64(hex).unwrap();

        assert_eq!(base64, "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=");
        assert_eq!(base64_to_hex(&base64).unwrap(), hex);
        assert_eq!(hex_to_base64("abc"), None);
    }
}
