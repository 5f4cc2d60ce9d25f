//! Faults between `ferry` and the gateway's grant API, injected by a fault
//! proxy in front of the gateway (`FaultSandbox::start_with_grant_proxy`):
//! connection resets, bursts of 503 and 429 with `Retry-After` in seconds
//! and as an HTTP date, and a completion request that the gateway carries
//! out but whose response never arrives, so that the client times out and
//! sends another request. Each test uploads through the real
//! CLI, checks the object in the store and downloads it back.

use std::process::Output;

use ferry_tests::cli::{describe, events, run, sha256_file, write_pattern_file};
use ferry_tests::fault::{
    Action, FaultSandbox, Figures, RequestKind, Rule, SandboxSettings, print_figures,
    skip_without_credential_store,
};

const MIB: u64 = 1024 * 1024;

fn upload(env: &FaultSandbox, path: &std::path::Path) -> Output {
    run(env
        .ferry()
        .args([
            "--json",
            "upload",
            "--patient",
            "pat-001",
            "--part-size",
            "5",
            "--parallel",
            "2",
        ])
        .arg(path))
}

/// Checks the upload's result, the object in the store and a download
/// back; returns the document id.
fn check_round_trip(env: &FaultSandbox, source: &std::path::Path, upload: &Output) -> String {
    assert!(upload.status.success(), "{}", describe(upload));
    let uploaded = events(&upload.stdout, "uploaded");
    assert_eq!(uploaded.len(), 1, "{}", describe(upload));
    assert_eq!(uploaded[0]["sha256"], sha256_file(source));
    let document_id = uploaded[0]["document_id"].as_str().unwrap().to_owned();

    let size = std::fs::metadata(source).unwrap().len();
    if let Some(objects) = env.objects() {
        assert_eq!(objects.len(), 1, "one object in the store: {objects:?}");
        assert_eq!(objects[0].1, size, "the object has the file's size");
    }

    let folder = env.home.path().join("back");
    let download = run(env
        .ferry()
        .args(["--json", "download", &document_id, "--overwrite", "--to"])
        .arg(&folder));
    assert!(download.status.success(), "{}", describe(&download));
    let name = source.file_name().unwrap();
    assert_eq!(sha256_file(&folder.join(name)), sha256_file(source));
    document_id
}

fn grant_proxy(env: &FaultSandbox) -> &ferry_tests::fault::FaultProxy {
    env.grant_proxy
        .as_ref()
        .expect("started with a grant proxy")
}

/// Formats the time `seconds` from now as an HTTP date (RFC 9110
/// IMF-fixdate).
fn http_date_in(seconds: i64) -> String {
    let time = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds);
    time.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn respond(status: u16, retry_after: Option<String>) -> Action {
    Action::Respond {
        status,
        retry_after,
    }
}

