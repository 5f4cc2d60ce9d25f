//! The sandbox gateway started in this process on 127.0.0.1, a clinician
//! signed in to it through the real authorization code + PKCE flow
//! (`--auto-login` skips the sign-in page), and a TCP proxy between the
//! clients and the embedded store that the tests slow down, cut, and read.
//!
//! The sandbox's `grant.toml` names the proxy as the store's public
//! endpoint, so presigned URLs point at the proxy and the `Host` they sign
//! is the one the store receives through it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::grant::GrantClient;
use ferry_core::http::{HttpOptions, build_client};
use ferry_core::login::{LoginOptions, ProfileContext, RedirectFollower, Session, SignInKind, login};
use ferry_core::profile::{FerryDirs, Profile};
use ferry_core::secrets::MemorySecretStore;
use ferry_core::transfer::{Engine, EngineOptions, RetryPolicy};
use ferry_gateway::{AutoLogin, SandboxConfig, SandboxHandle, start_sandbox};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const PATIENT: &str = "pat-001";
pub const MIB: u64 = 1024 * 1024;
/// The smallest part S3 allows (except the last), and the tests' part size.
pub const PART_SIZE: u64 = 5 * MIB;

/// Settings of one sandbox.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// Lifetime of presigned `UploadPart` URLs, in seconds.
    pub part_url_seconds: Option<u64>,
    /// Lifetime of presigned download URLs, in seconds.
    pub download_url_seconds: Option<u64>,
    /// Put a [`StoreProxy`] between clients and the store.
    pub proxy: bool,
}

pub struct Fixture {
    pub sandbox: SandboxHandle,
    pub session: Session,
    pub grants: GrantClient,
    pub proxy: Option<StoreProxy>,
    pub folder: tempfile::TempDir,
}

impl Fixture {
    pub async fn start(options: SandboxOptions) -> Fixture {
        let folder = tempfile::tempdir().unwrap();
        let data_dir = folder.path().join("sandbox");
        std::fs::create_dir_all(&data_dir).unwrap();

        let mut grant_toml = String::from("[grant]\n");
        let proxy = if options.proxy {
            let store_port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let store_address: SocketAddr = ([127, 0, 0, 1], store_port).into();
            let proxy = StoreProxy::start(store_address).await;
            grant_toml.push_str(&format!(
                "store_listen = \"{store_address}\"\nstore_public_endpoint = \"http://{}\"\n",
                proxy.address
            ));
            Some(proxy)
        } else {
            None
        };
        grant_toml.push_str("[policy.lifetimes]\n");
        if let Some(seconds) = options.part_url_seconds {
            grant_toml.push_str(&format!("part_url = {seconds}\n"));
        }
        if let Some(seconds) = options.download_url_seconds {
            grant_toml.push_str(&format!("download_url = {seconds}\n"));
        }
        std::fs::write(
            data_dir.join(ferry_gateway::sandbox_grant::GRANT_CONFIG_FILE),
            grant_toml,
        )
        .unwrap();

        let sandbox = start_sandbox(SandboxConfig {
            data_dir,
            listen: "127.0.0.1:0".parse().unwrap(),
            auto_login: Some(format!("dr-rivera:{PATIENT}").parse::<AutoLogin>().unwrap()),
        })
        .await
        .expect("the sandbox starts");

        let context = ProfileContext {
            profile: Profile::new("transfer-test", &sandbox.urls.fhir, None).unwrap(),
            dirs: FerryDirs::under(&folder.path().join("ferry")),
            store: Arc::new(MemorySecretStore::default()),
            http: build_client(&HttpOptions::default()).unwrap(),
        };
        let login_options = LoginOptions {
            kind: SignInKind::Clinician,
            browser: Arc::new(RedirectFollower::new()),
            paste: None,
            timeout: Duration::from_secs(60),
            prompt: Arc::new(|_| {}),
        };
        let session = login(&context, login_options)
            .await
            .expect("sign-in through the sandbox");
        let grants = GrantClient::new(
            session.grant_api().unwrap(),
            context.http.clone(),
            Arc::new(session.clone()),
        );
        Fixture {
            sandbox,
            session,
            grants,
            proxy,
            folder,
        }
    }

    pub fn proxy(&self) -> &StoreProxy {
        self.proxy.as_ref().expect("the fixture was started with a proxy")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.folder.path().join(name)
    }

