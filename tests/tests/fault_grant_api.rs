//! Faults between `ferry` and the gateway's grant API, injected by a fault
//! proxy in front of the gateway (`FaultSandbox::start_with_grant_proxy`):
//! connection resets, bursts of 503 and 429 with `Retry-After` in seconds
//! and as an HTTP date, and a completion request that the gateway carries
//! out but whose response never arrives, so that the client times out and
//! sends another request. Each test uploads through the real
//! CLI, checks the object in the store and downloads it back.

use ferry_tests::cli::{describe, run, write_pattern_file};
use ferry_tests::fault::{
    Action, FaultSandbox, Figures, MIB, RequestKind, Rule, SandboxSettings, check_round_trip,
    http_date_in, print_figures, skip_without_credential_store,
};

fn grant_proxy(env: &FaultSandbox) -> &ferry_tests::fault::FaultProxy {
    env.grant_proxy
        .as_ref()
        .expect("started with a grant proxy")
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

    let output = run(&mut env.upload_command(&source, 2));
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
            ..Figures::round_trip(&env, size)
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
    let output = run(&mut env.upload_command(&source, 2));
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
        &Figures::round_trip(&env, size),
    );
}
