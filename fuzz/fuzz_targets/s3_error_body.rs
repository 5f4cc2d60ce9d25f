//! S3 XML error bodies as the client reads them from a store's non-2xx
//! response: any text gives a non-empty summary, and a body without a
//! `Code` element is cut to an excerpt of at most 200 characters.

#![no_main]

use ferry_core::transfer::wire::{is_expired_url_body, parse_s3_error, s3_error_summary};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    let error = parse_s3_error(&body);
    let summary = s3_error_summary(&body);
    let _ = is_expired_url_body(&body);

    if error.code.is_none() {
        assert!(summary.chars().count() <= 200, "the excerpt is longer than 200 characters");
        assert!(!summary.is_empty(), "the summary of a body without a code is empty");
    }
});