    /// An engine over the journal `name` in the fixture's folder.
    pub fn engine(&self, name: &str, options: EngineOptions) -> Engine {
        Engine::new(self.path(name), self.grants.clone(), options).unwrap()
    }

    /// The `outcomeDesc` of every audit event recorded for `correlation_id`.
    pub fn audit_details(&self, correlation_id: &str) -> Vec<String> {
        let grant = self
            .sandbox
            .state
            .grant
            .as_ref()
            .expect("the sandbox runs the grant API");
        grant
            .service
            .audit
            .events_for(correlation_id)
            .unwrap()
            .iter()
            .filter_map(|event| event["outcomeDesc"].as_str().map(str::to_owned))
            .collect()
    }
}

/// Engine settings for the tests: 5 MiB parts and ranges, and retries
/// that back off to at most 2 s so a restored network is noticed soon.
pub fn test_options() -> EngineOptions {
    EngineOptions {
        part_size: PART_SIZE,
        range_size: PART_SIZE,
        retry: RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            ..RetryPolicy::default()
        },
        ..EngineOptions::default()
    }
}

/// Bytes that differ from part to part, so a part sent at the wrong
/// offset changes the file's SHA-256.
pub fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|index| (index % 251) as u8 ^ (index >> 20) as u8)
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> String {
    use std::io::Read;
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer).unwrap();
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    hex::encode(hasher.finalize())
}

/// Free bytes on the file system that holds `path`, from `df`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let output = std::process::Command::new("df").arg("-Pk").arg(path).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let line = text.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

/// Waits until `condition` holds, polling every 10 ms, or panics after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A presigned request as the proxy saw it: method and part number only
/// (the signature stays out of test output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub part_number: Option<u32>,
}

struct ProxyShared {
    target: SocketAddr,
    online: watch::Sender<bool>,
    /// Bytes per second per connection and direction; 0 for no limit.
    rate: AtomicU64,
    /// New connections that wait `delay` before their first byte is forwarded.
    delayed_connections: AtomicU32,
    delay: Mutex<Duration>,
    /// Time each chunk from the target waits before it is forwarded.
    response_hold: Mutex<Duration>,
    /// Byte strings that must never reach the store, and how often they did.
    forbidden: Mutex<Vec<Vec<u8>>>,
    forbidden_seen: AtomicU32,
    requests: Mutex<Vec<SeenRequest>>,
    bytes_to_store: AtomicU64,
    refused: AtomicU32,
}

/// A TCP proxy in front of the store. It forwards bytes unchanged (so the
/// `Host` header the URL's signature covers arrives as signed), and reads
/// the client-to-store stream for request lines and forbidden strings.
pub struct StoreProxy {
    pub address: SocketAddr,
    shared: Arc<ProxyShared>,
}

impl StoreProxy {
    /// Starts a proxy to `target`, which may also be the gateway's grant API.
    pub async fn start(target: SocketAddr) -> StoreProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(ProxyShared {
            target,
            online: watch::channel(true).0,
            rate: AtomicU64::new(0),
            delayed_connections: AtomicU32::new(0),
            delay: Mutex::new(Duration::ZERO),
            response_hold: Mutex::new(Duration::ZERO),
            forbidden: Mutex::new(vec![b"authorization: bearer".to_vec()]),
            forbidden_seen: AtomicU32::new(0),
            requests: Mutex::new(Vec::new()),
            bytes_to_store: AtomicU64::new(0),
            refused: AtomicU32::new(0),
        });
        let accepting = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !*accepting.online.borrow() {
                    accepting.refused.fetch_add(1, Ordering::Relaxed);
                    drop(client);
                    continue;
                }
                tokio::spawn(proxy_connection(accepting.clone(), client));
            }
        });
        StoreProxy { address, shared }
    }

    /// Cuts every open connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        self.shared.online.send_replace(false);
    }

    pub fn restore(&self) {
        self.shared.online.send_replace(true);
    }

    /// Limits each connection to `bytes_per_second` in each direction; 0 lifts the limit.
    pub fn throttle(&self, bytes_per_second: u64) {
        self.shared.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Holds the first bytes of the next `connections` connections for `delay`.
    pub fn delay_connections(&self, connections: u32, delay: Duration) {
        *self.shared.delay.lock().unwrap() = delay;
        self.shared.delayed_connections.store(connections, Ordering::Relaxed);
    }

    /// Holds every chunk of every response for `hold` before forwarding it.
    pub fn hold_responses(&self, hold: Duration) {
        *self.shared.response_hold.lock().unwrap() = hold;
    }

    /// Adds a byte string that must never reach the store.
    pub fn forbid(&self, text: &str) {
        self.shared.forbidden.lock().unwrap().push(text.as_bytes().to_vec());
    }

    /// How often a forbidden string went to the store.
    pub fn forbidden_seen(&self) -> u32 {
        self.shared.forbidden_seen.load(Ordering::Relaxed)
    }

    /// Presigned requests seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn clear_requests(&self) {
        self.shared.requests.lock().unwrap().clear();
    }

    pub fn bytes_to_store(&self) -> u64 {
        self.shared.bytes_to_store.load(Ordering::Relaxed)
    }

    /// Connections refused while the proxy was cut.
    pub fn refused(&self) -> u32 {
        self.shared.refused.load(Ordering::Relaxed)
    }
}

