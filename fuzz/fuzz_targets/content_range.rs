//! `Content-Range` values of a store's 206 response. A value that parses
//! is a valid range inside its complete length, and its printed form
//! parses back to the same range.

#![no_main]

use ferry_core::transfer::wire::parse_content_range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(range) = parse_content_range(text) {
        assert!(range.first <= range.last, "{range:?} is reversed");
        if let Some(length) = range.complete_length {
            assert!(range.last < length, "{range:?} ends past its length");
        }
        assert_eq!(parse_content_range(&range.to_string()), Ok(range));
    }
});
