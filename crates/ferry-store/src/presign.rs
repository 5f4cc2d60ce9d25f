//! AWS Signature Version 4 for S3 requests: presigned URLs and signed headers.
//!
//! Follows the AWS documents "Authenticating Requests: Using Query Parameters"
//! and "Authenticating Requests: Using the Authorization Header" for the `s3`
//! service. Both forms build the same canonical request:
//!
//! ```text
//! METHOD \n CanonicalURI \n CanonicalQueryString \n CanonicalHeaders \n SignedHeaders \n HashedPayload
//! ```
//!
//! S3 differs from other AWS services in two ways that matter here: the
//! canonical URI is the path exactly as sent, URI-encoded once (no
//! normalization, no double encoding), and a presigned URL signs the payload
//! as `UNSIGNED-PAYLOAD`. A presigned `UploadPart` therefore binds the part's
//! bytes only through a signed `x-amz-checksum-sha256` header, which the store
//! verifies against the body.
//!
//! The output works against AWS S3 and any SigV4 store (the embedded store,
//! s3s-fs, MinIO). Chunked (`STREAMING-*`) payload signing is not implemented.

use std::fmt;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use url::Url;

use crate::credentials::Credentials;

/// Maximum lifetime SigV4 allows for a presigned URL: 7 days.
pub const MAX_PRESIGNED_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The payload hash that a presigned URL and an unsigned body carry.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// The SHA-256 of an empty body, hex-encoded, for header-signed requests without a body.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "s3";

/// Placement of the bucket name in the URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// `http://host:port/bucket/key`, which the embedded store and s3s-fs use.
    Path,
    /// `https://bucket.host/key`, which AWS S3 prefers.
    VirtualHosted,
}

/// One S3 request to sign: the verb, the object (or bucket, with an empty key)
/// and the query parameters and headers that the signature binds.
#[derive(Clone, Copy, Debug)]
pub struct S3Request<'a> {
    /// HTTP method, such as `GET`, `PUT`, `POST` or `DELETE`.
    pub method: &'a str,
    /// Store endpoint without bucket, such as `http://127.0.0.1:9000`.
    pub endpoint: &'a Url,
    pub addressing: Addressing,
    pub bucket: &'a str,
    /// Object key, unencoded. An empty key addresses the bucket.
    pub key: &'a str,
    /// Query parameters, unencoded, such as `("partNumber", "3")` and `("uploadId", id)`.
    /// A parameter without a value (`?uploads`) is given with an empty value.
    pub query: &'a [(&'a str, &'a str)],
    /// Headers that the signature binds, such as `("x-amz-checksum-sha256", base64)`.
    /// The client must send each of them with exactly this value. `host` is always signed
    /// and must not be listed.
    pub headers: &'a [(&'a str, &'a str)],
}

/// The key and scope a signature is made with.
#[derive(Clone, Copy, Debug)]
pub struct SigningParams<'a> {
    pub credentials: &'a Credentials,
    /// Region of the credential scope, such as `us-east-1`.
    pub region: &'a str,
    /// Signing time. A presigned URL is valid from this instant for its expiry.
    pub now: SystemTime,
}

/// A presigned URL. It grants access to any holder, so `Debug` and `Display`
/// print the URL without its query string.
#[derive(Clone, PartialEq, Eq)]
pub struct PresignedUrl(String);

impl PresignedUrl {
    /// Returns the full URL, signature included, for sending to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    fn without_query(&self) -> &str {
        self.0.split('?').next().unwrap_or_default()
    }
}

impl fmt::Debug for PresignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PresignedUrl({}?[redacted])", self.without_query())
    }
}

impl fmt::Display for PresignedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}?[redacted]", self.without_query())
    }
}

