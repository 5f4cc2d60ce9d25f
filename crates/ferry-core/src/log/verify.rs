//! Verifying a log file with public material only.
//!
//! The verifier reads the whole file and checks, in file order:
//! 1. that every line is a record, except bytes of interrupted appends
//!    (reported as [`ProblemKind::Torn`]);
//! 2. the hash chain and the sequence numbers (edited, missing and
//!    reordered records);
//! 3. every signature against the key of the epoch current at that point
//!    (bad signatures, signatures by another epoch's key);
//! 4. the genesis key and the epoch keys against the keys the caller trusts;
//! 5. the caller's countersigned checkpoints (a cut tail, another copy).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::LogError;
use super::checkpoint::Checkpoint;
use jsonwebtoken::jwk::Jwk;
use super::record::{self, Record, ZERO_HASH, decode_32, line_hash};
use super::writer::Head;

/// Public material the verifier trusts besides the file.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Hex Ed25519 public keys the device is known by, for example from the
    /// gateway's device registry. When set, a genesis key outside this list
    /// is reported as [`ProblemKind::KeySwapped`].
    pub device_keys: Vec<String>,
    /// Epoch public keys known from elsewhere (a bundle, the gateway's
    /// checkpoints). A different key in the file is reported as
    /// [`ProblemKind::KeySwapped`].
    pub epoch_keys: Vec<EpochPublicKey>,
    /// Checkpoints countersigned by the gateway, from the gateway or a bundle.
    pub checkpoints: Vec<Checkpoint>,
    /// Gateway keys (public ES256 JWKs from the grant API's `GET /keys`) to
    /// check checkpoint signatures with. Without them, checkpoint signatures
    /// are not checked and no checkpoint counts as matched.
    pub gateway_keys: Vec<Jwk>,
    /// The head recorded when a bundle was exported.
    pub expected_head: Option<ExportedHead>,
}

/// The public key of one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochPublicKey {
    pub epoch: u64,
    /// Hex Ed25519 public key.
    pub public_key: String,
    /// Seq of the record that introduced the key.
    pub since_seq: u64,
}

/// A head as written into a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedHead {
    pub seq: u64,
    pub hash: String,
}

/// The result of [`verify`].
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// True when no problem other than [`ProblemKind::Torn`] was found.
    pub ok: bool,
    pub log_id: Option<Uuid>,
    pub device: Option<String>,
    /// Number of `entry` records.
    pub entries: u64,
    /// Number of records of every kind.
    pub records: u64,
    pub head: Option<Head>,
    /// Whether the genesis key is one of [`VerifyOptions::device_keys`].
    pub anchored: bool,
    /// Epoch keys as introduced by the file.
    pub epochs: Vec<EpochPublicKey>,
    /// Seq of the last record covered by a valid signature.
    pub last_signed_seq: Option<u64>,
    /// Records after the last valid signature. Their content is protected
    /// by the hash chain only, so whoever holds the current key can change it.
    pub unsealed_tail: u64,
    /// Head seq of the latest countersigned checkpoint that matches the file.
    pub last_checkpoint: Option<u64>,
    /// Problems in file order.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Returns the first problem that is not a torn append.
    pub fn first_problem(&self) -> Option<&Problem> {
        self.problems.iter().find(|problem| problem.kind != ProblemKind::Torn)
    }
}

/// One finding of the verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// Seq of the record concerned: the seq its position in the chain
    /// implies, which differs from the written one when that was edited.
    pub seq: Option<u64>,
    /// 1-based line number in the file.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Kinds of problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// A record's bytes differ from the ones the chain recorded.
    Edited,
    /// Records are absent from the chain.
    Missing,
    /// Records are in another order than the chain.
    Reordered,
    /// A signature does not verify under any known key.
    BadSignature,
    /// A signature verifies only under another epoch's key, or a record
    /// claims another epoch than the one current at its position.
    WrongEpoch,
    /// The log ends before the seq of a countersigned checkpoint.
    TruncatedAfterCheckpoint(u64),
    /// The record at a countersigned seq differs from the countersigned one.
    OlderCopy,
    /// Bytes of an interrupted append.
    Torn,
    /// A key in the file differs from the one the device or the gateway is
    /// known to use.
    KeySwapped,
}

