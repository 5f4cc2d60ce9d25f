//! `Retry-After` header values (delay seconds or an HTTP date).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ferry_core::grant::parse_retry_after(text);
    }
});
