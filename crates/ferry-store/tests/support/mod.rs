//! A store on loopback and a reqwest client that signs requests with
//! `ferry_store::presign`, shared by the integration tests.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ferry_store::presign::{self, Addressing, EMPTY_PAYLOAD_SHA256, S3Request, SigningParams};
use ferry_store::{AccessHook, StoreConfig, StoreHandle, StoreOptions};
use sha2::{Digest, Sha256};

pub const BUCKET: &str = "ferry";

pub struct TestStore {
    pub handle: StoreHandle,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

pub struct Builder {
    options: StoreOptions,
    hook: Option<Arc<dyn AccessHook>>,
}

impl Builder {
    pub fn min_part_size(mut self, bytes: u64) -> Self {
        self.options.min_part_size = bytes;
        self
    }

    pub fn hook(mut self, hook: Arc<dyn AccessHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    pub async fn start(self) -> TestStore {
        let dir = tempfile::tempdir().expect("create a temporary folder for the store");
        let mut config = StoreConfig::new(dir.path().join("store"));
        config.buckets.push(BUCKET.to_owned());
        config.options = self.options;
        if let Some(hook) = self.hook {
            config.hook = hook;
        }
        let handle = ferry_store::serve(config).await.expect("start the store");
        TestStore {
            handle,
            client: reqwest::Client::new(),
            dir,
        }
    }
}

pub fn store() -> Builder {
    Builder {
        options: StoreOptions::default(),
        hook: None,
    }
}

pub fn sha256_base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
}

pub fn md5_hex(data: &[u8]) -> String {
    use s3s::crypto::Checksum as _;
    hex::encode(s3s::crypto::Md5::checksum(data))
}

/// Returns the text of every `<tag>` element in an XML body, in order.
pub fn xml_values(body: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut values = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        values.push(after[..end].to_owned());
        rest = &after[end + close.len()..];
    }
    values
}

pub fn xml_value(body: &str, tag: &str) -> Option<String> {
    xml_values(body, tag).into_iter().next()
}

pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

impl TestStore {
    fn params(&self) -> SigningParams<'_> {
        SigningParams {
            credentials: &self.handle.credentials()[0],
            region: self.handle.region(),
            now: SystemTime::now(),
        }
    }

    /// Presigns `method` on `key` in the test bucket.
    pub fn presign(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        expires_in: Duration,
    ) -> String {
        let request = S3Request {
            method,
            endpoint: self.handle.endpoint(),
            addressing: Addressing::Path,
            bucket: BUCKET,
            key,
            query,
            headers,
        };
        presign::presign(&request, expires_in, &self.params())
            .expect("presign a request")
            .into_string()
    }

    /// Presigns an `UploadPart` that binds the part's SHA-256.
    pub fn part_url(&self, key: &str, upload_id: &str, part_number: u32, sha256: &str) -> String {
        let part = part_number.to_string();
        self.presign(
            "PUT",
            key,
            &[("partNumber", &part), ("uploadId", upload_id)],
            &[("x-amz-checksum-sha256", sha256)],
            Duration::from_secs(900),
        )
    }

    /// Sends a request presigned by [`TestStore::presign`] with the given headers and body.
    pub async fn send_url(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, url).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("send a request to the store");
        Response {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("read the response body"),
        }
    }

    /// Sends a request signed with the `Authorization` header.
    pub async fn send_signed(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Response {
        let payload = if body.is_empty() {
            EMPTY_PAYLOAD_SHA256.to_owned()
        } else {
            hex::encode(Sha256::digest(&body))
        };
        let request = S3Request {
            method,
            endpoint: self.handle.endpoint(),
            addressing: Addressing::Path,
            bucket: BUCKET,
            key,
            query,
            headers,
        };
        let signed =
            presign::sign_request(&request, &payload, &self.params()).expect("sign a request");
        let headers: Vec<(&str, &str)> = signed
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        self.send_url(method, &signed.url, &headers, body).await
    }

    pub async fn create_upload(&self, key: &str) -> String {
        let response = self
            .send_signed(
                "POST",
                key,
                &[("uploads", "")],
                &[("x-amz-checksum-algorithm", "SHA256")],
                Vec::new(),
            )
            .await;
        assert_eq!(
            response.status,
            200,
            "CreateMultipartUpload: {}",
            response.text()
        );
        xml_value(&response.text(), "UploadId").expect("UploadId in the response")
    }

    /// Uploads a part through a presigned URL and returns its ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: &[u8],
    ) -> String {
        let sha256 = sha256_base64(data);
        let url = self.part_url(key, upload_id, part_number, &sha256);
        let response = self
            .send_url(
                "PUT",
                &url,
                &[("x-amz-checksum-sha256", &sha256)],
                data.to_vec(),
            )
            .await;
        assert_eq!(
            response.status,
            200,
            "UploadPart {part_number}: {}",
            response.text()
        );
        response.header("etag").expect("ETag header")
    }

    pub async fn list_parts(&self, key: &str, upload_id: &str, query: &[(&str, &str)]) -> Response {
        let mut full = vec![("uploadId", upload_id)];
        full.extend_from_slice(query);
        self.send_signed("GET", key, &full, &[], Vec::new()).await
    }

    pub async fn complete(&self, key: &str, upload_id: &str, parts: &[(u32, &str)]) -> Response {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (number, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{etag}</ETag></Part>"
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        self.send_signed(
            "POST",
            key,
            &[("uploadId", upload_id)],
            &[],
            xml.into_bytes(),
        )
        .await
    }

    pub async fn put_object(&self, key: &str, data: &[u8]) -> Response {
        let sha256 = sha256_base64(data);
        let url = self.presign(
            "PUT",
            key,
            &[],
            &[("x-amz-checksum-sha256", &sha256)],
            Duration::from_secs(60),
        );
        self.send_url(
            "PUT",
            &url,
            &[("x-amz-checksum-sha256", &sha256)],
            data.to_vec(),
        )
        .await
    }

    /// Counts files in the store's data and temporary folders.
    pub fn file_count(&self) -> usize {
        let root = self.handle.store().root();
        ["data", "tmp"]
            .iter()
            .map(|folder| {
                std::fs::read_dir(root.join(folder))
                    .map(|dir| dir.count())
                    .unwrap_or(0)
            })
            .sum()
    }
}