/// A request signed with the `Authorization` header: the URL to call and the
/// headers to send with it. The headers contain the caller's signed headers plus
/// `x-amz-date`, `x-amz-content-sha256` and `authorization`; the HTTP client
/// sets `host` from the URL.
#[derive(Clone)]
pub struct SignedRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("SignedRequest")
            .field("url", &self.url)
            .field("headers", &names)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PresignError {
    #[error(
        "presigned URL expiry of {seconds} s is out of range; SigV4 allows 1 to 604800 seconds"
    )]
    InvalidExpiry { seconds: u64 },
    #[error("endpoint {endpoint} has no host; give a URL such as http://127.0.0.1:9000")]
    EndpointWithoutHost { endpoint: String },
    #[error("bucket name is empty; every S3 request to sign addresses a bucket")]
    EmptyBucket,
    #[error("header {name:?} cannot be signed: {reason}")]
    InvalidHeader { name: String, reason: &'static str },
    #[error("signing time is before 1970-01-01; check the system clock")]
    ClockBeforeEpoch,
}

/// Creates a presigned URL for `request` that is valid for `expires_in` from `params.now`.
///
/// The store rejects the URL with 403 after expiry, with any other method, path
/// or query, and when a signed header is missing or differs.
pub fn presign(
    request: &S3Request<'_>,
    expires_in: Duration,
    params: &SigningParams<'_>,
) -> Result<PresignedUrl, PresignError> {
    let seconds = expires_in.as_secs();
    if seconds == 0 || expires_in > MAX_PRESIGNED_EXPIRY {
        return Err(PresignError::InvalidExpiry { seconds });
    }
    let target = Target::new(request)?;
    let headers = canonical_headers(&target.host, request.headers)?;
    let time = SigningTime::new(params.now)?;
    let scope = format!("{}/{}/{SERVICE}/aws4_request", time.date, params.region);

    let mut query = encode_query(request.query);
    let credential = format!("{}/{scope}", params.credentials.access_key_id);
    for (name, value) in [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", credential.as_str()),
        ("X-Amz-Date", time.timestamp.as_str()),
        ("X-Amz-Expires", seconds.to_string().as_str()),
        ("X-Amz-SignedHeaders", headers.signed_names.as_str()),
    ] {
        query.push((uri_encode(name, true), uri_encode(value, true)));
    }
    query.sort();
    let canonical_query = join_query(&query);

    let canonical_request = format!(
        "{}\n{}\n{canonical_query}\n{}\n{}\n{UNSIGNED_PAYLOAD}",
        request.method, target.path, headers.canonical, headers.signed_names
    );
    let signature = sign(&canonical_request, &time, &scope, params);

    Ok(PresignedUrl(format!(
        "{}?{canonical_query}&X-Amz-Signature={signature}",
        target.base_url
    )))
}

/// Signs `request` with the `Authorization` header.
///
/// `payload_sha256` is the hex SHA-256 of the body, [`EMPTY_PAYLOAD_SHA256`]
/// for no body, or [`UNSIGNED_PAYLOAD`].
pub fn sign_request(
    request: &S3Request<'_>,
    payload_sha256: &str,
    params: &SigningParams<'_>,
) -> Result<SignedRequest, PresignError> {
    let target = Target::new(request)?;
    let time = SigningTime::new(params.now)?;
    let scope = format!("{}/{}/{SERVICE}/aws4_request", time.date, params.region);

    let mut all_headers: Vec<(&str, &str)> = request.headers.to_vec();
    all_headers.push(("x-amz-content-sha256", payload_sha256));
    all_headers.push(("x-amz-date", time.timestamp.as_str()));
    let headers = canonical_headers(&target.host, &all_headers)?;

    let mut query = encode_query(request.query);
    query.sort();
    let canonical_query = join_query(&query);

    let canonical_request = format!(
        "{}\n{}\n{canonical_query}\n{}\n{}\n{payload_sha256}",
        request.method, target.path, headers.canonical, headers.signed_names
    );
    let signature = sign(&canonical_request, &time, &scope, params);
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
        params.credentials.access_key_id, headers.signed_names
    );

    let mut out: Vec<(String, String)> = all_headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), (*value).to_owned()))
        .collect();
    out.push(("authorization".to_owned(), authorization));
    let url = if canonical_query.is_empty() {
        target.base_url
    } else {
        format!("{}?{canonical_query}", target.base_url)
    };
    Ok(SignedRequest { url, headers: out })
}

