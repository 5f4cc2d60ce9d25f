//! Checkpoints of one transfer log must keep its device key, one key per
//! epoch, and a chain of epoch keys each signed by the one before, over
//! real HTTP against the sandbox.

mod grant_support;

use ed25519_dalek::{Signer, SigningKey};
use grant_support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const LOG_ID: &str = "5f0c7a52-9d3e-4c1b-8a61-0b1e2f3a4b5c";
const OTHER_DEVICE_KEY: &str = "22bb";

/// Derives the Ed25519 key of epoch `epoch` of the test log.
fn epoch_key(epoch: u64) -> SigningKey {
    SigningKey::from_bytes(&[epoch as u8 + 1; 32])
}

fn public_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

fn device_key() -> String {
    public_hex(&epoch_key(0))
}

/// Builds the epoch record introducing `new_key` as epoch `epoch` at `seq`,
/// signed by `signer`, as a log writer sends it in `epoch_links`.
fn link_signed_by(signer: &SigningKey, epoch: u64, seq: u64, new_key: &SigningKey) -> Value {
    let prev = [seq as u8; 32];
    let log_id = Uuid::parse_str(LOG_ID).unwrap();
    let new_public = new_key.verifying_key().to_bytes();
    let message = ferry_api::epoch_message(log_id.as_bytes(), epoch, seq, &prev, &new_public);
    json!({
        "epoch": epoch,
        "seq": seq,
        "prev": hex::encode(prev),
        "public_key": hex::encode(new_public),
        "signature": hex::encode(signer.sign(&message).to_bytes()),
    })
}

/// Builds the correctly signed record introducing epoch `epoch` at `seq`.
fn link(epoch: u64, seq: u64) -> Value {
    link_signed_by(&epoch_key(epoch - 1), epoch, seq, &epoch_key(epoch))
}

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

/// Builds a checkpoint of the test log at `epoch` that carries `links`.
fn chained(seq: u64, epoch: u64, links: Vec<Value>) -> Value {
    let mut body = checkpoint(
        LOG_ID,
        seq,
        epoch,
        &public_hex(&epoch_key(epoch)),
        &device_key(),
    );
    body["epoch_links"] = Value::Array(links);
    body
}

async fn signed_in() -> (GrantSandbox, String) {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(STAFF, STAFF_SCOPE).await;
    let (status, body) = sandbox
        .post_checkpoint(
            &token,
            &checkpoint(LOG_ID, 4, 0, &device_key(), &device_key()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (sandbox, token)
}

#[tokio::test]
async fn changed_device_key_is_rejected_naming_log() {
    let (sandbox, token) = signed_in().await;

    let (status, body) = sandbox
        .post_checkpoint(&token, &checkpoint(LOG_ID, 9, 1, "33cc", OTHER_DEVICE_KEY))
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "device_public_key");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(LOG_ID), "{message}");
    let expected = format!("device key {}, not 22bb", device_key());
    assert!(message.contains(&expected), "{message}");
    let (_, list) = sandbox.get(&token, "/checkpoints?device_id=dev-2b7f").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn chained_epoch_keys_are_accepted() {
    let (sandbox, token) = signed_in().await;

    // Epoch 1 is chained to the recorded epoch 0, then epochs 2 and 3 to epoch 1.
    // The link of epoch 1 is sent again, as a client does when the response
    // to its last checkpoint was lost, and is skipped.
    let (first_status, first) = sandbox
        .post_checkpoint(&token, &chained(9, 1, vec![link(1, 6)]))
        .await;
    let (status, body) = sandbox
        .post_checkpoint(
            &token,
            &chained(20, 3, vec![link(1, 6), link(2, 12), link(3, 18)]),
        )
        .await;

    assert_eq!(first_status, StatusCode::OK, "{first}");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checkpoint"]["epoch"], 3);
    assert_eq!(
        body["checkpoint"]["epoch_public_key"],
        public_hex(&epoch_key(3))
    );
    assert!(body["checkpoint"].get("epoch_links").is_none(), "{body}");
}

#[tokio::test]
async fn epoch_key_not_signed_by_previous_is_rejected() {
    let (sandbox, token) = signed_in().await;
    let stranger = SigningKey::from_bytes(&[0x5a; 32]);
    let forged = link_signed_by(&stranger, 1, 6, &epoch_key(1));

    let (status, body) = sandbox
        .post_checkpoint(&token, &chained(9, 1, vec![forged]))
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "epoch_links");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(LOG_ID), "{message}");
    let expected = format!(
        "the key of epoch 1 ({}) is not signed by the key of epoch 0 ({})",
        public_hex(&epoch_key(1)),
        device_key()
    );
    assert!(message.contains(&expected), "{message}");
    let (_, list) = sandbox.get(&token, "/checkpoints?device_id=dev-2b7f").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn epoch_key_without_link_is_rejected() {
    let (sandbox, token) = signed_in().await;

    let (status, body) = sandbox
        .post_checkpoint(&token, &chained(20, 2, vec![link(2, 12)]))
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "epoch_links");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(LOG_ID), "{message}");
    assert!(
        message.contains("no record introducing epoch 1"),
        "{message}"
    );
}

