//! The store on loopback, driven over HTTP with presigned URLs and
//! header-signed requests from `ferry_store::presign`.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use ferry_store::{
    AccessDecision, AccessHook, AccessOutcome, AccessRequest, CompletedPartRef, MIN_PART_SIZE,
};
use sha2::{Digest, Sha256};
use support::{BUCKET, md5_hex, sha256_base64, store, xml_value, xml_values};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn multipart_round_trip_with_sha256_parts() {
    let s3 = store().start().await;
    let key = "studies/ct 1/archive.zip";
    let part1 = pattern(MIN_PART_SIZE as usize, 1);
    let part2 = pattern(300_000, 2);

    let upload_id = s3.create_upload(key).await;
    let etag1 = s3.upload_part(key, &upload_id, 1, &part1).await;
    let etag2 = s3.upload_part(key, &upload_id, 2, &part2).await;
    let completed = s3
        .complete(key, &upload_id, &[(1, &etag1), (2, &etag2)])
        .await;

    assert_eq!(completed.status, 200, "{}", completed.text());
    assert_eq!(etag1, format!("\"{}\"", md5_hex(&part1)));
    let mut md5s = hex::decode(md5_hex(&part1)).unwrap();
    md5s.extend(hex::decode(md5_hex(&part2)).unwrap());
    let expected_etag = format!("\"{}-2\"", md5_hex(&md5s));
    assert_eq!(
        xml_value(&completed.text(), "ETag")
            .unwrap()
            .replace("&quot;", "\""),
        expected_etag
    );
    let mut sha256s = Sha256::digest(&part1).to_vec();
    sha256s.extend(Sha256::digest(&part2));
    let expected_composite = format!("{}-2", sha256_base64(&sha256s));
    assert_eq!(
        xml_value(&completed.text(), "ChecksumSHA256").unwrap(),
        expected_composite
    );

    let url = s3.presign("GET", key, &[], &[], Duration::from_secs(60));
    let download = s3.send_url("GET", &url, &[], Vec::new()).await;
    let mut whole = part1.clone();
    whole.extend(&part2);
    assert_eq!(download.status, 200);
    assert_eq!(download.body.len(), whole.len());
    assert!(
        download.body.as_ref() == whole.as_slice(),
        "downloaded bytes differ"
    );
    assert_eq!(download.header("etag").unwrap(), expected_etag);

    let stored = s3
        .handle
        .store()
        .read_object_sha256(BUCKET, key)
        .await
        .unwrap();
    assert_eq!(stored.as_slice(), Sha256::digest(&whole).as_slice());
    assert_eq!(
        s3.file_count(),
        2,
        "the object should keep its two part files as segments and no other file"
    );
}

#[tokio::test]
async fn completed_object_reads_back_across_part_boundaries() {
    let s3 = store().min_part_size(1).start().await;
    let key = "segments.bin";
    let parts = [pattern(1000, 1), pattern(2000, 2), pattern(1500, 3)];
    let whole = parts.concat();
    let upload_id = s3.create_upload(key).await;
    let mut etags = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        etags.push(
            s3.upload_part(key, &upload_id, index as u32 + 1, part)
                .await,
        );
    }
    let list: Vec<(u32, &str)> = (1..).zip(etags.iter().map(String::as_str)).collect();
    let completed = s3.complete(key, &upload_id, &list).await;
    assert_eq!(completed.status, 200, "{}", completed.text());
    let url = s3.presign("GET", key, &[], &[], Duration::from_secs(60));

    // Ranges that end at, start at, span and cover part boundaries (1000 and 3000).
    let ranges = [
        (0, 999),
        (999, 1000),
        (1000, 2999),
        (998, 3001),
        (0, 4499),
        (3000, 4499),
        (4499, 4499),
    ];
    for (first, last) in ranges {
        let range = format!("bytes={first}-{last}");
        let response = s3
            .send_url("GET", &url, &[("range", &range)], Vec::new())
            .await;
        assert_eq!(response.status, 206, "{range}: {}", response.text());
        assert!(
            response.body.as_ref() == &whole[first..=last],
            "{range} returned other bytes"
        );
    }
    let download = s3.send_url("GET", &url, &[], Vec::new()).await;
    assert_eq!(download.status, 200);
    assert!(
        download.body.as_ref() == whole.as_slice(),
        "whole object differs"
    );
    let info = s3.handle.store().head_object(BUCKET, key).unwrap();
    assert_eq!(
        info.sha256.map(|digest| digest.to_vec()),
        Some(Sha256::digest(&whole).to_vec())
    );
    assert_eq!(s3.file_count(), 3, "completion copied the parts");
}

