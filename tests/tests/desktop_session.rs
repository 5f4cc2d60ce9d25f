//! A stored sign-in that fails to resume when the app starts: the app
//! comes up signed out and shows the error on the Sign-in screen and on
//! the Transfers screen, with a button to the Sign-in screen.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_core::credentials::open_credential_store;
use ferry_core::profile::{FerryDirs, ProfileName};
use ferry_core::secrets::SecretStore as _;
use ferry_tests::desktop::{Driver, missing_prerequisite, redirect_following_browser};
use ferry_tests::fault::{FaultSandbox, SandboxSettings, skip_without_credential_store};

const PROFILE: &str = "fault";

fn start_driver(home: &Path) -> Driver {
    let browser = redirect_following_browser(home);
    Driver::start(&[
        ("FERRY_HOME", home.join("app").as_os_str()),
        ("BROWSER", browser.as_os_str()),
        ("RUST_LOG", std::ffi::OsStr::new("info")),
    ])
}

/// Revokes the refresh token that the app stored for the profile at the
/// sandbox's revocation endpoint (RFC 7009). The form goes through curl's
/// stdin, so the token never appears on a command line.
fn revoke_stored_refresh_token(env: &FaultSandbox) {
    let dirs = FerryDirs::under(&env.home.path().join("app"));
    let name = ProfileName::new(PROFILE).expect("a valid profile name");
    let entry = dirs.credential_entry(&name, "refresh-token").expect("the profile has a credential entry");
    let store = open_credential_store().expect("the credential store opens");
    let token = store.get(&entry).expect("the credential store responds").expect("the app stored a refresh token");

    let mut curl = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--data-binary", "@-", "-H"])
        .arg("Content-Type: application/x-www-form-urlencoded")
        .arg(env.revocation_url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl starts");
    let form = format!("token={}&token_type_hint=refresh_token&client_id=ferry-desktop", token.expose());
    curl.stdin.take().expect("curl's stdin").write_all(form.as_bytes()).expect("the form is sent");
    let output = curl.wait_with_output().expect("curl ends");
    assert!(output.status.success(), "revocation failed: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn failed_sign_in_resume_is_shown() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipped: {reason}");
        return;
    }
    if skip_without_credential_store() {
        return;
    }
    let env = FaultSandbox::start(&SandboxSettings::default());

    let driver = start_driver(env.home.path());
    let app = driver.launch();
    app.open_screen("signin");
    app.type_into("#profile-name", PROFILE);
    app.type_into("#profile-url", &env.fhir_url);
    app.click("#profile-add");
    app.wait_for(&format!("#profile-select option[value='{PROFILE}'][selected]"), Duration::from_secs(10));
    app.click("#sign-in");
    app.wait_for("#session-user", Duration::from_secs(60));
    app.close();
    drop(driver);

    revoke_stored_refresh_token(&env);

    let driver = start_driver(env.home.path());
    let app = driver.launch();
    app.open_screen("transfers");
    app.wait_for("#transfers-notice:not([hidden]) #transfers-sign-in", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut notice = app.text_of("#transfers-notice").unwrap_or_default();
    while !notice.contains("Sign in again") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        notice = app.text_of("#transfers-notice").unwrap_or_default();
    }
    assert!(notice.contains("Not signed in"), "the Transfers screen says that nobody is signed in: {notice}");
    assert!(notice.contains("Sign in again"), "the Transfers screen gives the resume error: {notice}");
    let header = app.text_of("#header-session").unwrap_or_default();
    assert_eq!(header, "Not signed in", "the header shows the signed-out state");

    app.click("#transfers-sign-in");
    app.wait_for("#screen-signin:not([hidden])", Duration::from_secs(5));
    let prompt = app.text_of("#sign-in-prompt").unwrap_or_default();
    assert!(prompt.contains("Resuming the sign-in"), "the Sign-in screen gives the resume error: {prompt}");
    app.close();
}
