//! Token endpoint success bodies (RFC 6749 §5.1 with SMART's `patient` and
//! `id_token`): any bytes either fail to parse or give a response whose
//! fields and `Debug` output are produced without panicking.

#![no_main]

use ferry_core::login::parse_token_response;
use libfuzzer_sys::fuzz_target;
use oauth2::TokenResponse;

fuzz_target!(|data: &[u8]| {
    let Ok(response) = parse_token_response(data) else {
        return;
    };
    let _ = response.expires_in();
    let _ = response.scopes();
    let _ = response.refresh_token();
    let _ = response.extra_fields().patient.as_deref();
    let _ = format!("{response:?}");
});
