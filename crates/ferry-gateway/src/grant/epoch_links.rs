//! The check that each new epoch key of a transfer log was signed by the
//! key of the epoch before it, from the epoch records a checkpoint carries.
//!
//! The signed bytes are [`ferry_api::epoch_message`], the layout the client's
//! log writer signs and its verifier checks. The chain starts at the latest
//! checkpoint the gateway recorded for the log. A log's first checkpoint has
//! nothing recorded to start from, so its epoch key is taken on first use,
//! like its device key.

use ed25519_dalek::{Signature, VerifyingKey};
use ferry_api::{CheckpointRequest, EpochLink};
use uuid::Uuid;

use super::GrantError;

/// Maximum number of epoch links in one checkpoint. A log rotates its key on
/// every open and hourly, so this covers more than a year of hourly epochs
/// between two checkpoints.
pub const MAX_EPOCH_LINKS: usize = 10_000;

/// The recorded checkpoint a new epoch key is chained to.
pub struct Anchor<'a> {
    pub seq: u64,
    pub epoch: u64,
    pub public_key: &'a str,
}

/// Checks that `links` lead from `anchor`'s epoch key to the request's
/// epoch key, one signed epoch at a time. `log` names the log in messages.
///
/// Links of epochs up to the anchor's are skipped: the client sends the
/// epoch records since its own last checkpoint record, which may be older
/// than the gateway's.
pub fn check_epoch_links(
    log: &str,
    anchor: &Anchor<'_>,
    request: &CheckpointRequest,
    links: &[EpochLink],
) -> Result<(), GrantError> {
    if request.epoch <= anchor.epoch {
        return Ok(());
    }
    if links.len() > MAX_EPOCH_LINKS {
        return Err(GrantError::invalid(
            "epoch_links",
            format!(
                "{log} sent {} epoch links, more than the {MAX_EPOCH_LINKS} one checkpoint may carry; \
                 checkpoint the log more often",
                links.len()
            ),
        ));
    }
    let log_id = request
        .log_id
        .as_deref()
        .and_then(|log_id| Uuid::parse_str(log_id).ok())
        .ok_or_else(|| {
            GrantError::conflict(format!(
                "{log} moves from epoch {} to epoch {}, which needs the log's id as a UUID in log_id \
                 to check the new key's signature",
                anchor.epoch, request.epoch
            ))
            .with_field("log_id")
        })?;

    let mut previous_key = anchor.public_key.to_owned();
    let mut previous_seq = anchor.seq;
    let mut chain = links.iter().filter(|link| link.epoch > anchor.epoch);
    for epoch in anchor.epoch + 1..=request.epoch {
        let link = chain.next().filter(|link| link.epoch == epoch).ok_or_else(|| {
            GrantError::conflict(format!(
                "{log} reached epoch {} but epoch_links carries no record introducing epoch {epoch}; \
                 send every epoch record of the log after epoch {}",
                request.epoch, anchor.epoch
            ))
            .with_field("epoch_links")
        })?;
        if link.seq <= previous_seq || link.seq > request.seq {
            return Err(GrantError::conflict(format!(
                "{log}: the record introducing epoch {epoch} is at seq {}, outside seq {} to {} \
                 where the log's epoch {} ended",
                link.seq,
                previous_seq + 1,
                request.seq,
                epoch - 1
            ))
            .with_field("epoch_links"));
        }
        if !link_verifies(log_id, &previous_key, link) {
            return Err(GrantError::conflict(format!(
                "{log}: the key of epoch {epoch} ({}) is not signed by the key of epoch {} ({previous_key}); \
                 the log's keys were replaced, so keep the log for an auditor and start a new one",
                link.public_key,
                epoch - 1
            ))
            .with_field("epoch_links"));
        }
        previous_key.clone_from(&link.public_key);
        previous_seq = link.seq;
    }

    if previous_key != request.epoch_public_key {
        return Err(GrantError::conflict(format!(
            "{log}: epoch_links introduce key {previous_key} for epoch {}, not epoch_public_key {}",
            request.epoch, request.epoch_public_key
        ))
        .with_field("epoch_public_key"));
    }
    Ok(())
}

/// Checks that `link.signature` is the previous epoch key's Ed25519 signature
/// over the link's epoch message. Malformed hex counts as a bad signature.
fn link_verifies(log_id: Uuid, previous_key: &str, link: &EpochLink) -> bool {
    let (Some(previous_key), Some(head), Some(new_key), Some(signature)) = (
        decode_hex::<32>(previous_key),
        decode_hex::<32>(&link.prev),
        decode_hex::<32>(&link.public_key),
        decode_hex::<64>(&link.signature),
    ) else {
        return false;
    };
    let Ok(previous_key) = VerifyingKey::from_bytes(&previous_key) else {
        return false;
    };

    let message =
        ferry_api::epoch_message(log_id.as_bytes(), link.epoch, link.seq, &head, &new_key);
    previous_key
        .verify_strict(&message, &Signature::from_bytes(&signature))
        .is_ok()
}

fn decode_hex<const N: usize>(value: &str) -> Option<[u8; N]> {
    hex::decode(value).ok()?.try_into().ok()
}
