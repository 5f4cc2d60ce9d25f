//! Every grant API response body, parsed into the `ferry-api` type the
//! client expects; the first byte chooses the type.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, body)) = data.split_first() else {
        return;
    };
    match choice % 8 {
        0 => drop(serde_json::from_slice::<ferry_api::UploadGrant>(body)),
        1 => drop(serde_json::from_slice::<ferry_api::PartUrls>(body)),
        2 => drop(serde_json::from_slice::<ferry_api::UploadState>(body)),
        3 => drop(serde_json::from_slice::<ferry_api::CompletedUpload>(body)),
        4 => drop(serde_json::from_slice::<ferry_api::DownloadGrant>(body)),
        5 => drop(serde_json::from_slice::<ferry_api::ApiError>(body)),
        6 => drop(serde_json::from_slice::<ferry_api::Checkpoint>(body)),
        _ => {
            if let Ok(grant) = serde_json::from_slice::<ferry_api::DownloadGrant>(body) {
                // The redacted form is what reaches logs; it must never panic.
                let _ = grant.url.redacted();
                let _ = format!("{:?}", grant.url);
            }
        }
    }
});