/// Host and encoded path of the request, and the URL without query.
struct Target {
    host: String,
    path: String,
    base_url: String,
}

impl Target {
    fn new(request: &S3Request<'_>) -> Result<Self, PresignError> {
        if request.bucket.is_empty() {
            return Err(PresignError::EmptyBucket);
        }
        let endpoint = request.endpoint;
        let Some(endpoint_host) = endpoint.host_str() else {
            return Err(PresignError::EndpointWithoutHost {
                endpoint: endpoint.to_string(),
            });
        };
        let port = endpoint
            .port()
            .map(|port| format!(":{port}"))
            .unwrap_or_default();
        let prefix = endpoint.path().trim_end_matches('/');
        let key = uri_encode(request.key, false);

        let (host, path) = match request.addressing {
            Addressing::Path => {
                let bucket = uri_encode(request.bucket, true);
                let path = if request.key.is_empty() {
                    format!("{prefix}/{bucket}")
                } else {
                    format!("{prefix}/{bucket}/{key}")
                };
                (format!("{endpoint_host}{port}"), path)
            }
            Addressing::VirtualHosted => (
                format!("{}.{endpoint_host}{port}", request.bucket),
                format!("{prefix}/{key}"),
            ),
        };
        let base_url = format!("{}://{host}{path}", endpoint.scheme());
        Ok(Self {
            host,
            path,
            base_url,
        })
    }
}

struct CanonicalHeaders {
    canonical: String,
    signed_names: String,
}

fn canonical_headers(
    host: &str,
    headers: &[(&str, &str)],
) -> Result<CanonicalHeaders, PresignError> {
    let mut entries: Vec<(String, String)> = vec![("host".to_owned(), host.to_owned())];
    for (name, value) in headers {
        let name = name.trim().to_ascii_lowercase();
        if name == "host" || name == "authorization" {
            return Err(PresignError::InvalidHeader {
                name,
                reason: "it is set by the signer",
            });
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(PresignError::InvalidHeader {
                name,
                reason: "a header name is visible ASCII without ':'",
            });
        }
        if entries.iter().any(|(existing, _)| *existing == name) {
            return Err(PresignError::InvalidHeader {
                name,
                reason: "it is listed twice",
            });
        }
        // SigV4 trims the value and collapses runs of spaces into one.
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        entries.push((name, value));
    }
    entries.sort();

    let canonical = entries
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let signed_names = entries
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    Ok(CanonicalHeaders {
        canonical,
        signed_names,
    })
}

fn encode_query(query: &[(&str, &str)]) -> Vec<(String, String)> {
    query
        .iter()
        .map(|(name, value)| (uri_encode(name, true), uri_encode(value, true)))
        .collect()
}

