//! The SMART configuration document (`.well-known/smart-configuration`) as
//! the client parses it: any bytes either fail to parse or give a value
//! whose checks run without panicking.

#![no_main]

use ferry_core::login::{SmartConfiguration, smart_configuration_url};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = serde_json::from_slice::<SmartConfiguration>(data) {
        let _ = config.supports_s256();
        let _ = smart_configuration_url(&config.token_endpoint);
        let _ = ferry_core::http::require_secure(&config.authorization_endpoint);
    }
});