async fn proxy_connection(shared: Arc<ProxyShared>, client: TcpStream) {
    let Ok(store) = TcpStream::connect(shared.target).await else {
        return;
    };
    let delayed = shared
        .delayed_connections
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1))
        .is_ok();
    let delay = if delayed {
        *shared.delay.lock().unwrap()
    } else {
        Duration::ZERO
    };
    let (client_read, client_write) = client.into_split();
    let (store_read, store_write) = store.into_split();
    let mut online = shared.online.subscribe();
    let upstream = pump(shared.clone(), client_read, store_write, delay, true);
    let downstream = pump(shared.clone(), store_read, client_write, Duration::ZERO, false);
    tokio::select! {
        _ = async { tokio::join!(upstream, downstream) } => {}
        _ = online.wait_for(|online| !*online) => {}
    }
}

async fn pump(
    shared: Arc<ProxyShared>,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    to_store: bool,
) {
    let mut buffer = vec![0; 64 * 1024];
    let mut scanner = Scanner::default();
    let mut first = true;
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if first && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        first = false;
        let hold = if to_store { Duration::ZERO } else { *shared.response_hold.lock().unwrap() };
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
        if to_store {
            shared.bytes_to_store.fetch_add(read as u64, Ordering::Relaxed);
            scanner.scan(&shared, &buffer[..read]);
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
        let rate = shared.rate.load(Ordering::Relaxed);
        if rate > 0 {
            tokio::time::sleep(Duration::from_secs_f64(read as f64 / rate as f64)).await;
        }
    }
    let _ = to.shutdown().await;
}

/// Reads HTTP/1.1 requests in the client-to-store direction: records each
/// presigned request line and checks each request head for forbidden
/// strings, skipping bodies by their `Content-Length`.
#[derive(Default)]
struct Scanner {
    head: Vec<u8>,
    body_left: u64,
}

/// A request head longer than this is not HTTP; the scanner gives up on it.
const MAX_HEAD: usize = 64 * 1024;

impl Scanner {
    fn scan(&mut self, shared: &ProxyShared, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = bytes.len().min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            let searched_from = self.head.len().saturating_sub(3);
            self.head.extend_from_slice(bytes);
            let Some(end) = find(&self.head[searched_from..], b"\r\n\r\n").map(|at| searched_from + at + 4) else {
                if self.head.len() > MAX_HEAD {
                    self.head.clear();
                }
                return;
            };
            let rest_start = bytes.len() - (self.head.len() - end);
            let head = String::from_utf8_lossy(&self.head[..end]).into_owned();
            self.head.clear();
            self.inspect(shared, &head);
            bytes = &bytes[rest_start..];
        }
    }

    fn inspect(&mut self, shared: &ProxyShared, head: &str) {
        let lower = head.to_ascii_lowercase();
        for needle in shared.forbidden.lock().unwrap().iter() {
            let needle = String::from_utf8_lossy(needle).to_ascii_lowercase();
            shared
                .forbidden_seen
                .fetch_add(lower.matches(&needle).count() as u32, Ordering::Relaxed);
        }
        self.body_left = lower
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);

        let line = head.lines().next().unwrap_or_default();
        if !line.contains("X-Amz-Signature=") {
            return;
        }
        let mut words = line.split(' ');
        let method = words.next().unwrap_or_default().to_owned();
        let part_number = words
            .next()
            .unwrap_or_default()
            .split(['?', '&'])
            .find_map(|pair| pair.strip_prefix("partNumber="))
            .and_then(|number| number.parse().ok());
        shared
            .requests
            .lock()
            .unwrap()
            .push(SeenRequest { method, part_number });
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
