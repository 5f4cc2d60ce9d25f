//! The sign-in flow end to end against Ferry's sandbox SMART server,
//! started in this process on 127.0.0.1 with `--auto-login`, so the
//! authorization endpoint redirects at once without a sign-in page.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::http::{HttpOptions, build_client};
use ferry_core::login::{
    BrowserError, BrowserLauncher, LoginError, LoginOptions, LoginPrompt, ProfileContext,
    RedirectFollower, Session, SignInKind, SystemBrowser, login, logout, whoami,
};
use ferry_core::profile::{FerryDirs, Profile};
use ferry_core::secrets::{MemorySecretStore, Secret, SecretStore};
use ferry_gateway::{AutoLogin, SandboxConfig, SandboxHandle, start_sandbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

struct Fixture {
    sandbox: SandboxHandle,
    context: ProfileContext,
    store: Arc<MemorySecretStore>,
    _folder: tempfile::TempDir,
}

async fn fixture(auto_login: &str) -> Fixture {
    let folder = tempfile::tempdir().unwrap();
    let sandbox = start_sandbox(SandboxConfig {
        data_dir: folder.path().join("sandbox"),
        listen: "127.0.0.1:0".parse().unwrap(),
        auto_login: Some(auto_login.parse::<AutoLogin>().unwrap()),
    })
    .await
    .unwrap();
    let store = Arc::new(MemorySecretStore::default());
    let context = ProfileContext {
        profile: Profile::new("sandbox-test", &sandbox.urls.fhir, None).unwrap(),
        dirs: FerryDirs::under(&folder.path().join("ferry")),
        store: store.clone(),
        http: build_client(&HttpOptions::default()).unwrap(),
    };
    Fixture {
        sandbox,
        context,
        store,
        _folder: folder,
    }
}

fn options(
    kind: SignInKind,
    browser: Arc<dyn BrowserLauncher>,
) -> (LoginOptions, Arc<Mutex<Vec<LoginPrompt>>>) {
    let prompts = Arc::new(Mutex::new(Vec::new()));
    let recorded = prompts.clone();
    let options = LoginOptions {
        kind,
        browser,
        paste: None,
        timeout: Duration::from_secs(60),
        prompt: Arc::new(move |prompt| recorded.lock().unwrap().push(prompt)),
    };
    (options, prompts)
}

fn stored_refresh_token(fixture: &Fixture) -> Option<Secret> {
    fixture
        .store
        .get(&fixture.context.profile.refresh_token_entry(&fixture.context.dirs).unwrap())
        .unwrap()
}

async fn clinician_session(fixture: &Fixture) -> Session {
    let (options, _) = options(SignInKind::Clinician, Arc::new(RedirectFollower::new()));
    login(&fixture.context, options).await.unwrap()
}

/// Returns the `redirect_uri` parameter of an authorization URL.
fn redirect_uri_of(authorization_url: &Url) -> Url {
    let (_, value) = authorization_url
        .query_pairs()
        .find(|(name, _)| name == "redirect_uri")
        .expect("the authorization URL has a redirect_uri");
    Url::parse(&value).unwrap()
}

#[tokio::test]
async fn clinician_login_keeps_patient_and_user() {
    let fixture = fixture("dr-rivera:pat-001").await;
    let (options, prompts) = options(SignInKind::Clinician, Arc::new(RedirectFollower::new()));

    let session = login(&fixture.context, options).await.unwrap();

    let info = session.info();
    assert_eq!(info.patient.as_deref(), Some("pat-001"));
    let fhir_user = info.fhir_user.clone().unwrap();
    assert!(fhir_user.ends_with("Practitioner/dr-rivera"), "{fhir_user}");
    assert!(
        info.scopes.iter().any(|scope| scope == "launch/patient"),
        "{:?}",
        info.scopes
    );
    assert!(info.refresh_token_stored);
    assert!(stored_refresh_token(&fixture).is_some());
    assert!(!session.access_token().await.unwrap().expose().is_empty());
    assert!(matches!(
        prompts.lock().unwrap()[0],
        LoginPrompt::BrowserOpened { .. }
    ));
    assert_eq!(whoami(&fixture.context).unwrap(), Some(info));
}

#[tokio::test]
async fn imaging_staff_login_has_no_patient() {
    let fixture = fixture("tech-okafor").await;
    let (options, _) = options(SignInKind::ImagingStaff, Arc::new(RedirectFollower::new()));

    let session = login(&fixture.context, options).await.unwrap();

    let info = session.info();
    assert_eq!(info.patient, None);
    assert!(
        info.fhir_user
            .unwrap()
            .ends_with("Practitioner/tech-okafor")
    );
    assert!(
        info.scopes
            .iter()
            .any(|scope| scope.starts_with("user/DocumentReference")),
        "{:?}",
        info.scopes
    );
    assert!(
        !info.scopes.iter().any(|scope| scope == "launch/patient"),
        "{:?}",
        info.scopes
    );
}

/// Sends callbacks that do not belong to the sign-in to the listener, then
/// follows the real authorization URL.
struct StrayCallbacksFirst {
    statuses: Arc<Mutex<Vec<u16>>>,
}

impl BrowserLauncher for StrayCallbacksFirst {
    fn open(&self, url: &Url) -> Result<(), BrowserError> {
        let redirect_uri = redirect_uri_of(url);
        let statuses = self.statuses.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut wrong_state = redirect_uri.clone();
            wrong_state.set_query(Some("code=stolen-code&state=forged-state"));
            let mut no_state = redirect_uri.clone();
            no_state.set_query(Some("code=stolen-code"));
            let mut error_without_state = redirect_uri.clone();
            error_without_state.set_query(Some("error=access_denied"));
            for stray in [wrong_state, no_state, error_without_state] {
                let status = client.get(stray).send().await.unwrap().status().as_u16();
                statuses.lock().unwrap().push(status);
            }
            RedirectFollower::new().open(&url).unwrap();
        });
        Ok(())
    }
}

