//! Checkpoints: a log head countersigned by the gateway.
//!
//! The client sends a [`CheckpointRequest`] to the grant API's
//! `POST /checkpoints` as a [`ferry_api::CheckpointRequest`]: the head, the
//! current epoch's public key (so the gateway learns every key as it is
//! introduced) and the device's epoch 0 key. The gateway signs the JSON of
//! that request with its ES256 key as a compact JWS, keeps the result and
//! returns it. [`Checkpoint::from_countersigned`] checks the JWS against the
//! gateway's JWKS (`GET /keys`) and the request that was sent. The client
//! then appends the [`Checkpoint`] to the log with the public key that
//! signed it, so the log's verification bundle carries that key to an
//! auditor's machine. An auditor holding the gateway's checkpoints detects a
//! log cut behind one of them, or a log replaced by another copy.

use jiff::Timestamp;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The head a client asks the gateway to countersign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRequest {
    pub log_id: Uuid,
    pub device: String,
    pub head_seq: u64,
    /// Hex SHA-256 of the line at `head_seq`.
    pub head_hash: String,
    /// The epoch current at the head.
    pub epoch: u64,
    /// Hex Ed25519 public key of that epoch.
    pub epoch_public_key: String,
    /// Hex Ed25519 public key of epoch 0, the device's key for this log.
    pub device_public_key: String,
    /// The log's epoch records after its last checkpoint record, from which
    /// the gateway checks that each epoch key signed the next one.
    pub epoch_links: Vec<ferry_api::EpochLink>,
}

impl CheckpointRequest {
    /// Returns the payload the gateway signs: the request without its
    /// epoch links.
    pub fn to_wire(&self) -> ferry_api::CheckpointRequest {
        ferry_api::CheckpointRequest {
            device_id: self.device.clone(),
            log_id: Some(self.log_id.to_string()),
            seq: self.head_seq,
            head_sha256: self.head_hash.clone(),
            epoch: self.epoch,
            epoch_public_key: self.epoch_public_key.clone(),
            device_public_key: Some(self.device_public_key.clone()),
            epoch_links: Vec::new(),
        }
    }

    /// Returns the grant API body of this request: the signed payload and
    /// the epoch links.
    pub fn to_body(&self) -> ferry_api::CheckpointRequest {
        ferry_api::CheckpointRequest { epoch_links: self.epoch_links.clone(), ..self.to_wire() }
    }
}

/// A head countersigned by the gateway, as recorded in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub log_id: Uuid,
    pub device: String,
    pub head_seq: u64,
    pub head_hash: String,
    pub epoch: u64,
    pub epoch_public_key: String,
    pub device_public_key: String,
    /// Token subject the gateway recorded the checkpoint for.
    pub subject: String,
    /// The gateway's time of countersigning.
    pub recorded_at: Timestamp,
    /// `kid` of the gateway key that signed `jws`.
    pub gateway_key_id: String,
    /// Compact JWS (ES256) by the gateway over the JSON of the request
    /// ([`CheckpointRequest::to_wire`]), kept as sent.
    pub jws: String,
    /// The public JWK named by `gateway_key_id`, as the gateway published it
    /// at `GET /keys` when it countersigned. It is a copy for the auditor,
    /// who compares its `kid` with the gateway's published keys; the
    /// verifier never trusts it on its own.
    pub gateway_key: Option<Jwk>,
}

/// Failure to accept a countersigned checkpoint or to check its signature.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}", unknown_key_message(kid.as_deref()))]
    UnknownKey { kid: Option<String> },
    #[error("the checkpoint's JWS is invalid: {0}")]
    Signature(#[source] jsonwebtoken::errors::Error),
    #[error("the gateway countersigned {signed}, but {expected} was {what}")]
    Differs { what: &'static str, signed: String, expected: String },
}

/// Words the failure of a checkpoint whose signing key is not among the
/// gateway keys it was checked with.
fn unknown_key_message(kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!(
            "it was countersigned with gateway key {kid}, which is not among the gateway's current keys"
        ),
        None => "its signature names no key id (kid), so no gateway key can check it".to_owned(),
    }
}

