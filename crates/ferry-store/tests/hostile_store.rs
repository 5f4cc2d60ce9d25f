//! Tampered presigned URLs, malformed ranges and misdirected parts against
//! the embedded store: each is rejected with a 4xx and changes nothing.

mod support;

use std::time::Duration;

use support::{BUCKET, sha256_base64, store, xml_value, xml_values};

/// Replaces the value of query parameter `name` in a URL.
fn with_query_value(url: &str, name: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key == name => format!("{key}={value}"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

fn without_query(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let pairs: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(name))
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

#[tokio::test]
async fn every_tampered_query_parameter_is_rejected() {
    let s3 = store().start().await;
    let key = "scan.dcm";
    let upload_id = s3.create_upload(key).await;
    let data = b"part bytes".to_vec();
    let sha256 = sha256_base64(&data);
    let url = s3.part_url(key, &upload_id, 1, &sha256);
    let header = [("x-amz-checksum-sha256", sha256.as_str())];
    let other_credential = url
        .split("X-Amz-Credential=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .replacen("20", "19", 1);
    let cases = [
        with_query_value(&url, "X-Amz-Algorithm", "AWS4-HMAC-SHA1"),
        with_query_value(&url, "X-Amz-Credential", &other_credential),
        with_query_value(&url, "X-Amz-Date", "20200101T000000Z"),
        with_query_value(&url, "X-Amz-Date", "garbage"),
        with_query_value(&url, "X-Amz-Expires", "604800"),
        with_query_value(&url, "X-Amz-Expires", "999999999999"),
        with_query_value(&url, "X-Amz-Expires", "-1"),
        with_query_value(&url, "X-Amz-SignedHeaders", "host"),
        with_query_value(&url, "X-Amz-Signature", &"0".repeat(64)),
        with_query_value(&url, "X-Amz-Signature", ""),
        with_query_value(&url, "partNumber", "2"),
        with_query_value(&url, "partNumber", "0"),
        with_query_value(&url, "partNumber", "10001"),
        with_query_value(&url, "uploadId", "other"),
        without_query(&url, "X-Amz-Signature"),
        without_query(&url, "X-Amz-Expires"),
        without_query(&url, "X-Amz-SignedHeaders"),
        without_query(&url, "uploadId"),
        format!("{url}&x-id=PutObject"),
        format!("{url}&X-Amz-Signature={}", "0".repeat(64)),
    ];

    for target in &cases {
        let response = s3.send_url("PUT", target, &header, data.clone()).await;

        // NOTE: s3s 0.14.1 answers an unknown X-Amz-Algorithm with
        // 501 NotImplemented rather than a 4xx; nothing is stored either way.
        let unknown_algorithm = target.contains("AWS4-HMAC-SHA1") && response.status == 501;
        assert!(
            (400..500).contains(&response.status) || unknown_algorithm,
            "{}: {} {}",
            target.split_once('?').unwrap().1,
            response.status,
            response.text()
        );
        assert!(
            xml_value(&response.text(), "Code").is_some(),
            "{}",
            response.text()
        );
    }
    let parts = s3.list_parts(key, &upload_id, &[]).await;
    assert!(
        xml_values(&parts.text(), "PartNumber").is_empty(),
        "{}",
        parts.text()
    );
}

#[tokio::test]
async fn added_or_changed_signed_headers_are_rejected() {
    let s3 = store().start().await;
    let key = "scan.dcm";
    let upload_id = s3.create_upload(key).await;
    let data = b"part bytes".to_vec();
    let sha256 = sha256_base64(&data);
    let url = s3.part_url(key, &upload_id, 1, &sha256);
    let other = sha256_base64(b"other bytes");

    let cases: [Vec<(&str, &str)>; 3] = [
        vec![("x-amz-checksum-sha256", other.as_str())],
        vec![],
        vec![("x-amz-checksum-crc32", "AAAAAA==")],
    ];
    for headers in &cases {
        let response = s3.send_url("PUT", &url, headers, data.clone()).await;

        assert!(
            (400..500).contains(&response.status),
            "{headers:?}: {} {}",
            response.status,
            response.text()
        );
    }
    let parts = s3.list_parts(key, &upload_id, &[]).await;
    assert!(xml_values(&parts.text(), "PartNumber").is_empty());
}

#[tokio::test]
async fn malformed_ranges_never_return_wrong_bytes() {
    let s3 = store().start().await;
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    s3.put_object("report.pdf", &data).await;
    let url = s3.presign("GET", "report.pdf", &[], &[], Duration::from_secs(60));
    let cases = [
        "bytes=5-2",
        "bytes=abc",
        "bytes=-",
        "bytes=1000-",
        "bytes=99999999999999999999-",
        "bytes=0-1,3-4",
        "items=0-1",
        "bytes=--1",
        "bytes= 0-1",
        "bytes=0-18446744073709551615",
    ];

    for range in cases {
        let response = s3
            .send_url("GET", &url, &[("range", range)], Vec::new())
            .await;

        match response.status {
            // Ignoring an unusable Range is allowed (RFC 9110 §14.2).
            200 => assert_eq!(response.body.as_ref(), data.as_slice(), "{range}"),
            206 => {
                let content_range = response.header("content-range").unwrap_or_default();
                let (start, end) = content_range
                    .strip_prefix("bytes ")
                    .and_then(|rest| rest.split_once('/'))
                    .and_then(|(span, _)| span.split_once('-'))
                    .map(|(start, end)| {
                        (
                            start.parse::<usize>().unwrap(),
                            end.parse::<usize>().unwrap(),
                        )
                    })
                    .unwrap_or_else(|| panic!("{range}: Content-Range {content_range:?}"));
                assert_eq!(response.body.as_ref(), &data[start..=end], "{range}");
            }
            status => assert!(
                (400..500).contains(&status),
                "{range}: {status} {}",
                response.text()
            ),
        }
    }
}

#[tokio::test]
async fn part_for_another_upload_is_rejected() {
    let s3 = store().start().await;
    let first = s3.create_upload("first.dcm").await;
    let second = s3.create_upload("second.dcm").await;
    let data = b"part bytes".to_vec();
    let sha256 = sha256_base64(&data);
    let header = [("x-amz-checksum-sha256", sha256.as_str())];

    // A validly signed URL that names the first upload's id with the second key.
    let crossed = s3.part_url("second.dcm", &first, 1, &sha256);
    let response = s3.send_url("PUT", &crossed, &header, data.clone()).await;

    assert_eq!(response.status, 404, "{}", response.text());
    assert_eq!(
        xml_value(&response.text(), "Code").as_deref(),
        Some("NoSuchUpload")
    );
    for (key, upload_id) in [("first.dcm", &first), ("second.dcm", &second)] {
        let parts = s3.list_parts(key, upload_id, &[]).await;
        assert!(
            xml_values(&parts.text(), "PartNumber").is_empty(),
            "{}",
            parts.text()
        );
    }
}

#[tokio::test]
async fn in_progress_upload_is_not_readable() {
    let s3 = store().start().await;
    let key = "scan.dcm";
    let upload_id = s3.create_upload(key).await;
    let data = vec![7u8; 64];
    s3.upload_part(key, &upload_id, 1, &data).await;
    let part_url = s3.part_url(key, &upload_id, 1, &sha256_base64(&data));
    let get = s3.presign("GET", key, &[], &[], Duration::from_secs(60));
    let head = s3.presign("HEAD", key, &[], &[], Duration::from_secs(60));

    let with_part_url = s3.send_url("GET", &part_url, &[], Vec::new()).await;
    let object = s3.send_url("GET", &get, &[], Vec::new()).await;
    let metadata = s3.send_url("HEAD", &head, &[], Vec::new()).await;

    assert_eq!(with_part_url.status, 403, "{}", with_part_url.text());
    assert_eq!(object.status, 404, "{}", object.text());
    assert_eq!(metadata.status, 404);
    assert!(
        !with_part_url.body.as_ref().starts_with(&data[..8]),
        "a part of an open upload was served"
    );
    assert!(s3.handle.store().head_object(BUCKET, key).is_err());
}