#[tokio::test]
async fn interrupted_completion_recovers_after_reopening() {
    let s3 = store().min_part_size(1).start().await;
    let key = "interrupted.bin";
    let upload_id = s3.create_upload(key).await;
    let etag1 = s3.upload_part(key, &upload_id, 1, b"first part").await;
    let etag2 = s3.upload_part(key, &upload_id, 2, b"second part").await;
    let root = s3.handle.store().root().to_owned();
    // A completion stopped after marking the upload and before its commit
    // leaves exactly this row state behind.
    let db = rusqlite::Connection::open(root.join("store.sqlite3")).unwrap();
    let marked = db
        .execute(
            "UPDATE uploads SET state = 'completing' WHERE upload_id = ?1",
            [&upload_id],
        )
        .unwrap();
    assert_eq!(marked, 1);
    drop(db);
    let busy = s3
        .complete(key, &upload_id, &[(1, &etag1), (2, &etag2)])
        .await;
    assert_ne!(busy.status, 200, "a completing upload was completed twice");

    let reopened =
        ferry_store::Store::open(&root, ferry_store::StoreOptions { min_part_size: 1 }).unwrap();
    let parts = [(1, &etag1), (2, &etag2)].map(|(part_number, etag)| CompletedPartRef {
        part_number,
        etag: etag.clone(),
        checksum_sha256: None,
    });
    let done = reopened
        .complete_multipart_upload(BUCKET, key, &upload_id, &parts)
        .await
        .unwrap();
    let replayed = reopened
        .complete_multipart_upload(BUCKET, key, &upload_id, &parts)
        .await
        .unwrap();

    assert_eq!(done.size, 21);
    assert!(replayed.replayed);
    let (_, data) = reopened.open_object(BUCKET, key).unwrap();
    let mut read = Vec::new();
    for (file, length) in data.into_range(6, 10).unwrap() {
        use std::io::Read as _;
        file.take(length).read_to_end(&mut read).unwrap();
    }
    assert_eq!(read, b"partsecond");
    let download = s3
        .send_url(
            "GET",
            &s3.presign("GET", key, &[], &[], Duration::from_secs(60)),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(download.body.as_ref(), b"first partsecond part");
}

#[tokio::test]
async fn completion_records_whole_object_sha256() {
    let s3 = store().start().await;
    let key = "studies/large.zip";
    // Parts larger than one assembly buffer (4 MiB), and more parts than
    // buffers (3), so each part is copied in pieces and buffers are reused.
    let parts: Vec<Vec<u8>> = (0..6u8)
        .map(|seed| pattern(MIN_PART_SIZE as usize + usize::from(seed), seed))
        .chain([pattern(1, 99)])
        .collect();

    let upload_id = s3.create_upload(key).await;
    let mut etags = Vec::new();
    for (index, part) in parts.iter().enumerate() {
        etags.push(
            s3.upload_part(key, &upload_id, index as u32 + 1, part)
                .await,
        );
    }
    let list: Vec<(u32, &str)> = etags
        .iter()
        .enumerate()
        .map(|(index, etag)| (index as u32 + 1, etag.as_str()))
        .collect();
    let completed = s3.complete(key, &upload_id, &list).await;
    assert_eq!(completed.status, 200, "{}", completed.text());

    let whole = parts.concat();
    let expected = Sha256::digest(&whole);
    let info = s3.handle.store().head_object(BUCKET, key).unwrap();
    assert_eq!(info.size, whole.len() as u64);
    assert_eq!(
        info.sha256.map(|digest| digest.to_vec()),
        Some(expected.to_vec())
    );
    let read_back = s3
        .handle
        .store()
        .read_object_sha256(BUCKET, key)
        .await
        .unwrap();
    assert_eq!(read_back.as_slice(), expected.as_slice());
}

#[tokio::test]
async fn part_with_wrong_checksum_is_rejected() {
    let s3 = store().start().await;
    let key = "scan.dcm";
    let upload_id = s3.create_upload(key).await;
    let signed_data = b"the bytes the client hashed".to_vec();
    let sent_data = b"other bytes sent instead!!!".to_vec();
    let sha256 = sha256_base64(&signed_data);
    let url = s3.part_url(key, &upload_id, 1, &sha256);

    let response = s3
        .send_url(
            "PUT",
            &url,
            &[("x-amz-checksum-sha256", &sha256)],
            sent_data,
        )
        .await;

    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(
        xml_value(&response.text(), "Code").as_deref(),
        Some("BadDigest")
    );
    let parts = s3.list_parts(key, &upload_id, &[]).await;
    assert_eq!(parts.status, 200);
    assert!(
        xml_values(&parts.text(), "PartNumber").is_empty(),
        "{}",
        parts.text()
    );
    assert_eq!(s3.file_count(), 0, "the rejected body was kept on disk");
}

#[tokio::test]
async fn missing_signed_header_is_rejected() {
    let s3 = store().start().await;
    let key = "scan.dcm";
    let upload_id = s3.create_upload(key).await;
    let data = b"part bytes".to_vec();
    let url = s3.part_url(key, &upload_id, 1, &sha256_base64(&data));

    let response = s3.send_url("PUT", &url, &[], data).await;

    assert_eq!(response.status, 403, "{}", response.text());
}

#[tokio::test]
async fn tampered_signature_is_rejected() {
    let s3 = store().start().await;
    s3.put_object("report.pdf", b"report").await;
    let url = s3.presign("GET", "report.pdf", &[], &[], Duration::from_secs(60));
    let last = url.chars().last().unwrap();
    let tampered = format!(
        "{}{}",
        &url[..url.len() - 1],
        if last == '0' { '1' } else { '0' }
    );

    let response = s3.send_url("GET", &tampered, &[], Vec::new()).await;

    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(
        xml_value(&response.text(), "Code").as_deref(),
        Some("SignatureDoesNotMatch")
    );
}

#[tokio::test]
async fn expired_url_is_rejected() {
    let s3 = store().start().await;
    s3.put_object("report.pdf", b"report").await;
    let url = s3.presign("GET", "report.pdf", &[], &[], Duration::from_secs(1));

    tokio::time::sleep(Duration::from_secs(2)).await;
    let response = s3.send_url("GET", &url, &[], Vec::new()).await;

    assert_eq!(response.status, 403, "{}", response.text());
    assert_eq!(
        xml_value(&response.text(), "Code").as_deref(),
        Some("AccessDenied")
    );
    assert!(response.text().contains("expired"), "{}", response.text());
}

#[tokio::test]
async fn retargeted_urls_are_rejected() {
    let s3 = store().start().await;
    let key = "scan.dcm";
    s3.put_object("other.dcm", b"other").await;
    let upload_id = s3.create_upload(key).await;
    let data = b"part one".to_vec();
    let sha256 = sha256_base64(&data);
    let url = s3.part_url(key, &upload_id, 1, &sha256);
    let header = [("x-amz-checksum-sha256", sha256.as_str())];

    let other_part = url.replace("partNumber=1", "partNumber=2");
    let other_key = url.replace("/scan.dcm?", "/other.dcm?");
    let cases = [
        ("other part number", "PUT", other_part),
        ("other key", "PUT", other_key),
        ("other method", "GET", url.clone()),
    ];
    for (case, method, target) in cases {
        let response = s3.send_url(method, &target, &header, data.clone()).await;
        assert_eq!(response.status, 403, "{case}: {}", response.text());
    }
    let parts = s3.list_parts(key, &upload_id, &[]).await;
    assert!(
        xml_values(&parts.text(), "PartNumber").is_empty(),
        "{}",
        parts.text()
    );
}

#[tokio::test]
async fn list_parts_pages_past_1000_parts() {
    let s3 = store().start().await;
    let key = "many-parts.bin";
    let upload_id = s3.create_upload(key).await;

    let total = 1005u32;
    let numbers: Vec<u32> = (1..=total).collect();
    for chunk in numbers.chunks(16) {
        let uploads = chunk.iter().map(|&number| {
            let data = format!("part {number}").into_bytes();
            let s3 = &s3;
            let upload_id = &upload_id;
            async move { s3.upload_part(key, upload_id, number, &data).await }
        });
        futures::future::join_all(uploads).await;
    }

    let first = s3.list_parts(key, &upload_id, &[]).await;
    let first_numbers = xml_values(&first.text(), "PartNumber");
    assert_eq!(first.status, 200);
    assert_eq!(first_numbers.len(), 1000);
    assert_eq!(
        xml_value(&first.text(), "IsTruncated").as_deref(),
        Some("true")
    );
    assert_eq!(
        xml_value(&first.text(), "NextPartNumberMarker").as_deref(),
        Some("1000")
    );

    let second = s3
        .list_parts(
            key,
            &upload_id,
            &[("part-number-marker", "1000"), ("max-parts", "1000")],
        )
        .await;
    let second_numbers = xml_values(&second.text(), "PartNumber");
    assert_eq!(second_numbers, vec!["1001", "1002", "1003", "1004", "1005"]);
    assert_eq!(
        xml_value(&second.text(), "IsTruncated").as_deref(),
        Some("false")
    );

    let small = s3
        .list_parts(
            key,
            &upload_id,
            &[("max-parts", "7"), ("part-number-marker", "3")],
        )
        .await;
    assert_eq!(
        xml_values(&small.text(), "PartNumber"),
        vec!["4", "5", "6", "7", "8", "9", "10"]
    );
    assert_eq!(
        xml_value(&small.text(), "NextPartNumberMarker").as_deref(),
        Some("10")
    );

    let in_process = s3
        .handle
        .store()
        .list_parts(BUCKET, key, &upload_id, 1000, 1000)
        .unwrap();
    assert_eq!(in_process.parts.len(), 5);
    assert!(!in_process.is_truncated);
    assert_eq!(
        in_process.parts[0].checksum_sha256,
        sha256_base64(b"part 1001")
    );
}

#[tokio::test]
async fn ranged_get_returns_exactly_the_range() {
    let s3 = store().start().await;
    let data = pattern(3 * 1024 * 1024 + 17, 9);
    let put = s3.put_object("image.raw", &data).await;
    assert_eq!(put.status, 200, "{}", put.text());
    let url = s3.presign("GET", "image.raw", &[], &[], Duration::from_secs(60));

    let middle = s3
        .send_url(
            "GET",
            &url,
            &[("range", "bytes=1048570-2097160")],
            Vec::new(),
        )
        .await;
    let suffix = s3
        .send_url("GET", &url, &[("range", "bytes=-10")], Vec::new())
        .await;
    let beyond = s3
        .send_url("GET", &url, &[("range", "bytes=99999999-")], Vec::new())
        .await;

    assert_eq!(middle.status, 206);
    assert_eq!(
        middle.header("content-range").as_deref(),
        Some(format!("bytes 1048570-2097160/{}", data.len()).as_str())
    );
    assert!(
        middle.body.as_ref() == &data[1_048_570..=2_097_160],
        "ranged bytes differ"
    );
    assert_eq!(suffix.status, 206);
    assert!(
        suffix.body.as_ref() == &data[data.len() - 10..],
        "suffix bytes differ"
    );
    assert_eq!(beyond.status, 416, "{}", beyond.text());
}

#[tokio::test]
async fn head_reports_size_and_etag() {
    let s3 = store().start().await;
    let data = b"a small report".to_vec();
    s3.put_object("report.txt", &data).await;
    let url = s3.presign(
        "HEAD",
        "report.txt",
        &[],
        &[("x-amz-checksum-mode", "ENABLED")],
        Duration::from_secs(60),
    );

    let response = s3
        .send_url(
            "HEAD",
            &url,
            &[("x-amz-checksum-mode", "ENABLED")],
            Vec::new(),
        )
        .await;

    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length").as_deref(), Some("14"));
    assert_eq!(
        response.header("etag"),
        Some(format!("\"{}\"", md5_hex(&data)))
    );
    assert_eq!(
        response.header("x-amz-checksum-sha256"),
        Some(sha256_base64(&data))
    );
    let missing = s3.presign("HEAD", "missing.txt", &[], &[], Duration::from_secs(60));
    assert_eq!(
        s3.send_url("HEAD", &missing, &[], Vec::new()).await.status,
        404
    );
}

#[tokio::test]
async fn completion_with_wrong_etag_creates_nothing() {
    let s3 = store().start().await;
    let key = "wrong-etag.bin";
    let upload_id = s3.create_upload(key).await;
    let part1 = pattern(MIN_PART_SIZE as usize, 3);
    let etag1 = s3.upload_part(key, &upload_id, 1, &part1).await;
    let etag2 = s3.upload_part(key, &upload_id, 2, b"last").await;

    let wrong = s3
        .complete(
            key,
            &upload_id,
            &[(1, &etag1), (2, "\"00000000000000000000000000000000\"")],
        )
        .await;
    let missing = s3
        .complete(key, &upload_id, &[(1, &etag1), (3, &etag2)])
        .await;
    let unordered = s3
        .complete(key, &upload_id, &[(2, &etag2), (1, &etag1)])
        .await;

    assert_eq!(wrong.status, 400, "{}", wrong.text());
    assert_eq!(
        xml_value(&wrong.text(), "Code").as_deref(),
        Some("InvalidPart")
    );
    assert_eq!(
        xml_value(&missing.text(), "Code").as_deref(),
        Some("InvalidPart")
    );
    assert_eq!(
        xml_value(&unordered.text(), "Code").as_deref(),
        Some("InvalidPartOrder")
    );
    assert!(matches!(
        s3.handle.store().head_object(BUCKET, key),
        Err(ferry_store::StoreError::NoSuchKey { .. })
    ));
    let parts = s3.list_parts(key, &upload_id, &[]).await;
    assert_eq!(xml_values(&parts.text(), "PartNumber"), vec!["1", "2"]);
}

#[tokio::test]
async fn completion_rejects_small_parts_before_the_last() {
    let s3 = store().start().await;
    let key = "small.bin";
    let upload_id = s3.create_upload(key).await;
    let etag1 = s3.upload_part(key, &upload_id, 1, b"too small").await;
    let etag2 = s3.upload_part(key, &upload_id, 2, b"last").await;

    let response = s3
        .complete(key, &upload_id, &[(1, &etag1), (2, &etag2)])
        .await;

    assert_eq!(response.status, 400, "{}", response.text());
    assert_eq!(
        xml_value(&response.text(), "Code").as_deref(),
        Some("EntityTooSmall")
    );
}

#[tokio::test]
async fn repeated_completion_returns_the_same_result() {
    let s3 = store().min_part_size(1).start().await;
    let key = "twice.bin";
    let upload_id = s3.create_upload(key).await;
    let etag1 = s3.upload_part(key, &upload_id, 1, b"first").await;
    let etag2 = s3.upload_part(key, &upload_id, 2, b"second").await;

    let first = s3
        .complete(key, &upload_id, &[(1, &etag1), (2, &etag2)])
        .await;
    let second = s3
        .complete(key, &upload_id, &[(1, &etag1), (2, &etag2)])
        .await;
    let other_list = s3.complete(key, &upload_id, &[(1, &etag1)]).await;

    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        xml_value(&first.text(), "ETag"),
        xml_value(&second.text(), "ETag")
    );
    assert_eq!(
        xml_value(&first.text(), "ChecksumSHA256"),
        xml_value(&second.text(), "ChecksumSHA256")
    );
    assert_eq!(
        xml_value(&other_list.text(), "Code").as_deref(),
        Some("NoSuchUpload")
    );
    let info = s3.handle.store().head_object(BUCKET, key).unwrap();
    assert_eq!(info.size, 11);
    assert_eq!(info.parts_count, Some(2));
}

