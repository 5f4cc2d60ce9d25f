//! Fault injection for the end-to-end tests. A TCP proxy parses the
//! HTTP/1.1 requests passing through, counts the `UploadPart` bytes that
//! reached the store, and breaks chosen requests. A sandbox's presigned URLs
//! name one such proxy in front of its store, and a second proxy can sit in
//! front of its grant API. A test can kill the sandbox and start it again.
//! A small seeded random number generator picks kill instants.
//!
//! The proxy is plain threads over `std::net`, so a test controls every
//! byte without an async runtime. It records methods, paths and part
//! numbers, never a query string, because presigned URLs carry their
//! signature in the query.

use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::{add_signed_in_profile, ferry, sandbox_command, stdout_lines};

mod transfers;

pub use transfers::*;

/// Which requests a [`Rule`] applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `PUT …?partNumber=N&uploadId=…`
    UploadPart,
    /// A `GET` of an object: downloads fetch ranges with presigned `GET`s.
    /// The gateway's `ListParts` (`GET …?uploadId=…`) is not one.
    GetObject,
    /// Any request to the grant API (`/grant/v1/…`).
    Grant,
    /// `POST /grant/v1/uploads`: create an upload.
    GrantCreateUpload,
    /// `POST /grant/v1/uploads/{id}/part-urls`.
    GrantPartUrls,
    /// `GET /grant/v1/uploads/{id}`: the upload's state.
    GrantUploadState,
    /// `POST /grant/v1/uploads/{id}/complete`.
    GrantComplete,
    /// `POST /grant/v1/downloads`.
    GrantDownload,
}

/// Path prefix of the grant API (the gateway's `grant::BASE_PATH`).
pub const GRANT_BASE_PATH: &str = "/grant/v1";

/// What the proxy does to a request a rule picked.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answers itself with this status and optional `Retry-After` value,
    /// after reading and dropping the request body; the store never sees it.
    Respond {
        status: u16,
        retry_after: Option<String>,
    },
    /// Forwards this many body bytes, then closes both connections.
    ResetAfter(u64),
    /// Forwards this many body bytes, then stops reading: no byte moves
    /// until the client gives up and closes the connection.
    StallAfter(u64),
    /// Reads the whole body, forwards nothing and never answers.
    Swallow,
    /// Forwards the whole request, drops the upstream's response and never
    /// responds, as if the server acted on the request and its response
    /// was lost.
    LoseResponse,
    /// Forwards the body at this many bytes per second, and passes the
    /// responses of the connection back at that rate from then on.
    Throttle(u64),
    /// Holds the request this long before forwarding it whole, so that a
    /// presigned URL can expire on the way.
    Delay(Duration),
    /// Waits this long before each 16 KiB of the body and of the
    /// connection's responses from then on: added latency.
    Latency(Duration),
    /// Forwards the request whole, passes this many response bytes back
    /// (head included), then closes both connections.
    ResetResponseAfter(u64),
}

/// Applies `action` to matching requests number `skip + 1` to
/// `skip + times` (counted from 1 per rule).
#[derive(Debug, Clone)]
pub struct Rule {
    pub kind: RequestKind,
    pub skip: u32,
    pub times: u32,
    pub action: Action,
}

/// One request seen by the proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The request target without its query string.
    pub path: String,
    pub part_number: Option<u32>,
    /// Body bytes announced by `Content-Length`.
    pub body_length: u64,
    /// Body bytes passed on to the store.
    pub body_forwarded: u64,
    /// The action applied, when a rule picked this request.
    pub fault: Option<String>,
}

#[derive(Default)]
struct Shared {
    rules: Vec<(Rule, u32)>,
    /// Byte strings of equal length replaced in responses: (from, to).
    rewrite: Option<(Vec<u8>, Vec<u8>)>,
    seen: Vec<Seen>,
    /// Bytes the store sent back to the client: response heads and bodies.
    downstream: u64,
}

