//! Credentials that stop working in the middle of a transfer: the refresh
//! token revoked through the sandbox's revocation endpoint (RFC 7009) while
//! `ferry upload` runs, and the access token expiring while it runs.
//!
//! Revoking a refresh token revokes its whole token family, including the
//! access token the running upload holds. The upload must then stop and say
//! to sign in again. After `ferry login` and `ferry resume` it must finish
//! without sending the parts the store confirmed again. An access token
//! that expires must be refreshed without the user noticing.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_core::credentials::open_credential_store;
use ferry_core::profile::{FerryDirs, ProfileName};
use ferry_core::secrets::SecretStore as _;
use ferry_tests::cli::{describe, write_pattern_file};
use ferry_tests::fault::{
    Action, FaultSandbox, Figures, MIB, PART_MIB, RequestKind, Rule, SandboxSettings,
    check_one_object_per_upload, check_resent_part_bytes, check_uploaded, finish, long_tests,
    print_figures, skip_without_credential_store, spawn_piped,
};

const PARALLEL: u64 = 2;
/// Lifetime of the sandbox's access tokens (`ACCESS_TOKEN_LIFETIME` in the
/// gateway), which no setting shortens.
const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// Reads the profile's refresh token from the credential store, where
/// `ferry login` put it.
fn stored_refresh_token(env: &FaultSandbox) -> String {
    let dirs = FerryDirs::under(env.home.path());
    let name = ProfileName::new(&env.profile).expect("a valid profile name");
    let entry = dirs
        .credential_entry(&name, "refresh-token")
        .expect("the profile has a credential entry");
    let store = open_credential_store().expect("the credential store opens");
    let token = store
        .get(&entry)
        .expect("the credential store answers")
        .expect("ferry login stored a refresh token");
    token.expose().to_owned()
}

/// Revokes `token` at the sandbox's revocation endpoint. The form goes
/// through curl's stdin, so the token never appears on a command line.
fn revoke(env: &FaultSandbox, token: &str) {
    use std::io::Write as _;

    let mut curl = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--data-binary", "@-", "-H"])
        .arg("Content-Type: application/x-www-form-urlencoded")
        .arg(env.revocation_url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl starts");
    let form = format!("token={token}&token_type_hint=refresh_token&client_id=ferry-desktop");
    curl.stdin
        .take()
        .unwrap()
        .write_all(form.as_bytes())
        .unwrap();
    let output = curl.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "revocation failed: {}",
        describe(&output)
    );
}

/// Waits until the store confirmed `count` whole parts.
fn wait_for_stored_parts(env: &FaultSandbox, count: usize, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stored = env
            .proxy
            .upload_parts()
            .iter()
            .filter(|seen| seen.body_forwarded == seen.body_length)
            .count();
        if stored >= count {
            return;
        }
        assert!(
            child.try_wait().expect("the child's state").is_none(),
            "the upload ended before {count} parts reached the store"
        );
        assert!(
            Instant::now() < deadline,
            "{count} parts did not reach the store in 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn revoked_refresh_token_pauses_until_sign_in() {
    if skip_without_credential_store() {
        return;
    }
    let env = FaultSandbox::start(&SandboxSettings::default());
    // Parts move at 2 MiB/s per connection: 30 MiB at 2 parallel parts
    // takes about 8 s, so the revocation lands mid-upload.
    env.proxy.add_rule(Rule {
        kind: RequestKind::UploadPart,
        skip: 0,
        times: u32::MAX,
        action: Action::Throttle(2 * MIB),
    });
    let size = 30 * MIB + 7;
    let source = env.home.path().join("revoked.bin");
    write_pattern_file(&source, size);

    let mut child = spawn_piped(env.upload_command(&source, PARALLEL).arg("-vv"));
    wait_for_stored_parts(&env, 1, &mut child);
    revoke(&env, &stored_refresh_token(&env));
    let output = finish(child, Duration::from_secs(180));

    assert!(
        !output.status.success(),
        "the upload stopped: {}",
        describe(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sign in again"),
        "the message says to sign in again: {stderr}"
    );
    assert!(
        stderr.contains("ferry login"),
        "the message names the command: {stderr}"
    );
    let before_resume = env.proxy.upload_parts();
    let confirmed: Vec<u32> = before_resume
        .iter()
        .filter(|seen| seen.body_forwarded == seen.body_length)
        .filter_map(|seen| seen.part_number)
        .collect();
    let states = env.transfer_states();
    assert_eq!(states, ["paused"], "the upload waits for the user");
    eprintln!("parts stored before the revocation took effect: {confirmed:?}");

    env.sign_in();
    let resumed = env.resume();
    check_uploaded(&resumed, &source);
    check_one_object_per_upload(&env, &[size]);

    let after_resume = &env.proxy.upload_parts()[before_resume.len()..];
    let sent_again: Vec<u32> = after_resume
        .iter()
        .filter_map(|seen| seen.part_number)
        .filter(|number| confirmed.contains(number))
        .collect();
    assert!(
        sent_again.is_empty(),
        "parts the store had confirmed were sent again: {sent_again:?}"
    );
    let bound = PARALLEL * PART_MIB * MIB;
    check_resent_part_bytes(&env, size, bound, "were in flight at the revocation");
    print_figures("refresh-token-revoked", &Figures::one_upload(&env, size));
}

#[test]
fn access_token_expiring_mid_upload_is_refreshed() {
    if skip_without_credential_store() {
        return;
    }
    if !long_tests() {
        eprintln!(
            "skipped: the sandbox's access tokens live {ACCESS_TOKEN_LIFETIME:?}, so this test \
             takes about 5 minutes; FERRY_LONG_TESTS=1 runs it"
        );
        return;
    }
    let env = FaultSandbox::start(&SandboxSettings::default());
    // One part at a time, each held 20 s before it reaches the store: 15
    // parts take about 300 s, past the access token's lifetime. A part held
    // 20 s stays below the client's 30 s idle timeout.
    env.proxy.add_rule(Rule {
        kind: RequestKind::UploadPart,
        skip: 0,
        times: u32::MAX,
        action: Action::Delay(Duration::from_secs(20)),
    });
    let size = 15 * PART_MIB * MIB - 11;
    let source = env.home.path().join("long.bin");
    write_pattern_file(&source, size);

    let started = Instant::now();
    let child = spawn_piped(env.upload_command(&source, 1).arg("-vv"));
    let output = finish(child, Duration::from_secs(540));
    let elapsed = started.elapsed();
    eprintln!("the upload took {elapsed:?}");

    assert!(
        elapsed > ACCESS_TOKEN_LIFETIME,
        "the upload outlived the access token: {elapsed:?}"
    );
    check_uploaded(&output, &source);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("access token refreshed"),
        "the upload refreshed its access token: {stderr}"
    );
    check_one_object_per_upload(&env, &[size]);
    assert_eq!(env.resent_part_bytes(size), 0, "no part was sent twice");
    print_figures("access-token-expiry", &Figures::one_upload(&env, size));
}