#[tokio::test]
async fn abort_removes_the_parts() {
    let s3 = store().start().await;
    let key = "aborted.bin";
    let upload_id = s3.create_upload(key).await;
    s3.upload_part(key, &upload_id, 1, b"one").await;
    s3.upload_part(key, &upload_id, 2, b"two").await;
    assert_eq!(s3.file_count(), 2);

    let abort = s3
        .send_signed("DELETE", key, &[("uploadId", &upload_id)], &[], Vec::new())
        .await;

    assert_eq!(abort.status, 204, "{}", abort.text());
    assert_eq!(s3.file_count(), 0);
    let parts = s3.list_parts(key, &upload_id, &[]).await;
    assert_eq!(parts.status, 404);
    assert_eq!(
        xml_value(&parts.text(), "Code").as_deref(),
        Some("NoSuchUpload")
    );
}

#[tokio::test]
async fn cleanup_aborts_only_expired_uploads() {
    let s3 = store().start().await;
    let old = s3.create_upload("old.bin").await;
    s3.upload_part("old.bin", &old, 1, b"old part").await;
    // The uploads' ages differ by 600 ms, so that the fresh one stays under
    // the 300 ms limit on a busy machine, where a request can take tens of ms.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let fresh = s3.create_upload("fresh.bin").await;

    let aborted = s3
        .handle
        .store()
        .abort_expired_uploads(Duration::from_millis(300))
        .unwrap();

    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].upload_id, old);
    assert_eq!(s3.list_parts("old.bin", &old, &[]).await.status, 404);
    assert_eq!(s3.list_parts("fresh.bin", &fresh, &[]).await.status, 200);
    assert_eq!(s3.file_count(), 0);
}

