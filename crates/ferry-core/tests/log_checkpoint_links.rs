//! The epoch links a checkpoint request carries: the epoch records since
//! the log's last checkpoint record, each signed by the key before it, as
//! the gateway checks them.

mod log_support;

use std::sync::Arc;

use ed25519_dalek::{Signature, VerifyingKey};
use ferry_api::EpochLink;
use ferry_core::log::record::decode_32;
use ferry_core::secrets::MemorySecretStore;
use log_support::*;

/// Checks `links` the way the gateway does: each link's key is signed by
/// the previous one, starting at `anchor_key`, and the last one is `last_key`.
fn assert_chain(log_id: uuid::Uuid, anchor_key: &str, links: &[EpochLink], last_key: &str) {
    let mut previous = anchor_key.to_owned();
    for link in links {
        let key = VerifyingKey::from_bytes(&decode_32(&previous).unwrap()).unwrap();
        let signature: [u8; 64] = hex::decode(&link.signature).unwrap().try_into().unwrap();
        let message = ferry_api::epoch_message(
            log_id.as_bytes(),
            link.epoch,
            link.seq,
            &decode_32(&link.prev).unwrap(),
            &decode_32(&link.public_key).unwrap(),
        );
        let verified = key.verify_strict(&message, &Signature::from_bytes(&signature));
        assert!(
            verified.is_ok(),
            "epoch {} is not signed by the key before it",
            link.epoch
        );
        previous.clone_from(&link.public_key);
    }
    assert_eq!(previous, last_key);
}

#[test]
fn first_checkpoint_links_every_epoch_since_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transfer-log.ndjson");
    let store = Arc::new(MemorySecretStore::default());
    // Creating the log starts epoch 0, and each reopening starts the next.
    open(&path, &store).close().unwrap();
    open(&path, &store).close().unwrap();

    let mut log = open(&path, &store);
    let request = log.checkpoint_request().unwrap();

    let epochs: Vec<u64> = request.epoch_links.iter().map(|link| link.epoch).collect();
    assert_eq!(epochs, (1..=request.epoch).collect::<Vec<_>>());
    assert_eq!(request.epoch, 2);
    assert_chain(
        log.log_id(),
        &request.device_public_key,
        &request.epoch_links,
        &request.epoch_public_key,
    );
}

#[test]
fn later_checkpoint_links_only_epochs_after_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("transfer-log.ndjson");
    let store = Arc::new(MemorySecretStore::default());
    let mut log = open(&path, &store);
    let first = log.checkpoint_request().unwrap();
    log.record_checkpoint(countersign(&first)).unwrap();
    log.close().unwrap();

    let mut log = open(&path, &store);
    let second = log.checkpoint_request().unwrap();

    let epochs: Vec<u64> = second.epoch_links.iter().map(|link| link.epoch).collect();
    assert_eq!(epochs, (first.epoch + 1..=second.epoch).collect::<Vec<_>>());
    assert!(!epochs.is_empty());
    assert_chain(
        log.log_id(),
        &first.epoch_public_key,
        &second.epoch_links,
        &second.epoch_public_key,
    );
    assert!(second.to_wire().epoch_links.is_empty());
    assert_eq!(second.to_body().epoch_links, second.epoch_links);
}