/// A proxy listening on loopback that forwards to `upstream`.
pub struct FaultProxy {
    pub address: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stopped: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` with no rules.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds a loopback port");
        FaultProxy::serve(listener, upstream)
    }

    /// Replaces `from` with `to` in every response passed back on
    /// connections accepted from now on. The two must have the same length,
    /// so that no `Content-Length` changes.
    pub fn set_rewrite(&self, from: &str, to: &str) {
        assert_eq!(from.len(), to.len(), "a rewrite keeps the body's length");
        self.shared.lock().unwrap().rewrite = Some((from.into(), to.into()));
    }

    /// Serves on an already bound listener.
    pub fn serve(listener: TcpListener, upstream: SocketAddr) -> FaultProxy {
        let address = listener.local_addr().expect("the listener has an address");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stopped = Arc::new(AtomicBool::new(false));
        let (accept_shared, accept_stopped) = (shared.clone(), stopped.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept_stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = accept_shared.clone();
                std::thread::spawn(move || serve_connection(client, upstream, shared));
            }
        });
        FaultProxy {
            address,
            shared,
            stopped,
        }
    }

    /// Adds a rule; rules are tried in the order they were added.
    pub fn add_rule(&self, rule: Rule) {
        self.shared.lock().unwrap().rules.push((rule, 0));
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        self.shared.lock().unwrap().rules.clear();
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }

    /// `UploadPart` requests seen so far.
    pub fn upload_parts(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|seen| seen.method == "PUT" && seen.part_number.is_some())
            .collect()
    }

    /// Grant API requests seen so far, as (method, path below the API).
    pub fn grant_requests(&self) -> Vec<(String, String)> {
        self.seen()
            .into_iter()
            .filter_map(|seen| {
                let below = seen.path.strip_prefix(GRANT_BASE_PATH)?.to_owned();
                Some((seen.method, below))
            })
            .collect()
    }

    /// Bytes the store sent back through the proxy (heads and bodies).
    pub fn downstream_bytes(&self) -> u64 {
        self.shared.lock().unwrap().downstream
    }

    /// Body bytes of `UploadPart` requests that reached the store.
    pub fn upload_part_bytes(&self) -> u64 {
        self.upload_parts()
            .iter()
            .map(|seen| seen.body_forwarded)
            .sum()
    }

    /// The URL the sandbox names as its store's public endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.address);
    }
}

/// The head of one HTTP/1.1 request: its bytes and what the proxy needs.
struct Head {
    bytes: Vec<u8>,
    method: String,
    /// The target without its query string.
    path: String,
    part_number: Option<u32>,
    /// True when the query names an upload id (multipart requests).
    multipart: bool,
    content_length: u64,
    chunked: bool,
}

/// Reads one request head, or `None` at the end of the connection.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<Head> {
    let mut bytes = Vec::new();
    loop {
        let mut line = Vec::new();
        let read = reader.read_until(b'\n', &mut line).ok()?;
        if read == 0 {
            return None;
        }
        bytes.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            if bytes.len() == line.len() {
                // A stray empty line between requests.
                bytes.clear();
                continue;
            }
            break;
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut lines = text.lines();
    let request_line = lines.next()?;
    let mut words = request_line.split_whitespace();
    let method = words.next()?.to_owned();
    let target = words.next().unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default().to_owned();
    let part_number = target
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("partNumber="))
        .and_then(|value| value.parse().ok());
    let multipart = target.contains("uploadId=");
    let mut content_length = 0;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            content_length = value.parse().unwrap_or(0);
        } else if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    Some(Head {
        bytes,
        method,
        path,
        part_number,
        multipart,
        content_length,
        chunked,
    })
}

fn matches(kind: RequestKind, head: &Head) -> bool {
    let grant_path = head.path.strip_prefix(GRANT_BASE_PATH);
    let upload_path = grant_path.and_then(|path| path.strip_prefix("/uploads/"));
    let method = head.method.as_str();
    match kind {
        RequestKind::UploadPart => method == "PUT" && head.part_number.is_some(),
        RequestKind::GetObject => method == "GET" && !head.multipart && grant_path.is_none(),
        RequestKind::Grant => grant_path.is_some(),
        RequestKind::GrantCreateUpload => method == "POST" && grant_path == Some("/uploads"),
        RequestKind::GrantPartUrls => {
            method == "POST" && upload_path.is_some_and(|path| path.ends_with("/part-urls"))
        }
        RequestKind::GrantUploadState => {
            method == "GET" && upload_path.is_some_and(|path| !path.contains('/'))
        }
        RequestKind::GrantComplete => {
            method == "POST" && upload_path.is_some_and(|path| path.ends_with("/complete"))
        }
        RequestKind::GrantDownload => method == "POST" && grant_path == Some("/downloads"),
    }
}

/// Picks the action of the first rule whose turn it is for this request.
fn pick(shared: &Mutex<Shared>, head: &Head) -> Option<Action> {
    let mut shared = shared.lock().unwrap();
    for (rule, count) in shared.rules.iter_mut() {
        if !matches(rule.kind, head) {
            continue;
        }
        *count += 1;
        if *count > rule.skip && *count <= rule.skip.saturating_add(rule.times) {
            return Some(rule.action.clone());
        }
    }
    None
}

fn reason(status: u16) -> &'static str {
    match status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Copies `length` body bytes from `reader` to `writer` (when given),
/// stopping after `limit` bytes; paced at `rate` bytes per second when
/// given. Returns the bytes copied.
fn copy_body(
    reader: &mut BufReader<TcpStream>,
    mut writer: Option<&mut TcpStream>,
    length: u64,
    limit: u64,
    rate: Option<u64>,
) -> std::io::Result<u64> {
    let chunk = match rate {
        Some(rate) => (rate / 20).clamp(1, 64 * 1024) as usize,
        None => 64 * 1024,
    };
    let mut buffer = vec![0u8; chunk];
    let mut copied = 0u64;
    let goal = length.min(limit);
    while copied < goal {
        let want = ((goal - copied) as usize).min(buffer.len());
        let read = reader.read(&mut buffer[..want])?;
        if read == 0 {
            break;
        }
        if let Some(writer) = writer.as_deref_mut() {
            writer.write_all(&buffer[..read])?;
        }
        copied += read as u64;
        if let Some(rate) = rate {
            std::thread::sleep(Duration::from_secs_f64(read as f64 / rate as f64));
        }
    }
    Ok(copied)
}

fn serve_connection(client: TcpStream, upstream_address: SocketAddr, shared: Arc<Mutex<Shared>>) {
    let mut reader = BufReader::new(client.try_clone().expect("the socket clones"));
    let mut client_writer = client;
    let mut upstream: Option<TcpStream> = None;
    let pacing = Arc::new(Pacing::default());

    while let Some(head) = read_head(&mut reader) {
        let action = pick(&shared, &head);
        let index = {
            let mut shared = shared.lock().unwrap();
            shared.seen.push(Seen {
                method: head.method.clone(),
                path: head.path.clone(),
                part_number: head.part_number,
                body_length: head.content_length,
                body_forwarded: 0,
                fault: action.as_ref().map(|action| format!("{action:?}")),
            });
            shared.seen.len() - 1
        };
        let record = |forwarded: u64| shared.lock().unwrap().seen[index].body_forwarded = forwarded;

        if let Some(Action::Respond {
            status,
            retry_after,
        }) = &action
        {
            let _ = copy_body(&mut reader, None, head.content_length, u64::MAX, None);
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                 <Message>injected {status}</Message></Error>"
            );
            let mut response = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n",
                reason(*status),
                body.len()
            );
            if let Some(value) = retry_after {
                response.push_str(&format!("Retry-After: {value}\r\n"));
            }
            response.push_str("\r\n");
            response.push_str(&body);
            let _ = client_writer.write_all(response.as_bytes());
            let _ = client_writer.shutdown(Shutdown::Both);
            break;
        }

        if let Some(Action::LoseResponse) = &action {
            lose_response(&mut reader, &head, upstream_address, &record);
            break;
        }

        if upstream.is_none() {
            let Ok(stream) = TcpStream::connect(upstream_address) else {
                break;
            };
            let from_upstream = stream.try_clone().expect("the socket clones");
            let to_client = client_writer.try_clone().expect("the socket clones");
            let (counter, pacing) = (shared.clone(), pacing.clone());
            std::thread::spawn(move || pass_responses(from_upstream, to_client, counter, pacing));
            upstream = Some(stream);
        }
        let stream = upstream.as_mut().expect("connected above");
        if head.chunked {
            // Chunked bodies are not parsed: pass the rest through raw.
            let _ = stream.write_all(&head.bytes);
            let _ = std::io::copy(&mut reader, stream);
            break;
        }
        match &action {
            Some(Action::Throttle(rate)) => pacing.rate.store(*rate, Ordering::SeqCst),
            Some(Action::Latency(delay)) => pacing
                .chunk_delay_micros
                .store(delay.as_micros() as u64, Ordering::SeqCst),
            Some(Action::ResetResponseAfter(limit)) => {
                pacing.reset_after.store(*limit, Ordering::SeqCst)
            }
            _ => {}
        }
        if let Some(Action::Delay(delay)) = &action {
            std::thread::sleep(*delay);
        }
        if stream.write_all(&head.bytes).is_err() {
            break;
        }
        match action {
            None
            | Some(Action::Respond { .. })
            | Some(Action::Delay(_))
            | Some(Action::ResetResponseAfter(_)) => {
                let copied = copy_body(
                    &mut reader,
                    Some(stream),
                    head.content_length,
                    u64::MAX,
                    None,
                );
                record(copied.as_ref().copied().unwrap_or(0));
                if copied.ok() != Some(head.content_length) {
                    break;
                }
            }
            Some(Action::Latency(delay)) => {
                let mut copied = 0;
                while copied < head.content_length {
                    std::thread::sleep(delay);
                    let chunk = (head.content_length - copied).min(LATENCY_CHUNK as u64);
                    match copy_body(&mut reader, Some(stream), chunk, u64::MAX, None) {
                        Ok(0) | Err(_) => break,
                        Ok(moved) => copied += moved,
                    }
                }
                record(copied);
                if copied != head.content_length {
                    break;
                }
            }
            Some(Action::Throttle(rate)) => {
                let copied = copy_body(
                    &mut reader,
                    Some(stream),
                    head.content_length,
                    u64::MAX,
                    Some(rate),
                );
                record(copied.as_ref().copied().unwrap_or(0));
                if copied.ok() != Some(head.content_length) {
                    break;
                }
            }
            Some(Action::ResetAfter(limit)) => {
                let copied = copy_body(&mut reader, Some(stream), head.content_length, limit, None);
                record(copied.unwrap_or(0));
                let _ = stream.shutdown(Shutdown::Both);
                let _ = client_writer.shutdown(Shutdown::Both);
                break;
            }
            Some(Action::StallAfter(limit)) => {
                let copied = copy_body(&mut reader, Some(stream), head.content_length, limit, None);
                record(copied.unwrap_or(0));
                // Hold both connections without reading: no byte moves
                // until the client's idle timeout closes its side.
                std::thread::sleep(Duration::from_secs(90));
                let _ = stream.shutdown(Shutdown::Both);
                break;
            }
            Some(Action::LoseResponse) => unreachable!("handled before connecting"),
            Some(Action::Swallow) => {
                let _ = copy_body(&mut reader, None, head.content_length, u64::MAX, None);
                // Never answer; wait for the client to give up.
                let mut sink = [0u8; 4096];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                let _ = stream.shutdown(Shutdown::Both);
                break;
            }
        }
    }
    if let Some(stream) = upstream {
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// Sends one request whole to the upstream on a connection of its own,
/// reads and drops the response, and keeps the client waiting until it
/// gives up and closes its side.
fn lose_response(
    reader: &mut BufReader<TcpStream>,
    head: &Head,
    upstream_address: SocketAddr,
    record: &dyn Fn(u64),
) {
    let Ok(mut stream) = TcpStream::connect(upstream_address) else {
        return;
    };
    if stream.write_all(&head.bytes).is_err() {
        return;
    }
    let copied = copy_body(
        reader,
        Some(&mut stream),
        head.content_length,
        u64::MAX,
        None,
    );
    record(copied.unwrap_or(0));
    std::thread::spawn(move || {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    });
    let mut sink = [0u8; 4096];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
}

/// Chunk size of [`Action::Latency`].
const LATENCY_CHUNK: usize = 16 * 1024;

/// How the responses of one connection are passed back, set by the
/// actions of its requests.
struct Pacing {
    /// Bytes per second; 0 is unlimited.
    rate: AtomicU64,
    /// Wait before each chunk, in microseconds; 0 is none.
    chunk_delay_micros: AtomicU64,
    /// Response bytes still passed before both connections close;
    /// `u64::MAX` is unlimited.
    reset_after: AtomicU64,
}

impl Default for Pacing {
    fn default() -> Pacing {
        Pacing {
            rate: AtomicU64::new(0),
            chunk_delay_micros: AtomicU64::new(0),
            reset_after: AtomicU64::new(u64::MAX),
        }
    }
}

/// Copies the upstream's responses to the client, counting the bytes,
/// applying the proxy's rewrite and the connection's pacing, until either
/// side closes.
fn pass_responses(
    mut from_upstream: TcpStream,
    mut to_client: TcpStream,
    shared: Arc<Mutex<Shared>>,
    pacing: Arc<Pacing>,
) {
    let rewrite = shared.lock().unwrap().rewrite.clone();
    let mut buffer = vec![0u8; 64 * 1024];
    // Bytes held back because they may begin a match that the next read
    // completes. Only a proper prefix of `from` is held, so a response that
    // ends is always passed on whole.
    let mut pending = Vec::new();
    loop {
        let paced = pacing.rate.load(Ordering::SeqCst);
        let chunk_delay = pacing.chunk_delay_micros.load(Ordering::SeqCst);
        let reset_after = pacing.reset_after.load(Ordering::SeqCst);
        let mut want = match paced {
            0 => buffer.len(),
            paced => (paced / 20).clamp(1, buffer.len() as u64) as usize,
        };
        if chunk_delay > 0 {
            want = want.min(LATENCY_CHUNK);
            std::thread::sleep(Duration::from_micros(chunk_delay));
        }
        if reset_after == 0 {
            let _ = from_upstream.shutdown(Shutdown::Both);
            let _ = to_client.shutdown(Shutdown::Both);
            return;
        }
        want = want.min(reset_after.min(usize::MAX as u64) as usize);
        let read = match from_upstream.read(&mut buffer[..want]) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if reset_after != u64::MAX {
            pacing
                .reset_after
                .store(reset_after - read as u64, Ordering::SeqCst);
        }
        shared.lock().unwrap().downstream += read as u64;
        if paced > 0 {
            std::thread::sleep(Duration::from_secs_f64(read as f64 / paced as f64));
        }
        let Some((from, to)) = &rewrite else {
            if to_client.write_all(&buffer[..read]).is_err() {
                break;
            }
            continue;
        };
        pending.extend_from_slice(&buffer[..read]);
        replace_all(&mut pending, from, to);
        let held = held_back(&pending, from);
        let ready = pending.len() - held;
        if to_client.write_all(&pending[..ready]).is_err() {
            break;
        }
        pending.drain(..ready);
    }
    let _ = to_client.write_all(&pending);
    let _ = to_client.shutdown(Shutdown::Write);
}

/// Replaces every `from` in `bytes` with `to`, which has the same length.
fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    let mut start = 0;
    while start + from.len() <= bytes.len() {
        if &bytes[start..start + from.len()] == from {
            bytes[start..start + from.len()].copy_from_slice(to);
            start += from.len();
        } else {
            start += 1;
        }
    }
}

/// Returns the length of the longest suffix of `bytes` that is a proper
/// prefix of `pattern`.
fn held_back(bytes: &[u8], pattern: &[u8]) -> usize {
    let longest = pattern.len().saturating_sub(1).min(bytes.len());
    (1..=longest)
        .rev()
        .find(|&length| bytes[bytes.len() - length..] == pattern[..length])
        .unwrap_or(0)
}

/// Credentials and address of the sandbox's embedded store, as printed by
/// `ferry-gateway sandbox`.
#[derive(Debug, Clone, Default)]
pub struct StoreAccess {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// A sandbox whose gateway and store listen on ports the test chose, with
/// a [`FaultProxy`] as the store's public endpoint, and a `ferry` home signed
/// in to it as imaging staff. The gateway can be killed and started again
/// on the same data folder and ports.
pub struct FaultSandbox {
    pub home: tempfile::TempDir,
    child: Child,
    /// The gateway's own address, which its URLs name.
    pub gateway_address: SocketAddr,
    pub fhir_url: String,
    pub profile: String,
    pub proxy: FaultProxy,
    /// A proxy between `ferry` and the gateway's grant API, when the
    /// sandbox was started with [`FaultSandbox::start_with_grant_proxy`].
    pub grant_proxy: Option<FaultProxy>,
    /// The store itself, bypassing the proxy.
    pub store: StoreAccess,
    pub data_dir: std::path::PathBuf,
}

/// Extra lines for `[policy.lifetimes]` in `grant.toml`, such as
/// `part_url = 3`.
#[derive(Debug, Clone, Default)]
pub struct SandboxSettings {
    pub lifetimes: Vec<String>,
}

/// Returns a loopback address with a port that was free a moment ago.
fn free_loopback_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
}

/// What a started `ferry-gateway sandbox` printed.
struct Started {
    child: Child,
    fhir_url: String,
    store: StoreAccess,
}

/// Starts `ferry-gateway sandbox` on `listen` and reads its URLs and store
/// keys from stdout.
fn start_gateway(data_dir: &Path, listen: SocketAddr) -> Started {
    let mut child = sandbox_command(&listen.to_string(), data_dir, "tech-okafor")
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("ferry-gateway starts");
    let receiver = stdout_lines(&mut child);
    let mut fhir_url = None;
    let mut store = StoreAccess::default();
    while fhir_url.is_none() || store.secret_access_key.is_empty() {
        let line = receiver
            .recv_timeout(Duration::from_secs(60))
            .expect("the sandbox prints its URLs and store keys within 60 s");
        let Some((name, value)) = line.split_once(": ") else {
            continue;
        };
        let value = value.trim().to_owned();
        match name.trim() {
            "fhir" => fhir_url = Some(value),
            "store-region" => store.region = value,
            "store-bucket" => store.bucket = value,
            "store-access-key-id" => store.access_key_id = value,
            "store-secret-access-key" => store.secret_access_key = value,
            _ => {}
        }
    }
    Started {
        child,
        fhir_url: fhir_url.expect("checked above"),
        store,
    }
}

/// Returns the start of the SMART configuration's grant API entry, as the
/// sandbox serialises it, for a gateway at `address`.
fn grant_api_field(address: &str) -> String {
    format!("\"ferry_grant_api\":\"http://{address}")
}

/// Replaces `from` with `to` in a text file.
fn replace_in_file(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("{} is readable: {error}", path.display()));
    assert!(
        text.contains(from),
        "{} names {from}: {text}",
        path.display()
    );
    std::fs::write(path, text.replace(from, to)).expect("the file is rewritten");
}

impl FaultSandbox {
    /// Starts the sandbox and the store's proxy, and signs in as `tech-okafor`.
    pub fn start(settings: &SandboxSettings) -> FaultSandbox {
        FaultSandbox::start_inner(settings, false)
    }

    /// Starts the sandbox as [`FaultSandbox::start`] does, plus a proxy in
    /// front of the gateway that `ferry` uses for discovery, FHIR and the
    /// grant API. Sign-in and token refresh still go to the gateway itself.
    ///
    /// The sandbox names its own address in every URL, and the `aud` of an
    /// authorization request must match it, so `ferry` signs in directly.
    /// The profile and its session file are then pointed at the proxy, and
    /// the proxy rewrites the `ferry_grant_api` URL in the SMART
    /// configuration to name itself.
    pub fn start_with_grant_proxy(settings: &SandboxSettings) -> FaultSandbox {
        FaultSandbox::start_inner(settings, true)
    }

    fn start_inner(settings: &SandboxSettings, grant_proxy: bool) -> FaultSandbox {
        let home = tempfile::tempdir().expect("a temporary folder");
        let data_dir = home.path().join("gateway");
        std::fs::create_dir_all(&data_dir).expect("the gateway folder is created");

        // The ports are bound and released, then named in grant.toml and on
        // the command line, so a restarted gateway takes the same ones.
        let store_address = free_loopback_address();
        let gateway_address = free_loopback_address();
        let proxy = FaultProxy::start(store_address);
        let mut toml = format!(
            "[grant]\nstore_listen = \"{store_address}\"\nstore_public_endpoint = \"{}\"\n",
            proxy.url()
        );
        if !settings.lifetimes.is_empty() {
            toml.push_str("\n[policy.lifetimes]\n");
            for line in &settings.lifetimes {
                toml.push_str(line);
                toml.push('\n');
            }
        }
        std::fs::write(data_dir.join("grant.toml"), toml).expect("grant.toml is written");

        let Started {
            child,
            fhir_url,
            mut store,
        } = start_gateway(&data_dir, gateway_address);
        store.endpoint = format!("http://{store_address}");

        let profile = add_signed_in_profile(home.path(), "fault", &fhir_url, "imaging-staff");

        let grant_proxy = grant_proxy.then(|| {
            let proxy = FaultProxy::start(gateway_address);
            let (gateway, proxied) = (gateway_address.to_string(), proxy.address.to_string());
            proxy.set_rewrite(&grant_api_field(&gateway), &grant_api_field(&proxied));
            let config = home.path().join("config").join("profiles.toml");
            replace_in_file(&config, &gateway, &proxied);
            let session = home
                .path()
                .join("data")
                .join("profiles")
                .join(&profile)
                .join("session.json");
            replace_in_file(&session, &gateway, &proxied);
            proxy
        });

        FaultSandbox {
            home,
            child,
            gateway_address,
            fhir_url,
            profile,
            proxy,
            grant_proxy,
            store,
            data_dir,
        }
    }

    /// Kills the gateway with SIGKILL, waits `downtime`, and starts it again
    /// on the same data folder and ports. Its store goes down with it.
    pub fn restart_gateway(&mut self, downtime: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(downtime);
        let started = start_gateway(&self.data_dir, self.gateway_address);
        assert_eq!(
            started.fhir_url, self.fhir_url,
            "the restarted gateway has the same URLs"
        );
        self.child = started.child;
    }

    /// Returns the gateway's revocation endpoint (RFC 7009).
    pub fn revocation_url(&self) -> String {
        format!("http://{}/revoke", self.gateway_address)
    }

    /// A `ferry --profile NAME` command in this home.
    pub fn ferry(&self) -> Command {
        let mut command = ferry(self.home.path());
        command.args(["--profile", &self.profile]);
        command
    }

    /// Runs `aws s3api ARGS… --bucket BUCKET` against the store directly and
    /// returns its JSON output, or `None` when the aws CLI is missing.
    pub fn s3api(&self, args: &[&str]) -> Option<serde_json::Value> {
        let output = Command::new("aws")
            .args([
                "--endpoint-url",
                &self.store.endpoint,
                "--output",
                "json",
                "s3api",
            ])
            .args(args)
            .args(["--bucket", &self.store.bucket])
            .env("AWS_ACCESS_KEY_ID", &self.store.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.store.secret_access_key)
            .env("AWS_DEFAULT_REGION", &self.store.region)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .output()
            .ok()?;
        assert!(
            output.status.success(),
            "aws s3api {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if output.stdout.iter().all(u8::is_ascii_whitespace) {
            return Some(serde_json::json!({}));
        }
        Some(serde_json::from_slice(&output.stdout).expect("aws prints JSON"))
    }

    /// Objects in the store's bucket as (key, size).
    pub fn objects(&self) -> Option<Vec<(String, u64)>> {
        let listed = self.s3api(&["list-objects-v2"])?;
        Some(
            listed["Contents"]
                .as_array()
                .map(|contents| {
                    contents
                        .iter()
                        .map(|object| {
                            (
                                object["Key"].as_str().unwrap_or_default().to_owned(),
                                object["Size"].as_u64().unwrap_or(0),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// Multipart uploads still open in the store.
    pub fn open_multipart_uploads(&self) -> Option<usize> {
        let listed = self.s3api(&["list-multipart-uploads"])?;
        Some(listed["Uploads"].as_array().map_or(0, Vec::len))
    }
}

impl Drop for FaultSandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when the aws CLI runs; the store checks need it.
pub fn has_aws_cli() -> bool {
    Command::new("aws")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// xorshift64*: a seeded generator, so a failing run repeats with its seed.
pub struct SeededRng(u64);

impl SeededRng {
    /// Uses `FERRY_FAULT_SEED` when set, else the clock; prints the seed.
    pub fn from_env(label: &str) -> SeededRng {
        let seed = std::env::var("FERRY_FAULT_SEED")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{label}: FERRY_FAULT_SEED={seed}");
        SeededRng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// True when the long variants run (`FERRY_LONG_TESTS=1`).
pub fn long_tests() -> bool {
    std::env::var("FERRY_LONG_TESTS").is_ok_and(|value| value == "1")
}

/// Prints one parseable figures line:
/// `FERRY-FAULT-FIGURES kind=… runs=… transfers=… bytes_moved=… bytes_resent=… lost=… corrupted=…`.
pub fn print_figures(kind: &str, figures: &Figures) {
    println!(
        "FERRY-FAULT-FIGURES kind={kind} runs={} transfers={} bytes_moved={} bytes_resent={} lost={} corrupted={}",
        figures.runs,
        figures.transfers,
        figures.bytes_moved,
        figures.bytes_resent,
        figures.lost,
        figures.corrupted
    );
}

/// What a fault test measured.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub runs: u64,
    pub transfers: u64,
    pub bytes_moved: u64,
    pub bytes_resent: u64,
    pub lost: u64,
    pub corrupted: u64,
}

/// Free space a fault test needs in the temporary folder: sources, the
/// store's copies, downloads and the gateway's database.
const NEEDED_FREE_BYTES: u64 = 1024 * 1024 * 1024;

/// Returns true (and prints why) when no Secret Service is reachable or the
/// temporary folder has less than 1 GiB free.
pub fn skip_without_credential_store() -> bool {
    if !crate::cli::has_credential_store() {
        eprintln!(
            "skipped: no Secret Service (DBUS_SESSION_BUS_ADDRESS is unset); run the tests with scripts/test"
        );
        return true;
    }
    let temp = std::env::temp_dir();
    if crate::cli::free_bytes(&temp).is_some_and(|free| free < NEEDED_FREE_BYTES) {
        eprintln!(
            "skipped: less than {} MiB free in {}",
            NEEDED_FREE_BYTES / (1024 * 1024),
            temp.display()
        );
        return true;
    }
    false
}

/// Files in `folder` whose names mark an unfinished download.
pub fn partial_files(folder: &Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".ferry-part"))
                .collect()
        })
        .unwrap_or_default()
}