#[tokio::test]
async fn in_process_completion_checks_part_checksums() {
    let s3 = store().min_part_size(1).start().await;
    let store = s3.handle.store();
    let key = "in-process.bin";
    let upload_id = s3.create_upload(key).await;
    let etag = s3.upload_part(key, &upload_id, 1, b"payload").await;
    let mut part = CompletedPartRef {
        part_number: 1,
        etag: etag.clone(),
        checksum_sha256: Some(sha256_base64(b"something else")),
    };

    let mismatch = store
        .complete_multipart_upload(BUCKET, key, &upload_id, &[part.clone()])
        .await;
    part.checksum_sha256 = Some(sha256_base64(b"payload"));
    let done = store
        .complete_multipart_upload(BUCKET, key, &upload_id, &[part])
        .await
        .unwrap();

    assert!(matches!(
        mismatch,
        Err(ferry_store::StoreError::InvalidPart { part_number: 1, .. })
    ));
    let expected = base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(Sha256::digest(b"payload")));
    assert_eq!(done.checksum_sha256, format!("{expected}-1"));
    assert!(!done.replayed);
}

#[derive(Default)]
struct RecordingHook {
    records: Mutex<Vec<(AccessRequest, AccessOutcome)>>,
}

impl AccessHook for RecordingHook {
    fn authorize(&self, request: &AccessRequest) -> AccessDecision {
        if request
            .key
            .as_deref()
            .is_some_and(|key| key.starts_with("denied/"))
        {
            return AccessDecision::Deny {
                reason: "patient on deny list".to_owned(),
            };
        }
        AccessDecision::Allow
    }