#[tokio::test]
async fn stray_callbacks_are_ignored() {
    let fixture = fixture("dr-rivera:pat-001").await;
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let browser = StrayCallbacksFirst {
        statuses: statuses.clone(),
    };
    let (options, prompts) = options(SignInKind::Clinician, Arc::new(browser));

    let session = login(&fixture.context, options).await.unwrap();

    assert_eq!(session.info().patient.as_deref(), Some("pat-001"));
    assert_eq!(*statuses.lock().unwrap(), [400, 400, 400]);
    let ignored = prompts
        .lock()
        .unwrap()
        .iter()
        .filter(|prompt| matches!(prompt, LoginPrompt::ResponseIgnored { .. }))
        .count();
    assert_eq!(ignored, 3);
}

/// Follows the authorization URL by hand and delivers the redirect with
/// `iss` replaced, as a mix-up attacker would (RFC 9207).
struct ForgedIssuer;

impl BrowserLauncher for ForgedIssuer {
    fn open(&self, url: &Url) -> Result<(), BrowserError> {
        let url = url.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let response = client.get(url).send().await.unwrap();
            let location = response.headers()[reqwest::header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned();
            let mut callback = Url::parse(&location).unwrap();
            let pairs: Vec<(String, String)> = callback
                .query_pairs()
                .into_owned()
                .map(|(name, value)| {
                    let value = if name == "iss" {
                        "http://attacker.example".to_owned()
                    } else {
                        value
                    };
                    (name, value)
                })
                .collect();
            callback.query_pairs_mut().clear().extend_pairs(pairs);
            let _ = client.get(callback).send().await;
        });
        Ok(())
    }
}

#[tokio::test]
async fn issuer_mismatch_is_rejected() {
    let fixture = fixture("dr-rivera:pat-001").await;
    let (options, _) = options(SignInKind::Clinician, Arc::new(ForgedIssuer));

    let error = login(&fixture.context, options).await.unwrap_err();

    let LoginError::IssuerMismatch { expected, received } = &error else {
        panic!("expected IssuerMismatch, got {error}");
    };
    assert_eq!(expected, &fixture.sandbox.urls.issuer);
    assert_eq!(received, "http://attacker.example");
    assert!(stored_refresh_token(&fixture).is_none());
}

#[tokio::test]
async fn refresh_uses_token_rotated_by_other_process() {
    let fixture = fixture("dr-rivera:pat-001").await;
    let first = clinician_session(&fixture).await;
    let token_at_login = stored_refresh_token(&fixture).unwrap();

    // Another process (the desktop app) resumes the sign-in, which rotates
    // the refresh token. The sandbox revokes the whole token family if a
    // rotated token is used again, so the first session must re-read it.
    let second = Session::resume(&fixture.context).await.unwrap();
    let token_after_resume = stored_refresh_token(&fixture).unwrap();
    first.refresh().await.unwrap();
    second.refresh().await.unwrap();

    assert_ne!(token_at_login, token_after_resume);
    assert_ne!(stored_refresh_token(&fixture).unwrap(), token_after_resume);
    assert_eq!(second.info().patient.as_deref(), Some("pat-001"));
}

#[tokio::test]
async fn access_token_refreshes_within_margin() {
    let fixture = fixture("dr-rivera:pat-001").await;
    let session = clinician_session(&fixture).await;
    let before = session.access_token().await.unwrap();
    assert_eq!(
        session.access_token().await.unwrap(),
        before,
        "a fresh token was refreshed"
    );

    // A margin longer than any token lifetime makes the token count as
    // about to expire.
    session.set_refresh_margin(Duration::from_secs(365 * 24 * 3600));
    let after = session.access_token().await.unwrap();

    assert_ne!(after, before);
}