/// One line of the file.
struct Line<'a> {
    number: usize,
    start: usize,
    bytes: &'a [u8],
    terminated: bool,
}

/// Per-node state of the chain pass.
struct Node<'a> {
    line: &'a Line<'a>,
    record: Result<Record, String>,
    hash: String,
    slot: u64,
    flagged: bool,
}

/// Verifies the log at `path`.
pub fn verify(path: impl AsRef<Path>, options: &VerifyOptions) -> Result<VerifyReport, LogError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| LogError::io("read the log", path, source))?;
    Ok(verify_bytes(&bytes, options))
}

/// Verifies log content held in memory.
pub fn verify_bytes(bytes: &[u8], options: &VerifyOptions) -> VerifyReport {
    let lines = split_lines(bytes);
    let mut problems = Vec::new();

    let mut parsed: Vec<Option<Result<Record, String>>> = lines
        .iter()
        .map(|line| line.terminated.then(|| serde_json::from_slice::<Record>(line.bytes).map_err(|error| error.to_string())))
        .collect();
    let fragments = find_fragments(bytes, &lines, &parsed, &mut problems);

    let mut nodes: Vec<Node> = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        if fragments[index] {
            continue;
        }
        let Some(record) = parsed[index].take() else { continue };
        nodes.push(Node { line, record, hash: line_hash(line.bytes), slot: 0, flagged: false });
    }

    let mut report = VerifyReport {
        ok: false,
        log_id: None,
        device: None,
        entries: 0,
        records: 0,
        head: None,
        anchored: false,
        epochs: Vec::new(),
        last_signed_seq: None,
        unsealed_tail: 0,
        last_checkpoint: None,
        problems: Vec::new(),
    };
    check_chain(&mut nodes, &mut problems);
    check_signatures(&nodes, options, &mut report, &mut problems);
    check_checkpoints(&nodes, options, &mut report, &mut problems);

    report.records = nodes.iter().filter(|node| node.record.is_ok()).count() as u64;
    report.entries = nodes.iter().filter(|node| matches!(node.record, Ok(Record::Entry(_)))).count() as u64;
    report.head = nodes.last().and_then(|node| {
        let record = node.record.as_ref().ok()?;
        Some(Head { seq: record.seq(), hash: node.hash.clone() })
    });
    problems.sort_by_key(|problem| problem.line);
    report.ok = problems.iter().all(|problem| problem.kind == ProblemKind::Torn);
    report.problems = problems;
    report
}

fn split_lines(bytes: &[u8]) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < bytes.len() {
        let (end, terminated) = match bytes[start..].iter().position(|byte| *byte == b'\n') {
            Some(offset) => (start + offset, true),
            None => (bytes.len(), false),
        };
        lines.push(Line { number: lines.len() + 1, start, bytes: &bytes[start..end], terminated });
        start = end + 1;
    }
    lines
}

