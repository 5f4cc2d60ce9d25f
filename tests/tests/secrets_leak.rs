//! Runs `ferry -vv demo` (sandbox gateway, sign-in with PKCE, upload,
//! download) and searches everything it wrote for secrets: stdout and
//! stderr, the journal, the transfer log, the configuration, and the
//! gateway's log, audit trail and databases.
//!
//! The raw secrets are not known to the test, so it looks for their shapes
//! and checks candidates against what the gateway stored:
//! - signed URL query strings: `X-Amz-Signature` or `X-Amz-Credential`;
//! - access and ID tokens: JWTs whose payload has `exp` (receipts and
//!   checkpoints are JWS without `exp`, and may be stored);
//! - authorization codes and refresh tokens: 43-character base64url words
//!   whose SHA-256 the gateway's database holds;
//! - PKCE verifiers: words whose S256 challenge the database holds.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_tests::cli::{describe, ferry, run};
use sha2::{Digest as _, Sha256};

/// Files of sample or transferred content: DICOM instances, the archive
/// and the store's object data. They hold no text Ferry writes.
fn is_content(path: &Path) -> bool {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .unwrap_or_default();
    matches!(extension, "dcm" | "zip") || path.to_string_lossy().contains("/store/data/")
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, files);
        } else if !is_content(&path) {
            files.push(path);
        }
    }
}

/// Hashes the gateway keeps of what it issued.
struct Issued {
    code_sha256: HashSet<String>,
    refresh_sha256: HashSet<String>,
    challenges: HashSet<String>,
}

fn issued(database: &Path) -> Issued {
    let connection =
        rusqlite::Connection::open_with_flags(database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the gateway database");
    let column = |sql: &str| -> HashSet<String> {
        let mut statement = connection.prepare(sql).unwrap();
        statement
            .query_map([], |row| row.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    Issued {
        code_sha256: column("SELECT code_sha256 FROM authorization_codes"),
        refresh_sha256: column("SELECT token_sha256 FROM refresh_tokens"),
        challenges: column("SELECT code_challenge FROM authorization_codes"),
    }
}

fn words(text: &str, allowed: impl Fn(char) -> bool) -> impl Iterator<Item = &str> {
    text.split(move |character: char| !allowed(character))
        .filter(|word| !word.is_empty())
}

fn is_base64url(character: char) -> bool {
    character.is_ascii_alphanumeric() || character == '-' || character == '_'
}

/// Returns the secrets found in `text`, described without their values.
fn find_secrets(text: &str, issued: &Issued) -> Vec<String> {
    let mut found = Vec::new();
    let lower = text.to_ascii_lowercase();
    for marker in ["x-amz-signature", "x-amz-credential", "code_verifier="] {
        if lower.contains(marker) {
            found.push(format!("the text contains {marker}"));
        }
    }

    for word in words(text, |character| {
        is_base64url(character) || character == '.'
    }) {
        let parts: Vec<&str> = word.split('.').collect();
        if parts.len() == 3 && parts[0].starts_with("eyJ") && parts[1].starts_with("eyJ") {
            let claims = URL_SAFE_NO_PAD
                .decode(parts[1])
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
            if let Some(claims) = claims
                && claims.get("exp").is_some()
            {
                found.push(format!(
                    "a JWT with exp (sub {}, scope {})",
                    claims["sub"], claims["scope"]
                ));
            }
        }
    }

    for word in words(text, is_base64url).filter(|word| word.len() == 43) {
        let digest = hex::encode(Sha256::digest(word.as_bytes()));
        if issued.code_sha256.contains(&digest) {
            found.push("an authorization code".to_owned());
        }
        if issued.refresh_sha256.contains(&digest) {
            found.push("a refresh token".to_owned());
        }
    }

    let unreserved =
        |character: char| character.is_ascii_alphanumeric() || "-._~".contains(character);
    for word in words(text, unreserved).filter(|word| (43..=128).contains(&word.len())) {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(word.as_bytes()));
        if issued.challenges.contains(&challenge) {
            found.push("a PKCE code verifier".to_owned());
        }
    }
    found
}

/// Runs the demo in a fresh home and returns its output and folders.
fn run_demo(rust_log: Option<&str>) -> (Output, tempfile::TempDir) {
    let root = tempfile::tempdir().expect("a temporary folder");
    let mut command = ferry(&root.path().join("home"));
    command
        .args(["-vv", "demo", "--work-dir"])
        .arg(root.path().join("work"));
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    let output = run(&mut command);
    assert!(output.status.success(), "{}", describe(&output));
    (output, root)
}

fn leaks(output: &Output, root: &Path) -> Vec<String> {
    let database = root.join("work/gateway-data/ferry-gateway.sqlite3");
    let issued = issued(&database);
    assert!(
        !issued.code_sha256.is_empty(),
        "the demo issued no authorization code"
    );
    assert!(!issued.refresh_sha256.is_empty() || !issued.challenges.is_empty());

    let mut sources = vec![
        (
            "stdout".to_owned(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        ),
        (
            "stderr".to_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ),
    ];
    let mut files = Vec::new();
    collect_files(root, &mut files);
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        sources.push((
            file.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    assert!(
        sources
            .iter()
            .any(|(name, _)| name.ends_with("transfer-log.ndjson")),
        "no transfer log was written"
    );
    assert!(
        sources
            .iter()
            .any(|(name, _)| name.ends_with("journal.sqlite")),
        "no journal was written"
    );
    assert!(
        sources
            .iter()
            .any(|(name, _)| name.ends_with("audit.ndjson")),
        "no audit trail was written"
    );

    let mut leaks = Vec::new();
    for (name, text) in &sources {
        for secret in find_secrets(text, &issued) {
            leaks.push(format!("{name}: {secret}"));
        }
    }
    leaks.sort();
    leaks.dedup();
    leaks
}

#[test]
fn demo_writes_no_secrets_at_debug_level() {
    let (output, root) = run_demo(None);

    let leaks = leaks(&output, root.path());

    assert!(leaks.is_empty(), "secrets found:\n{}", leaks.join("\n"));
}

#[test]
fn demo_writes_no_secrets_with_rust_log_debug() {
    let (output, root) = run_demo(Some("debug"));

    let leaks = leaks(&output, root.path());

    assert!(leaks.is_empty(), "secrets found:\n{}", leaks.join("\n"));
}

#[test]
fn detector_finds_planted_secrets() {
    let code = URL_SAFE_NO_PAD.encode([7u8; 32]);
    let verifier = URL_SAFE_NO_PAD.encode([9u8; 40]);
    let issued = Issued {
        code_sha256: HashSet::from([hex::encode(Sha256::digest(code.as_bytes()))]),
        refresh_sha256: HashSet::new(),
        challenges: HashSet::from([URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))]),
    };
    let jwt = format!(
        "eyJhbGciOiJFUzI1NiJ9.{}.c2ln",
        URL_SAFE_NO_PAD.encode(br#"{"sub":"dr-rivera","scope":"openid","exp":1}"#)
    );
    let text = format!("GET /x?code={code}&v={verifier} token={jwt} url=/o?X-Amz-Signature=ab");

    let found = find_secrets(&text, &issued);

    assert!(
        found.iter().any(|secret| secret == "an authorization code"),
        "{found:?}"
    );
    assert!(
        found.iter().any(|secret| secret == "a PKCE code verifier"),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|secret| secret.starts_with("a JWT with exp")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|secret| secret.contains("x-amz-signature")),
        "{found:?}"
    );
    assert!(find_secrets("nothing to see", &issued).is_empty());
}
