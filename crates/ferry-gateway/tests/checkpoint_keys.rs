//! Checkpoints of one transfer log must keep its device key, and one key
//! per epoch, over real HTTP against the sandbox.

mod grant_support;

use grant_support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const LOG_ID: &str = "5f0c7a52-9d3e-4c1b-8a61-0b1e2f3a4b5c";
const DEVICE_KEY: &str = "11aa";
const OTHER_DEVICE_KEY: &str = "22bb";

fn checkpoint(log_id: &str, seq: u64, epoch: u64, epoch_key: &str, device_key: &str) -> Value {
    json!({
        "device_id": "dev-2b7f",
        "log_id": log_id,
        "seq": seq,
        "head_sha256": sha256_hex(&seq.to_be_bytes()),
        "epoch": epoch,
        "epoch_public_key": epoch_key,
        "device_public_key": device_key,
    })
}

async fn signed_in() -> (GrantSandbox, String) {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(STAFF, STAFF_SCOPE).await;
    let (status, body) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(LOG_ID, 4, 0, DEVICE_KEY, DEVICE_KEY),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (sandbox, token)
}

#[tokio::test]
async fn changed_device_key_is_rejected_naming_log() {
    let (sandbox, token) = signed_in().await;

    let (status, body) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(LOG_ID, 9, 1, "33cc", OTHER_DEVICE_KEY),
        )
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "device_public_key");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(LOG_ID), "{message}");
    assert!(message.contains("device key 11aa, not 22bb"), "{message}");
    let (_, list) = sandbox.get(&token, "/checkpoints?device_id=dev-2b7f").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn new_epoch_key_is_accepted() {
    let (sandbox, token) = signed_in().await;

    let (status, body) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(LOG_ID, 9, 1, "33cc", DEVICE_KEY),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checkpoint"]["epoch"], 1);
}

#[tokio::test]
async fn other_key_in_same_epoch_is_rejected() {
    let (sandbox, token) = signed_in().await;

    let (status, body) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(LOG_ID, 9, 0, "33cc", DEVICE_KEY),
        )
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "epoch_public_key");
    assert!(body["message"].as_str().unwrap().contains(LOG_ID), "{body}");
}

#[tokio::test]
async fn epoch_going_back_is_rejected() {
    let (sandbox, token) = signed_in().await;
    let (status, _) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(LOG_ID, 9, 2, "33cc", DEVICE_KEY),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(LOG_ID, 12, 1, "44dd", DEVICE_KEY),
        )
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "epoch");
}

#[tokio::test]
async fn new_log_may_have_another_device_key() {
    let (sandbox, token) = signed_in().await;
    let other_log = "0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a";

    let (status, body) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(other_log, 1, 0, OTHER_DEVICE_KEY, OTHER_DEVICE_KEY),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn checkpoint_without_device_key_is_rejected() {
    let (sandbox, token) = signed_in().await;
    let mut keyless = checkpoint(LOG_ID, 9, 0, DEVICE_KEY, DEVICE_KEY);
    keyless.as_object_mut().unwrap().remove("device_public_key");

    let (status, body) = sandbox.post(&token, "/checkpoints", &keyless).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "device_public_key");
}

#[tokio::test]
async fn device_key_stays_pinned_after_keyless_checkpoint() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(STAFF, STAFF_SCOPE).await;
    let first = checkpoint(LOG_ID, 4, 0, DEVICE_KEY, DEVICE_KEY);
    let mut keyless = checkpoint(LOG_ID, 5, 0, DEVICE_KEY, DEVICE_KEY);
    keyless.as_object_mut().unwrap().remove("device_public_key");
    let mut older_keyless = checkpoint(LOG_ID, 2, 0, DEVICE_KEY, DEVICE_KEY);
    older_keyless
        .as_object_mut()
        .unwrap()
        .remove("device_public_key");
    // A keyless row stored before the key was pinned, then the pinned key.
    let (status, _) = sandbox.post(&token, "/checkpoints", &older_keyless).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = sandbox.post(&token, "/checkpoints", &first).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = sandbox.post(&token, "/checkpoints", &keyless).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, body) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(LOG_ID, 6, 0, DEVICE_KEY, OTHER_DEVICE_KEY),
        )
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "device_public_key");
    let (status, body) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(LOG_ID, 7, 0, DEVICE_KEY, DEVICE_KEY),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn lower_seq_is_rejected_as_rollback() {
    let (sandbox, token) = signed_in().await;
    let (status, _) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(LOG_ID, 100, 2, "33cc", DEVICE_KEY),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    for (seq, epoch, epoch_key) in [(50, 1, "44dd"), (60, 9, "55ee"), (60, 2, "33cc")] {
        let (status, body) = sandbox
            .post(
                &token,
                "/checkpoints",
                &checkpoint(LOG_ID, seq, epoch, epoch_key, DEVICE_KEY),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "seq {seq}: {body}");
        assert_eq!(body["field"], "seq", "seq {seq}: {body}");
    }
}

#[tokio::test]
async fn earlier_checkpoint_sent_again_is_accepted() {
    let (sandbox, token) = signed_in().await;
    let (status, _) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(LOG_ID, 9, 0, DEVICE_KEY, DEVICE_KEY),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = sandbox
        .post(
            &token,
            "/checkpoints",
            &checkpoint(LOG_ID, 4, 0, DEVICE_KEY, DEVICE_KEY),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checkpoint"]["seq"], 4);
}

#[tokio::test]
async fn other_user_cannot_touch_a_log() {
    let (sandbox, owner) = signed_in().await;
    let intruder = sandbox.login(CLINICIAN, CLINICIAN_SCOPE).await;

    // The intruder's checkpoints form the intruder's own log.
    let (status, body) = sandbox
        .post(
            &intruder,
            "/checkpoints",
            &checkpoint(LOG_ID, 4, 0, OTHER_DEVICE_KEY, OTHER_DEVICE_KEY),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = sandbox
        .post(
            &intruder,
            "/checkpoints",
            &checkpoint(LOG_ID, 500, 0, OTHER_DEVICE_KEY, OTHER_DEVICE_KEY),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The owner's log goes on with its own key and seq.
    let (status, body) = sandbox
        .post(
            &owner,
            "/checkpoints",
            &checkpoint(LOG_ID, 9, 0, DEVICE_KEY, DEVICE_KEY),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, list) = sandbox.get(&owner, "/checkpoints?device_id=dev-2b7f").await;
    let seqs: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["checkpoint"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 9]);

    // The owner's audit events stay hidden from the intruder.
    let steps = sandbox.audit_steps(&intruder, "checkpoint:dev-2b7f").await;
    assert_eq!(steps.len(), 2, "{steps:?}");
    let steps = sandbox.audit_steps(&owner, "checkpoint:dev-2b7f").await;
    assert_eq!(steps.len(), 2, "{steps:?}");
}