/// Marks the lines that hold bytes of interrupted appends: the lines a
/// `torn` record covers, an unterminated last line, and invalid lines after
/// the last record.
fn find_fragments(
    bytes: &[u8],
    lines: &[Line],
    parsed: &[Option<Result<Record, String>>],
    problems: &mut Vec<Problem>,
) -> Vec<bool> {
    let mut fragments = vec![false; lines.len()];

    for (index, line) in lines.iter().enumerate() {
        let Some(Ok(Record::Torn(torn))) = &parsed[index] else { continue };
        let covered_start = line.start.checked_sub(torn.skipped_bytes as usize);
        let first = covered_start.and_then(|start| lines[..index].iter().position(|candidate| candidate.start == start));
        let matches = match (covered_start, first) {
            (Some(start), Some(_)) => hex::encode(Sha256::digest(&bytes[start..line.start])) == torn.skipped_sha256,
            _ => false,
        };
        let Some(first) = first.filter(|_| matches) else {
            problems.push(Problem {
                kind: ProblemKind::Edited,
                seq: Some(torn.seq),
                line: line.number,
                message: format!(
                    "torn marker seq {} does not match the {} bytes before it: the marker or those bytes were changed",
                    torn.seq, torn.skipped_bytes
                ),
            });
            continue;
        };
        for covered in first..index {
            fragments[covered] = true;
            problems.push(Problem {
                kind: ProblemKind::Torn,
                seq: None,
                line: lines[covered].number,
                message: format!(
                    "{} bytes of an append interrupted before seq {}; the log continues after them",
                    lines[covered].bytes.len(),
                    torn.seq
                ),
            });
        }
    }

    for index in (0..lines.len()).rev() {
        let is_record = matches!(parsed[index], Some(Ok(_)));
        if is_record || fragments[index] {
            break;
        }
        fragments[index] = true;
        problems.push(Problem {
            kind: ProblemKind::Torn,
            seq: None,
            line: lines[index].number,
            message: format!(
                "the log ends with {} bytes of an interrupted append; the next append marks them and continues",
                lines[index].bytes.len()
            ),
        });
    }
    fragments
}

/// Describes a record for messages: `entry seq 5 (line 6)`, adding the
/// chain position when the written seq differs from it.
fn describe(node: &Node) -> String {
    match &node.record {
        Ok(record) if record.seq() == node.slot => {
            format!("{} seq {} (line {})", record.kind_name(), node.slot, node.line.number)
        }
        Ok(record) => format!(
            "{} seq {} (line {}, the position of seq {})",
            record.kind_name(),
            record.seq(),
            node.line.number,
            node.slot
        ),
        Err(_) => format!("record seq {} (line {})", node.slot, node.line.number),
    }
}

/// Checks the hash chain and the sequence numbers.
fn check_chain(nodes: &mut [Node], problems: &mut Vec<Problem>) {
    let index_by_hash: HashMap<String, usize> =
        nodes.iter().enumerate().map(|(index, node)| (node.hash.clone(), index)).collect();
    let mut expected_seq = 0u64;

    for index in 0..nodes.len() {
        nodes[index].slot = expected_seq;
        let slot = expected_seq;
        expected_seq += 1;

        let (record_seq, record_prev, is_genesis) = match &nodes[index].record {
            Ok(record) => (record.seq(), record.prev().to_owned(), matches!(record, Record::Genesis(_))),
            Err(error) => {
                let message = format!("{} is not a valid record ({error}): it was edited", describe(&nodes[index]));
                problems.push(problem(ProblemKind::Edited, &nodes[index], message));
                nodes[index].flagged = true;
                continue;
            }
        };

        if index == 0 {
            if !is_genesis || record_prev != ZERO_HASH || record_seq != 0 {
                let message = format!("{} is not a genesis record with seq 0: the start of the log was removed or edited", describe(&nodes[0]));
                problems.push(problem(ProblemKind::Missing, &nodes[0], message));
                nodes[0].flagged = true;
            }
            continue;
        }

        let previous = &nodes[index - 1];
        let link_ok = record_prev == previous.hash;
        let seq_ok = record_seq == slot;
        if link_ok && seq_ok {
            continue;
        }
        if link_ok {
            let message = format!("{} was edited: its seq differs from its position in the chain", describe(&nodes[index]));
            problems.push(problem(ProblemKind::Edited, &nodes[index], message));
            nodes[index].flagged = true;
            continue;
        }

        let previous_flagged = previous.flagged;
        nodes[index].flagged = true;
        if previous_flagged {
            continue;
        }

        if let Some(&linked) = index_by_hash.get(&record_prev) {
            if linked != index - 1 {
                let linked_node = &nodes[linked];
                let message = format!(
                    "{} follows {} in the chain, but appears after {}: records were reordered",
                    describe(&nodes[index]),
                    describe(linked_node),
                    describe(&nodes[index - 1])
                );
                problems.push(problem(ProblemKind::Reordered, &nodes[index], message));
                continue;
            }
        }

        if record_seq > slot {
            let message = if record_seq == slot + 1 {
                format!("record seq {slot} is missing before {}", describe(&nodes[index]))
            } else {
                format!("records seq {slot} to {} are missing before {}", record_seq - 1, describe(&nodes[index]))
            };
            problems.push(Problem { kind: ProblemKind::Missing, seq: Some(slot), line: nodes[index].line.number, message });
            nodes[index].slot = record_seq;
            expected_seq = record_seq + 1;
            continue;
        }

        let next_links_here = nodes.get(index + 1).is_some_and(|next| {
            next.record.as_ref().is_ok_and(|next_record| next_record.prev() == nodes[index].hash)
        });
        let edited = if next_links_here || nodes[index].record.as_ref().is_ok_and(|record| signs_own_prev(record, nodes)) { index - 1 } else { index };
        let message = format!(
            "{} was edited: its bytes no longer match the hash that {} records",
            describe(&nodes[edited]),
            if edited == index { format!("{} or the next record", describe(&nodes[index])) } else { describe(&nodes[index]) }
        );
        nodes[edited].flagged = true;
        problems.push(problem(ProblemKind::Edited, &nodes[edited], message));
    }
}

