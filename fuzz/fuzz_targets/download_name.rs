//! File names sent by the server for a download: whatever the name, the
//! safe name is one plain path component that stays inside the folder.

#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;

const WINDOWS_RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let safe = ferry_core::transfer::safe_file_name(name);

    assert!(!safe.is_empty(), "{name:?} gave an empty name");
    assert!(safe.len() <= 255, "{name:?} gave {} bytes", safe.len());
    assert!(!safe.contains(['/', '\\', ':', '\0']), "{name:?} gave {safe:?}");
    assert!(!safe.chars().any(char::is_control), "{name:?} gave {safe:?}");
    assert!(!safe.starts_with('.'), "{name:?} gave the hidden name {safe:?}");
    assert!(!safe.ends_with(['.', ' ']), "{name:?} gave {safe:?}");
    let stem = safe.split('.').next().unwrap_or_default().trim_end();
    assert!(
        !WINDOWS_RESERVED.iter().any(|device| device.eq_ignore_ascii_case(stem)),
        "{name:?} gave the device name {safe:?}"
    );
    let components: Vec<Component<'_>> = Path::new(&safe).components().collect();
    assert!(
        matches!(components.as_slice(), [Component::Normal(_)]),
        "{name:?} gave {safe:?}, which is not one plain component"
    );
});