#[test]
fn grant_api_resets_and_error_bursts_are_retried() {
    if skip_without_credential_store() {
        return;
    }
    let env = FaultSandbox::start_with_grant_proxy(&SandboxSettings::default());
    let proxy = grant_proxy(&env);
    let size = 12 * MIB + 3;
    let source = env.home.path().join("burst.bin");
    write_pattern_file(&source, size);

    // A reset after the head and before the body: the gateway never receives
    // a whole request, so even the non-idempotent create is safe to resend.
    proxy.add_rule(Rule {
        kind: RequestKind::GrantCreateUpload,
        skip: 0,
        times: 1,
        action: Action::ResetAfter(0),
    });
    proxy.add_rule(Rule {
        kind: RequestKind::GrantCreateUpload,
        skip: 0,
        times: 2,
        action: respond(503, Some("1".to_owned())),
    });
    proxy.add_rule(Rule {
        kind: RequestKind::GrantPartUrls,
        skip: 0,
        times: 2,
        action: respond(503, Some("1".to_owned())),
    });
    proxy.add_rule(Rule {
        kind: RequestKind::GrantPartUrls,
        skip: 0,
        times: 1,
        action: Action::ResetAfter(0),
    });
    proxy.add_rule(Rule {
        kind: RequestKind::GrantComplete,
        skip: 0,
        times: 1,
        action: respond(429, Some(http_date_in(2))),
    });
    proxy.add_rule(Rule {
        kind: RequestKind::GrantComplete,
        skip: 0,
        times: 1,
        action: respond(503, Some("1".to_owned())),
    });
    proxy.add_rule(Rule {
        kind: RequestKind::GrantDownload,
        skip: 0,
        times: 2,
        action: respond(429, Some("1".to_owned())),
    });
    proxy.add_rule(Rule {
        kind: RequestKind::GrantDownload,
        skip: 0,
        times: 1,
        action: Action::ResetAfter(0),
    });

    let output = upload(&env, &source);
    check_round_trip(&env, &source, &output);

    let seen = proxy.seen();
    let faulted = seen.iter().filter(|seen| seen.fault.is_some()).count();
    assert_eq!(faulted, 11, "every injected fault was reached: {seen:#?}");
    let parts = env.proxy.upload_parts();
    assert_eq!(parts.len(), 3, "no part was sent twice: {parts:?}");
    let creates = proxy
        .grant_requests()
        .iter()
        .filter(|(method, path)| method == "POST" && path == "/uploads")
        .count();
    assert_eq!(creates, 4, "three faulted creates and one that got through");
    print_figures(
        "grant-api-reset-503-429",
        &Figures {
            runs: faulted as u64,
            transfers: 2,
            bytes_moved: 2 * size,
            bytes_resent: env.proxy.upload_part_bytes().saturating_sub(size),
            lost: 0,
            corrupted: 0,
        },
    );
}

#[test]
fn lost_completion_response_records_the_upload_once() {
    if skip_without_credential_store() {
        return;
    }
    let env = FaultSandbox::start_with_grant_proxy(&SandboxSettings::default());
    let proxy = grant_proxy(&env);
    let size = 12 * MIB + 3;
    let source = env.home.path().join("lost.bin");
    write_pattern_file(&source, size);
    proxy.add_rule(Rule {
        kind: RequestKind::GrantComplete,
        skip: 0,
        times: 1,
        action: Action::LoseResponse,
    });

    let started = std::time::Instant::now();
    let output = upload(&env, &source);
    eprintln!("the upload took {:?}", started.elapsed());
    check_round_trip(&env, &source, &output);

    let requests = proxy.grant_requests();
    let lost = requests
        .iter()
        .position(|(method, path)| method == "POST" && path.ends_with("/complete"))
        .expect("the upload sent a completion request");
    let upload_path = requests[lost].1.trim_end_matches("/complete").to_owned();
    let after: Vec<_> = requests[lost + 1..]
        .iter()
        .filter(|(_, path)| path.starts_with(&upload_path))
        .collect();
    assert!(
        !after.is_empty(),
        "the client asked again after the lost response: {requests:?}"
    );
    // The gateway completed the upload before the response was lost, so
    // the upload's state returns the receipt and no second completion is
    // needed.
    let state = ("GET".to_owned(), upload_path.clone());
    assert_eq!(
        *after[0], state,
        "the client requested the upload's state first: {requests:?}"
    );
    let completions = requests
        .iter()
        .filter(|(method, path)| method == "POST" && path.ends_with("/complete"))
        .count();
    assert_eq!(completions, 1, "one completion request: {requests:?}");
    let parts = env.proxy.upload_parts();
    assert_eq!(parts.len(), 3, "no part was sent twice: {parts:?}");

    // The sandbox lists one DocumentReference per completed upload.
    let documents = run(env
        .ferry()
        .args(["--json", "documents", "--patient", "pat-001"]));
    assert!(documents.status.success(), "{}", describe(&documents));
    let text = String::from_utf8_lossy(&documents.stdout);
    assert_eq!(
        text.matches("lost.bin").count(),
        1,
        "one document for the upload: {text}"
    );
    print_figures(
        "grant-api-lost-completion",
        &Figures {
            runs: 1,
            transfers: 2,
            bytes_moved: 2 * size,
            bytes_resent: env.proxy.upload_part_bytes().saturating_sub(size),
            lost: 0,
            corrupted: 0,
        },
    );
}