/// Whether a seal or epoch record's signature verifies over its `prev`
/// under the key its epoch names, which shows that `prev` is authentic.
fn signs_own_prev(record: &Record, nodes: &[Node]) -> bool {
    let keys = collect_epoch_keys(nodes);
    let Some(Ok(Record::Genesis(genesis))) = nodes.first().map(|node| &node.record) else { return false };
    match record {
        Record::Seal(seal) => keys
            .get(&seal.epoch)
            .is_some_and(|key| seal_verifies(genesis.log_id, seal, key)),
        Record::Epoch(epoch) => epoch.epoch > 0
            && keys
                .get(&(epoch.epoch - 1))
                .is_some_and(|key| epoch_verifies(genesis.log_id, epoch, key)),
        _ => false,
    }
}

fn problem(kind: ProblemKind, node: &Node, message: String) -> Problem {
    Problem { kind, seq: Some(node.slot), line: node.line.number, message }
}

fn parse_key(hex_key: &str) -> Option<VerifyingKey> {
    decode_32(hex_key).and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
}

fn parse_signature(hex_signature: &str) -> Option<Signature> {
    hex::decode(hex_signature).ok().and_then(|bytes| Signature::from_slice(&bytes).ok())
}

/// Epoch keys introduced by the file, first introduction of each epoch.
fn collect_epoch_keys(nodes: &[Node]) -> HashMap<u64, VerifyingKey> {
    let mut keys = HashMap::new();
    for node in nodes {
        let (epoch, public_key) = match &node.record {
            Ok(Record::Genesis(genesis)) => (genesis.epoch, &genesis.public_key),
            Ok(Record::Epoch(epoch)) => (epoch.epoch, &epoch.public_key),
            _ => continue,
        };
        if let Some(key) = parse_key(public_key) {
            keys.entry(epoch).or_insert(key);
        }
    }
    keys
}

fn seal_verifies(log_id: Uuid, seal: &record::SealRecord, key: &VerifyingKey) -> bool {
    let (Some(head), Some(signature)) = (decode_32(&seal.prev), parse_signature(&seal.signature)) else { return false };
    key.verify(&record::seal_message(log_id, seal.epoch, seal.seq, &head), &signature).is_ok()
}

fn epoch_verifies(log_id: Uuid, epoch: &record::EpochRecord, key: &VerifyingKey) -> bool {
    let (Some(head), Some(new_key), Some(signature)) =
        (decode_32(&epoch.prev), decode_32(&epoch.public_key), parse_signature(&epoch.signature))
    else {
        return false;
    };
    key.verify(&record::epoch_message(log_id, epoch.epoch, epoch.seq, &head, &new_key), &signature).is_ok()
}

