//! Authorization responses: the redirect URL that reaches the loopback
//! listener or is pasted by the user. Only the response carrying the
//! expected `state` may yield a code.

#![no_main]

use ferry_core::login::{CallbackCheck, CallbackOutcome, check_pasted_url};
use libfuzzer_sys::fuzz_target;

const STATE: &str = "fuzz-state-0123456789";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let check = CallbackCheck {
        state: STATE.to_owned(),
        issuer: Some("https://issuer.example".to_owned()),
        require_iss: true,
    };
    if let CallbackOutcome::Code(_) = check_pasted_url(text, &check) {
        let url = url::Url::parse(text.trim()).expect("a URL that yielded a code parses");
        let states: Vec<_> = url.query_pairs().filter(|(name, _)| name == "state").collect();
        assert_eq!(states.len(), 1, "a code came with {} states", states.len());
        assert_eq!(states[0].1, STATE, "a code came with another state");
    }
});