    fn record(&self, request: &AccessRequest, outcome: &AccessOutcome) {
        self.records
            .lock()
            .unwrap()
            .push((request.clone(), outcome.clone()));
    }
}

#[tokio::test]
async fn hook_denies_and_records_requests() {
    let hook = Arc::new(RecordingHook::default());
    let s3 = store().hook(hook.clone()).start().await;
    s3.put_object("allowed.txt", b"fine").await;

    let denied = s3.put_object("denied/secret.txt", b"no").await;
    let url = s3.presign("GET", "allowed.txt", &[], &[], Duration::from_secs(60));
    let last = url.chars().last().unwrap();
    let tampered = format!(
        "{}{}",
        &url[..url.len() - 1],
        if last == 'a' { 'b' } else { 'a' }
    );
    let rejected = s3.send_url("GET", &tampered, &[], Vec::new()).await;

    assert_eq!(denied.status, 403);
    assert_eq!(rejected.status, 403);
    let records = hook.records.lock().unwrap();
    assert_eq!(records.len(), 3);
    let (put, put_outcome) = &records[0];
    assert_eq!(put.operation.as_deref(), Some("PutObject"));
    assert_eq!(
        put.access_key_id.as_deref(),
        Some(s3.handle.credentials()[0].access_key_id.as_str())
    );
    assert_eq!(put.key.as_deref(), Some("allowed.txt"));
    assert!(put.presigned);
    assert_eq!(put_outcome, &AccessOutcome::Responded { status: 200 });
    assert_eq!(
        records[1].1,
        AccessOutcome::DeniedByHook {
            reason: "patient on deny list".to_owned()
        }
    );
    let (get, get_outcome) = &records[2];
    assert_eq!(get.access_key_id, None);
    assert_eq!(get.key.as_deref(), Some("allowed.txt"));
    assert_eq!(get_outcome, &AccessOutcome::Rejected { status: 403 });
}

/// Sends a raw HTTP/1.1 request, because reqwest resolves `..` path segments
/// before sending and so cannot deliver such a key.
async fn send_raw(
    s3: &support::TestStore,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let address = s3.handle.local_addr();
    let target = url
        .split_once(&address.to_string())
        .expect("URL on the store's address")
        .1;
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nhost: {address}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn object_keys_cannot_escape_the_store() {
    let s3 = store().start().await;
    let key = "../../outside.txt";
    let data = b"inside";
    let sha256 = sha256_base64(data);
    let url = s3.presign(
        "PUT",
        key,
        &[],
        &[("x-amz-checksum-sha256", &sha256)],
        Duration::from_secs(60),
    );

    let response = send_raw(
        &s3,
        "PUT",
        &url,
        &[("x-amz-checksum-sha256", &sha256)],
        data,
    )
    .await;

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(!s3.dir.path().join("outside.txt").exists());
    let stored = s3.handle.store().head_object(BUCKET, key).unwrap();
    assert_eq!(stored.size, 6);
    let listed = s3
        .send_signed("GET", "", &[("list-type", "2")], &[], Vec::new())
        .await;
    assert_eq!(xml_values(&listed.text(), "Key"), vec![key.to_owned()]);
}