/// Finds the epoch whose key verifies a signature, when the expected one
/// did not.
fn find_signing_epoch(keys: &HashMap<u64, VerifyingKey>, verifies: impl Fn(&VerifyingKey) -> bool) -> Option<u64> {
    let mut epochs: Vec<u64> = keys.keys().copied().collect();
    epochs.sort_unstable();
    epochs.into_iter().find(|epoch| verifies(&keys[epoch]))
}

/// Checks the genesis, epoch and seal signatures and the keys.
fn check_signatures(nodes: &[Node], options: &VerifyOptions, report: &mut VerifyReport, problems: &mut Vec<Problem>) {
    let Some(Ok(Record::Genesis(genesis))) = nodes.first().map(|node| &node.record) else { return };
    let log_id = genesis.log_id;
    report.log_id = Some(log_id);
    report.device = Some(genesis.device.clone());

    let mut all_keys = collect_epoch_keys(nodes);
    for known in &options.epoch_keys {
        if let Some(key) = parse_key(&known.public_key) {
            all_keys.entry(known.epoch).or_insert(key);
        }
    }

    // Genesis: self-signed by epoch 0, and anchored in the caller's keys.
    let genesis_key = parse_key(&genesis.public_key);
    let genesis_signed = genesis_key.as_ref().is_some_and(|key| {
        parse_signature(&genesis.signature).is_some_and(|signature| {
            let message = record::genesis_message(log_id, &genesis.device, key.as_bytes());
            key.verify(&message, &signature).is_ok()
        })
    });
    if !genesis_signed {
        problems.push(problem(ProblemKind::BadSignature, &nodes[0], "genesis seq 0 (line 1) is not signed by the key it introduces".into()));
    }
    report.anchored = options.device_keys.iter().any(|key| key.eq_ignore_ascii_case(&genesis.public_key));
    if !options.device_keys.is_empty() && !report.anchored {
        let message = format!(
            "genesis seq 0 (line 1) introduces device key {}, which is not the key this device is known by ({}): the log was re-created under another key",
            genesis.public_key,
            options.device_keys.join(", ")
        );
        problems.push(problem(ProblemKind::KeySwapped, &nodes[0], message));
    }

    let mut current_epoch = 0u64;
    let mut current_key = genesis_key;
    report.epochs.push(EpochPublicKey { epoch: 0, public_key: genesis.public_key.clone(), since_seq: 0 });
    let mut last_signed: Option<usize> = genesis_signed.then_some(0);

    for (index, node) in nodes.iter().enumerate().skip(1) {
        let Ok(record) = &node.record else { continue };
        match record {
            Record::Seal(seal) => {
                let verifies_current = seal.epoch == current_epoch
                    && current_key.as_ref().is_some_and(|key| seal_verifies(log_id, seal, key));
                if verifies_current {
                    last_signed = Some(index);
                    continue;
                }
                let signer = find_signing_epoch(&all_keys, |key| {
                    let mut as_current = seal.clone();
                    as_current.epoch = current_epoch;
                    seal_verifies(log_id, seal, key) || seal_verifies(log_id, &as_current, key)
                });
                let message = match signer {
                    Some(epoch) => format!(
                        "{} is signed by the key of epoch {epoch} (it names epoch {}), but epoch {current_epoch} was current there: it was re-signed later",
                        describe(node),
                        seal.epoch
                    ),
                    None if seal.epoch != current_epoch => format!(
                        "{} names epoch {}, but epoch {current_epoch} was current there",
                        describe(node),
                        seal.epoch
                    ),
                    None => format!(
                        "{} does not verify under the key of epoch {current_epoch}: the seal or the records before it were changed",
                        describe(node)
                    ),
                };
                let kind = if signer.is_some() || seal.epoch != current_epoch { ProblemKind::WrongEpoch } else { ProblemKind::BadSignature };
                problems.push(problem(kind, node, message));
            }
            Record::Epoch(epoch) => {
                let expected_epoch = current_epoch + 1;
                let verifies = epoch.epoch == expected_epoch
                    && current_key.as_ref().is_some_and(|key| epoch_verifies(log_id, epoch, key));
                if verifies {
                    last_signed = Some(index);
                } else {
                    let signer = find_signing_epoch(&all_keys, |key| epoch_verifies(log_id, epoch, key));
                    let (kind, message) = match signer {
                        Some(signer) => (
                            ProblemKind::WrongEpoch,
                            format!(
                                "{} introducing epoch {} is signed by the key of epoch {signer}, but only the key of epoch {current_epoch} may introduce the next epoch",
                                describe(node),
                                epoch.epoch
                            ),
                        ),
                        None if epoch.epoch != expected_epoch => (
                            ProblemKind::WrongEpoch,
                            format!("{} introduces epoch {}, but epoch {expected_epoch} was next", describe(node), epoch.epoch),
                        ),
                        None => (
                            ProblemKind::BadSignature,
                            format!(
                                "{} is not signed by the key of epoch {current_epoch}: the new key or the records before it were changed",
                                describe(node)
                            ),
                        ),
                    };
                    problems.push(problem(kind, node, message));
                }

                if let Some(known) = options.epoch_keys.iter().find(|known| known.epoch == epoch.epoch)
                    && !known.public_key.eq_ignore_ascii_case(&epoch.public_key)
                {
                    let message = format!(
                        "{} introduces key {} for epoch {}, but the known key of that epoch is {}: the key was swapped",
                        describe(node),
                        epoch.public_key,
                        epoch.epoch,
                        known.public_key
                    );
                    problems.push(problem(ProblemKind::KeySwapped, node, message));
                }

                current_epoch = epoch.epoch;
                current_key = parse_key(&epoch.public_key);
                report.epochs.push(EpochPublicKey {
                    epoch: epoch.epoch,
                    public_key: epoch.public_key.clone(),
                    since_seq: epoch.seq,
                });
            }
            _ => {}
        }
    }

    if let Some(known) = options.epoch_keys.iter().find(|known| known.epoch == 0)
        && !known.public_key.eq_ignore_ascii_case(&genesis.public_key)
    {
        let message = format!(
            "genesis seq 0 (line 1) introduces key {}, but the known epoch 0 key is {}: the key was swapped",
            genesis.public_key, known.public_key
        );
        problems.push(problem(ProblemKind::KeySwapped, &nodes[0], message));
    }

    report.last_signed_seq = last_signed.and_then(|index| nodes[index].record.as_ref().ok().map(Record::seq));
    report.unsealed_tail = match last_signed {
        Some(index) => (nodes.len() - index - 1) as u64,
        None => nodes.len() as u64,
    };
}