impl Checkpoint {
    /// Accepts the gateway's response to `request`: the JWS must verify with a
    /// key of `keys`, and the signed payload and the returned checkpoint must
    /// both be the request that was sent.
    pub fn from_countersigned(
        request: &CheckpointRequest,
        countersigned: ferry_api::Checkpoint,
        keys: &JwkSet,
    ) -> Result<Checkpoint, CheckpointError> {
        let sent = request.to_wire();
        if countersigned.checkpoint != sent {
            return Err(CheckpointError::Differs {
                what: "sent",
                signed: format!("{:?}", countersigned.checkpoint),
                expected: format!("{sent:?}"),
            });
        }
        let (signed, key) = decode_jws(&countersigned.jws, &keys.keys)?;
        if signed != sent {
            return Err(CheckpointError::Differs {
                what: "sent",
                signed: format!("{signed:?}"),
                expected: format!("{sent:?}"),
            });
        }

        Ok(Checkpoint {
            log_id: request.log_id,
            device: request.device.clone(),
            head_seq: request.head_seq,
            head_hash: request.head_hash.clone(),
            epoch: request.epoch,
            epoch_public_key: request.epoch_public_key.clone(),
            device_public_key: request.device_public_key.clone(),
            subject: countersigned.subject,
            recorded_at: countersigned.recorded_at,
            gateway_key_id: key.common.key_id.clone().unwrap_or_default(),
            jws: countersigned.jws,
            gateway_key: Some(key.clone()),
        })
    }

    /// Converts a checkpoint as the gateway lists it (`GET /checkpoints`) for
    /// the verifier, which checks its signature. Returns `None` for checkpoints
    /// without a log id or device key, which no log of this format sends.
    pub fn from_gateway(countersigned: ferry_api::Checkpoint) -> Option<Checkpoint> {
        let request = countersigned.checkpoint;
        let kid = jsonwebtoken::decode_header(&countersigned.jws).ok().and_then(|header| header.kid);
        Some(Checkpoint {
            log_id: request.log_id?.parse().ok()?,
            device: request.device_id,
            head_seq: request.seq,
            head_hash: request.head_sha256,
            epoch: request.epoch,
            epoch_public_key: request.epoch_public_key,
            device_public_key: request.device_public_key?,
            subject: countersigned.subject,
            recorded_at: countersigned.recorded_at,
            gateway_key_id: kid.unwrap_or_default(),
            jws: countersigned.jws,
            gateway_key: None,
        })
    }

    /// Returns the request this checkpoint countersigns.
    pub fn request(&self) -> CheckpointRequest {
        CheckpointRequest {
            log_id: self.log_id,
            device: self.device.clone(),
            head_seq: self.head_seq,
            head_hash: self.head_hash.clone(),
            epoch: self.epoch,
            epoch_public_key: self.epoch_public_key.clone(),
            device_public_key: self.device_public_key.clone(),
            epoch_links: Vec::new(),
        }
    }

    /// Checks that `jws` is an ES256 signature by one of `keys` over exactly
    /// this checkpoint's head, epoch key and device key.
    pub fn verify_signature(&self, keys: &[Jwk]) -> Result<(), CheckpointError> {
        let (signed, _) = decode_jws(&self.jws, keys)?;
        let expected = self.request().to_wire();
        if signed != expected {
            return Err(CheckpointError::Differs {
                what: "recorded",
                signed: format!("{signed:?}"),
                expected: format!("{expected:?}"),
            });
        }
        Ok(())
    }
}

/// Verifies a compact ES256 JWS with the key its `kid` names and returns the
/// payload and that key.
fn decode_jws<'a>(
    jws: &str,
    keys: &'a [Jwk],
) -> Result<(ferry_api::CheckpointRequest, &'a Jwk), CheckpointError> {
    let header = jsonwebtoken::decode_header(jws).map_err(CheckpointError::Signature)?;
    let key = match header.kid.as_deref() {
        Some(kid) => keys.iter().find(|key| key.common.key_id.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
    .ok_or_else(|| CheckpointError::UnknownKey { kid: header.kid.clone() })?;
    let decoding = DecodingKey::from_jwk(key).map_err(CheckpointError::Signature)?;

    // The payload is not a JWT: no registered claims are required or checked.
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let payload = jsonwebtoken::decode::<ferry_api::CheckpointRequest>(jws, &decoding, &validation)
        .map_err(CheckpointError::Signature)?
        .claims;
    Ok((payload, key))
}