fn join_query(query: &[(String, String)]) -> String {
    query
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// URI-encodes as SigV4 requires: every byte except the unreserved characters
/// `A-Z a-z 0-9 - _ . ~` becomes `%XX` with upper-case hex. `/` is kept in
/// object key paths and encoded everywhere else.
pub fn uri_encode(input: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for byte in input.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (byte == b'/' && !encode_slash);
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

struct SigningTime {
    /// `YYYYMMDD`
    date: String,
    /// `YYYYMMDDTHHMMSSZ`
    timestamp: String,
}

impl SigningTime {
    fn new(now: SystemTime) -> Result<Self, PresignError> {
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| PresignError::ClockBeforeEpoch)?;
        let seconds =
            i64::try_from(since_epoch.as_secs()).map_err(|_| PresignError::ClockBeforeEpoch)?;
        let timestamp =
            jiff::Timestamp::from_second(seconds).map_err(|_| PresignError::ClockBeforeEpoch)?;
        Ok(Self {
            date: timestamp.strftime("%Y%m%d").to_string(),
            timestamp: timestamp.strftime("%Y%m%dT%H%M%SZ").to_string(),
        })
    }
}

fn sign(
    canonical_request: &str,
    time: &SigningTime,
    scope: &str,
    params: &SigningParams<'_>,
) -> String {
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{scope}\n{}",
        time.timestamp,
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let secret = format!("AWS4{}", params.credentials.secret_access_key.expose());
    let date_key = hmac_sha256(secret.as_bytes(), time.date.as_bytes());
    let region_key = hmac_sha256(&date_key, params.region.as_bytes());
    let service_key = hmac_sha256(&region_key, SERVICE.as_bytes());
    let signing_key = hmac_sha256(&service_key, b"aws4_request");
    hex::encode(hmac_sha256(&signing_key, string_to_sign.as_bytes()))
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the AWS document "Authenticating Requests: Using Query
    /// Parameters (AWS Signature Version 4)": GET /test.txt on examplebucket,
    /// 2013-05-24T00:00:00Z, 86400 s.
    #[test]
    fn presign_matches_aws_documented_example() {
        let credentials = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        let endpoint = Url::parse("https://s3.amazonaws.com").unwrap();
        let request = S3Request {
            method: "GET",
            endpoint: &endpoint,
            addressing: Addressing::VirtualHosted,
            bucket: "examplebucket",
            key: "test.txt",
            query: &[],
            headers: &[],
        };
        let params = SigningParams {
            credentials: &credentials,
            region: "us-east-1",
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600),
        };

        let url = presign(&request, Duration::from_secs(86_400), &params).unwrap();

        assert!(
            url.expose()
                .starts_with("https://examplebucket.s3.amazonaws.com/test.txt?")
        );
        assert!(url.expose().ends_with(
            "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        ));
    }

    /// The GET Object example from the AWS document "Signature Calculations for
    /// the Authorization Header": a `Range` header, empty payload.
    #[test]
    fn header_signature_matches_aws_documented_example() {
        let credentials = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        let endpoint = Url::parse("https://s3.amazonaws.com").unwrap();
        let request = S3Request {
            method: "GET",
            endpoint: &endpoint,
            addressing: Addressing::VirtualHosted,
            bucket: "examplebucket",
            key: "test.txt",
            query: &[],
            headers: &[("Range", "bytes=0-9")],
        };
        let params = SigningParams {
            credentials: &credentials,
            region: "us-east-1",
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600),
        };

        let signed = sign_request(&request, EMPTY_PAYLOAD_SHA256, &params).unwrap();

        let authorization = &signed
            .headers
            .iter()
            .find(|(name, _)| name == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn uri_encode_keeps_slash_only_in_paths() {
        assert_eq!(uri_encode("a b/c+d", false), "a%20b/c%2Bd");
        assert_eq!(uri_encode("a b/c+d", true), "a%20b%2Fc%2Bd");
    }

    #[test]
    fn expiry_beyond_seven_days_is_rejected() {
        let credentials = Credentials::new("AKID", "secret");
        let endpoint = Url::parse("http://127.0.0.1:9000").unwrap();
        let request = S3Request {
            method: "GET",
            endpoint: &endpoint,
            addressing: Addressing::Path,
            bucket: "bucket",
            key: "key",
            query: &[],
            headers: &[],
        };
        let params = SigningParams {
            credentials: &credentials,
            region: "us-east-1",
            now: SystemTime::now(),
        };

        let result = presign(
            &request,
            MAX_PRESIGNED_EXPIRY + Duration::from_secs(1),
            &params,
        );

        assert!(matches!(
            result,
            Err(PresignError::InvalidExpiry { seconds: 604_801 })
        ));
    }

    #[test]
    fn debug_output_hides_signature() {
        let url = PresignedUrl("http://127.0.0.1:9000/b/k?X-Amz-Signature=abc".to_owned());

        assert_eq!(
            format!("{url:?}"),
            "PresignedUrl(http://127.0.0.1:9000/b/k?[redacted])"
        );
    }
}