#[tokio::test]
async fn link_chain_ending_at_other_key_is_rejected() {
    let (sandbox, token) = signed_in().await;
    let mut body = chained(9, 1, vec![link(1, 6)]);
    body["epoch_public_key"] = json!(public_hex(&epoch_key(7)));

    let (status, body) = sandbox.post_checkpoint(&token, &body).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "epoch_public_key");
}

#[tokio::test]
async fn link_before_recorded_seq_is_rejected() {
    let (sandbox, token) = signed_in().await;

    let (status, body) = sandbox
        .post_checkpoint(&token, &chained(9, 1, vec![link(1, 3)]))
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "epoch_links");
    assert!(
        body["message"].as_str().unwrap().contains("seq 3"),
        "{body}"
    );
}

#[tokio::test]
async fn other_key_in_same_epoch_is_rejected() {
    let (sandbox, token) = signed_in().await;

    let (status, body) = sandbox
        .post_checkpoint(&token, &checkpoint(LOG_ID, 9, 0, "33cc", &device_key()))
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "epoch_public_key");
    assert!(body["message"].as_str().unwrap().contains(LOG_ID), "{body}");
}

#[tokio::test]
async fn epoch_going_back_is_rejected() {
    let (sandbox, token) = signed_in().await;
    let (status, _) = sandbox
        .post_checkpoint(&token, &chained(9, 2, vec![link(1, 6), link(2, 8)]))
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = sandbox
        .post_checkpoint(&token, &chained(12, 1, vec![link(1, 6)]))
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "epoch");
}

#[tokio::test]
async fn new_log_may_have_another_device_key() {
    let (sandbox, token) = signed_in().await;
    let other_log = "0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a";

    let (status, body) = sandbox
        .post_checkpoint(
            &token,
            &checkpoint(other_log, 1, 0, OTHER_DEVICE_KEY, OTHER_DEVICE_KEY),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn checkpoint_without_device_key_is_rejected() {
    let (sandbox, token) = signed_in().await;
    let mut keyless = checkpoint(LOG_ID, 9, 0, &device_key(), &device_key());
    keyless.as_object_mut().unwrap().remove("device_public_key");

    let (status, body) = sandbox.post_checkpoint(&token, &keyless).await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "device_public_key");
}

#[tokio::test]
async fn device_key_stays_pinned_after_keyless_checkpoint() {
    let sandbox = GrantSandbox::start("").await;
    let token = sandbox.login(STAFF, STAFF_SCOPE).await;
    let first = checkpoint(LOG_ID, 4, 0, &device_key(), &device_key());
    let mut keyless = checkpoint(LOG_ID, 5, 0, &device_key(), &device_key());
    keyless.as_object_mut().unwrap().remove("device_public_key");
    let mut older_keyless = checkpoint(LOG_ID, 2, 0, &device_key(), &device_key());
    older_keyless
        .as_object_mut()
        .unwrap()
        .remove("device_public_key");
    // A keyless row stored before the key was pinned, then the pinned key.
    let (status, _) = sandbox.post_checkpoint(&token, &older_keyless).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = sandbox.post_checkpoint(&token, &first).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = sandbox.post_checkpoint(&token, &keyless).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, body) = sandbox
        .post_checkpoint(
            &token,
            &checkpoint(LOG_ID, 6, 0, &device_key(), OTHER_DEVICE_KEY),
        )
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["field"], "device_public_key");
    let (status, body) = sandbox
        .post_checkpoint(
            &token,
            &checkpoint(LOG_ID, 7, 0, &device_key(), &device_key()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn lower_seq_is_rejected_as_rollback() {
    let (sandbox, token) = signed_in().await;
    let (status, _) = sandbox
        .post_checkpoint(&token, &chained(100, 2, vec![link(1, 6), link(2, 8)]))
        .await;
    assert_eq!(status, StatusCode::OK);

    for (seq, epoch, epoch_key) in [(50, 1, "44dd"), (60, 9, "55ee"), (60, 2, "33cc")] {
        let (status, body) = sandbox
            .post_checkpoint(
                &token,
                &checkpoint(LOG_ID, seq, epoch, epoch_key, &device_key()),
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
        .post_checkpoint(
            &token,
            &checkpoint(LOG_ID, 9, 0, &device_key(), &device_key()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = sandbox
        .post_checkpoint(
            &token,
            &checkpoint(LOG_ID, 4, 0, &device_key(), &device_key()),
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
        .post_checkpoint(
            &intruder,
            &checkpoint(LOG_ID, 4, 0, OTHER_DEVICE_KEY, OTHER_DEVICE_KEY),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = sandbox
        .post_checkpoint(
            &intruder,
            &checkpoint(LOG_ID, 500, 0, OTHER_DEVICE_KEY, OTHER_DEVICE_KEY),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The owner's log goes on with its own key and seq.
    let (status, body) = sandbox
        .post_checkpoint(
            &owner,
            &checkpoint(LOG_ID, 9, 0, &device_key(), &device_key()),
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