#[tokio::test]
async fn rejected_refresh_token_requires_sign_in() {
    let fixture = fixture("dr-rivera:pat-001").await;
    let session = clinician_session(&fixture).await;
    let entry = fixture.context.profile.refresh_token_entry(&fixture.context.dirs).unwrap();
    fixture
        .store
        .set(&entry, &Secret::new("not-a-valid-refresh-token"))
        .unwrap();

    let first = session.refresh().await.unwrap_err();
    let second = session.refresh().await.unwrap_err();

    assert!(matches!(first, LoginError::SignInAgain { .. }), "{first}");
    assert!(
        first
            .to_string()
            .contains("ferry login --profile sandbox-test"),
        "{first}"
    );
    assert!(matches!(second, LoginError::SignInAgain { .. }), "{second}");
    assert_eq!(fixture.store.get(&entry).unwrap(), None);
    assert_eq!(whoami(&fixture.context).unwrap(), None);
    let resumed = Session::resume(&fixture.context).await.unwrap_err();
    assert!(
        matches!(resumed, LoginError::NotSignedIn { .. }),
        "{resumed}"
    );
}

#[tokio::test]
async fn logout_revokes_refresh_token() {
    let fixture = fixture("dr-rivera:pat-001").await;
    let _session = clinician_session(&fixture).await;
    let refresh_token = stored_refresh_token(&fixture).unwrap();

    let report = logout(&fixture.context).await.unwrap();

    assert!(report.revoked, "{report:?}");
    assert!(report.had_refresh_token);
    assert_eq!(stored_refresh_token(&fixture), None);
    assert_eq!(whoami(&fixture.context).unwrap(), None);

    // The revoked token no longer works at the server, even when put back.
    let (options, _) = options(SignInKind::Clinician, Arc::new(RedirectFollower::new()));
    let session = login(&fixture.context, options).await.unwrap();
    fixture
        .store
        .set(
            &fixture.context.profile.refresh_token_entry(&fixture.context.dirs).unwrap(),
            &refresh_token,
        )
        .unwrap();
    let error = session.refresh().await.unwrap_err();
    assert!(matches!(error, LoginError::SignInAgain { .. }), "{error}");
}

#[tokio::test]
async fn logout_without_sign_in_succeeds() {
    let fixture = fixture("dr-rivera:pat-001").await;

    let report = logout(&fixture.context).await.unwrap();

    assert!(!report.had_refresh_token);
    assert!(!report.revoked);
}

/// Serves a SMART configuration that offers only the `plain` PKCE method.
async fn start_server_without_s256() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let body = serde_json::json!({
        "issuer": format!("http://{address}"),
        "authorization_endpoint": format!("http://{address}/authorize"),
        "token_endpoint": format!("http://{address}/token"),
        "code_challenge_methods_supported": ["plain"],
    })
    .to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = vec![0u8; 4096];
            let _ = stream.read(&mut buffer).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    address
}

#[tokio::test]
async fn server_without_s256_is_rejected() {
    let address = start_server_without_s256().await;
    let folder = tempfile::tempdir().unwrap();
    let context = ProfileContext {
        profile: Profile::new("plain-only", &format!("http://{address}/fhir"), None).unwrap(),
        dirs: FerryDirs::under(folder.path()),
        store: Arc::new(MemorySecretStore::default()),
        http: build_client(&HttpOptions::default()).unwrap(),
    };
    let (options, prompts) = options(SignInKind::Clinician, Arc::new(RedirectFollower::new()));

    let error = login(&context, options).await.unwrap_err();

    assert!(matches!(error, LoginError::NoS256 { .. }), "{error}");
    assert!(
        error.to_string().contains("does not offer PKCE with S256"),
        "{error}"
    );
    assert!(prompts.lock().unwrap().is_empty(), "a browser was opened");
}

/// Runs in a child process with `BROWSER` set by
/// [`browser_variable_program_completes_login`]; skipped in a normal run.
#[tokio::test]
async fn child_logs_in_with_system_browser() {
    if std::env::var_os("FERRY_TEST_BROWSER_CHILD").is_none() {
        return;
    }
    let fixture = fixture("dr-rivera:pat-002").await;
    let (options, _) = options(SignInKind::Clinician, Arc::new(SystemBrowser));

    let session = login(&fixture.context, options).await.unwrap();

    assert_eq!(session.info().patient.as_deref(), Some("pat-002"));
}

#[tokio::test]
async fn browser_variable_program_completes_login() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let folder = tempfile::tempdir().unwrap();
    let script = folder.path().join("follow-redirects");
    std::fs::write(
        &script,
        "#!/bin/sh\n# A browser stand-in: follows the redirects to the loopback listener.\n\
         exec curl --silent --show-error --noproxy '*' --location --max-redirs 10 --output /dev/null \"$1\"\n",
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&script).unwrap().permissions(),
        0o755,
    );
    Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();

    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child_logs_in_with_system_browser",
            "--exact",
            "--nocapture",
        ])
        .env("FERRY_TEST_BROWSER_CHILD", "1")
        .env("BROWSER", &script);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "child did not run:\n{stdout}");
}
