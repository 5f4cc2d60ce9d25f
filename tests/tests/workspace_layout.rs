//! The core engine must build without Tauri or WebKit: this test fails as
//! soon as anything pulls `tauri` into `ferry-core`'s dependency graph.

use std::process::Command;

#[test]
fn core_does_not_depend_on_tauri() {
    let root = ferry_tests::workspace_root();
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "ferry-core", "-i", "tauri", "-e", "all"])
        .current_dir(&root)
        .output()
        .expect("cargo tree runs");

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.trim().is_empty(),
        "ferry-core depends on tauri:\n{stdout}"
    );
    // `cargo tree -i` exits non-zero with this message when the package is
    // absent from the graph; any other failure means the check did not run.
    assert!(
        output.status.success() || stderr.contains("did not match any packages"),
        "cargo tree failed: {stderr}"
    );
}

#[test]
fn desktop_app_depends_on_tauri() {
    // The positive control: the same query on the app finds tauri, so an
    // empty answer for the core is meaningful.
    let root = ferry_tests::workspace_root();
    let output = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-p", "ferry-desktop", "-i", "tauri", "--depth", "0"])
        .current_dir(&root)
        .output()
        .expect("cargo tree runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("tauri v2."), "unexpected output: {stdout}");
}