/// Checks the caller's checkpoints and the expected head, and the gateway
/// signatures of checkpoints recorded in the file.
fn check_checkpoints(nodes: &[Node], options: &VerifyOptions, report: &mut VerifyReport, problems: &mut Vec<Problem>) {
    let mut index_by_seq: HashMap<u64, usize> = HashMap::new();
    for (index, node) in nodes.iter().enumerate() {
        if let Ok(record) = &node.record {
            index_by_seq.entry(record.seq()).or_insert(index);
        }
    }
    let last_seq = nodes.iter().rev().find_map(|node| node.record.as_ref().ok().map(Record::seq));
    let end_line = nodes.last().map_or(1, |node| node.line.number + 1);
    let file_epochs: HashMap<u64, &str> =
        report.epochs.iter().map(|epoch| (epoch.epoch, epoch.public_key.as_str())).collect();

    let mut matched: Vec<u64> = Vec::new();
    for node in nodes {
        let Ok(Record::Checkpoint(recorded)) = &node.record else { continue };
        let checkpoint = &recorded.checkpoint;
        if !options.gateway_keys.is_empty()
            && let Err(reason) = checkpoint.verify_signature(&options.gateway_keys)
        {
            let message = format!("{} holds a gateway checkpoint of seq {} that fails: {reason}", describe(node), checkpoint.head_seq);
            problems.push(problem(ProblemKind::BadSignature, node, message));
            continue;
        }
        let head_matches = index_by_seq
            .get(&checkpoint.head_seq)
            .is_some_and(|&index| nodes[index].hash == checkpoint.head_hash);
        if head_matches && !options.gateway_keys.is_empty() {
            matched.push(checkpoint.head_seq);
        }
    }

    for checkpoint in &options.checkpoints {
        if report.log_id.is_some_and(|log_id| log_id != checkpoint.log_id) {
            continue;
        }
        if !options.gateway_keys.is_empty()
            && let Err(reason) = checkpoint.verify_signature(&options.gateway_keys)
        {
            problems.push(Problem {
                kind: ProblemKind::BadSignature,
                seq: Some(checkpoint.head_seq),
                line: end_line,
                message: format!("the known checkpoint of seq {} is not countersigned by the gateway: {reason}", checkpoint.head_seq),
            });
            continue;
        }

        // Another copy of the file has other epoch keys too; the key is
        // compared only where the countersigned head is in this file.
        let head_differs = index_by_seq
            .get(&checkpoint.head_seq)
            .is_some_and(|&index| nodes[index].hash != checkpoint.head_hash);
        if let Some(known_key) = file_epochs.get(&checkpoint.epoch)
            && !known_key.eq_ignore_ascii_case(&checkpoint.epoch_public_key)
            && !head_differs
        {
            problems.push(Problem {
                kind: ProblemKind::KeySwapped,
                seq: Some(checkpoint.head_seq),
                line: index_by_seq.get(&checkpoint.head_seq).map_or(end_line, |&index| nodes[index].line.number),
                message: format!(
                    "the gateway recorded key {} for epoch {} at seq {}, but the log introduces key {known_key}: the key was swapped",
                    checkpoint.epoch_public_key, checkpoint.epoch, checkpoint.head_seq
                ),
            });
        }

        match index_by_seq.get(&checkpoint.head_seq) {
            Some(&index) if nodes[index].hash == checkpoint.head_hash => matched.push(checkpoint.head_seq),
            Some(&index) => problems.push(Problem {
                kind: ProblemKind::OlderCopy,
                seq: Some(checkpoint.head_seq),
                line: nodes[index].line.number,
                message: format!(
                    "{} differs from the record the gateway countersigned at seq {} (hash {}): the file was replaced by another copy",
                    describe(&nodes[index]),
                    checkpoint.head_seq,
                    checkpoint.head_hash
                ),
            }),
            None if last_seq.is_none_or(|last| checkpoint.head_seq > last) => problems.push(Problem {
                kind: ProblemKind::TruncatedAfterCheckpoint(checkpoint.head_seq),
                seq: Some(checkpoint.head_seq),
                line: end_line,
                message: format!(
                    "the log ends at seq {}, but the gateway countersigned seq {}: the tail was cut off after that checkpoint, or the file is an older copy",
                    last_seq.map_or_else(|| "none".to_owned(), |seq| seq.to_string()),
                    checkpoint.head_seq
                ),
            }),
            None => problems.push(Problem {
                kind: ProblemKind::Missing,
                seq: Some(checkpoint.head_seq),
                line: end_line,
                message: format!("record seq {}, which the gateway countersigned, is missing", checkpoint.head_seq),
            }),
        }
    }

    if let Some(expected) = &options.expected_head {
        match index_by_seq.get(&expected.seq) {
            Some(&index) if nodes[index].hash == expected.hash => {}
            Some(&index) => problems.push(Problem {
                kind: ProblemKind::OlderCopy,
                seq: Some(expected.seq),
                line: nodes[index].line.number,
                message: format!("{} differs from the head recorded in the bundle: this is another copy of the log", describe(&nodes[index])),
            }),
            None => problems.push(Problem {
                kind: ProblemKind::Missing,
                seq: Some(expected.seq),
                line: end_line,
                message: format!(
                    "the bundle was exported at seq {}, but the log ends at seq {}",
                    expected.seq,
                    last_seq.map_or_else(|| "none".to_owned(), |seq| seq.to_string())
                ),
            }),
        }
    }

    report.last_checkpoint = matched.into_iter().max();
}
