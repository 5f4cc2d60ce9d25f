//! Driving the desktop app's real window through WebDriver: `tauri-driver`
//! starts Debian's `WebKitWebDriver`, which starts `ferry-desktop`.
//!
//! The client keeps one HTTP/1.1 connection open for every command: with a
//! new connection per command (`Connection: close`), about a third of runs
//! failed with a connection reset on this platform.

use std::cell::RefCell;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::binary;

/// Key of an element reference in WebDriver responses (W3C WebDriver, "Elements").
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const NATIVE_DRIVER: &str = "/usr/bin/WebKitWebDriver";

/// Environment variable that, set to `1`, makes the tests write their
/// screenshots to `docs/screenshots/`, where the README shows them.
pub const UPDATE_SCREENSHOTS_ENV: &str = "FERRY_UPDATE_SCREENSHOTS";

/// Returns where the screenshot `name` goes: `docs/screenshots/NAME.png`
/// when [`UPDATE_SCREENSHOTS_ENV`] is `1`, otherwise the `screenshots`
/// folder of the Cargo target folder, so that test runs leave the work
/// tree clean.
pub fn screenshot_path(name: &str) -> PathBuf {
    let file = format!("{name}.png");
    if std::env::var(UPDATE_SCREENSHOTS_ENV).is_ok_and(|value| value == "1") {
        return crate::workspace_root().join("docs/screenshots").join(file);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    target.join("screenshots").join(file)
}

/// Returns why the desktop tests cannot run here, or `None` when they can.
pub fn missing_prerequisite() -> Option<String> {
    if std::env::var_os("DISPLAY").is_none_or(|display| display.is_empty()) {
        return Some("DISPLAY is unset; run under Xvfb (scripts/test starts one)".to_owned());
    }
    if tauri_driver().is_none() {
        return Some("tauri-driver is not installed; run `cargo install tauri-driver --locked`".to_owned());
    }
    if !Path::new(NATIVE_DRIVER).is_file() {
        return Some(format!("{NATIVE_DRIVER} is missing; install the Debian package webkit2gtk-driver"));
    }
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        return Some(
            "no D-Bus session bus; run inside dbus-run-session with an unlocked gnome-keyring (scripts/test does)"
                .to_owned(),
        );
    }
    None
}

fn tauri_driver() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("tauri-driver")).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/tauri-driver"));
    }
    candidates.into_iter().find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("an ephemeral port").local_addr().expect("a local address").port()
}

/// A `tauri-driver` process for one test, stopped when dropped.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    /// Starts `tauri-driver` on free loopback ports with `env` added to the
    /// environment that the app inherits.
    pub fn start(env: &[(&str, &std::ffi::OsStr)]) -> Driver {
        let port = free_port();
        let native_port = free_port();
        let mut command = Command::new(tauri_driver().expect("tauri-driver is installed"));
        command
            .args(["--port", &port.to_string(), "--native-port", &native_port.to_string()])
            .args(["--native-driver", NATIVE_DRIVER])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("tauri-driver starts");

        // tauri-driver listens at once but forwards to WebKitWebDriver, which
        // starts beside it; a session requested before WebKitWebDriver
        // listens gets a closed connection and no response.
        let deadline = Instant::now() + Duration::from_secs(20);
        for (name, listening_port) in [("tauri-driver", port), ("WebKitWebDriver", native_port)] {
            while TcpStream::connect(("127.0.0.1", listening_port)).is_err() {
                assert!(Instant::now() < deadline, "{name} did not listen on port {listening_port} within 20 s");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Driver { child, port }
    }

    /// Starts the app and opens a WebDriver session on its window.
    pub fn launch(&self) -> App {
        let mut client = Client::connect(self.port);
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "wry",
                "tauri:options": { "application": binary("ferry-desktop") }
            }}
        });
        let response = client.request("POST", "/session", Some(&capabilities));
        let session = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {response}"))
            .to_owned();
        let app = App { client: RefCell::new(client), session, driver_pid: self.child.id() };
        app.wait_for("body[data-ready]", Duration::from_secs(30));
        app
    }
}

impl Drop for Driver {
    /// Kills the apps the driver started, then the driver. The apps go
    /// first, while WebKitWebDriver, their parent, still runs to reap them:
    /// an unreaped app stays a zombie whose process id the journal takes
    /// for a live process that still runs its transfers. An app left
    /// running after a failed test would otherwise take the next test's
    /// launch as its second instance.
    fn drop(&mut self) {
        let app = binary("ferry-desktop");
        for pid in descendants(self.child.id()) {
            if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == app) {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client over one keep-alive connection.
struct Client {
    port: u16,
    stream: Option<BufReader<TcpStream>>,
}

impl Client {
    fn connect(port: u16) -> Client {
        Client { port, stream: None }
    }

    fn request(&mut self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(Value::to_string).unwrap_or_default();
        let stream = self.stream.get_or_insert_with(|| {
            let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("tauri-driver accepts a connection");
            stream.set_read_timeout(Some(Duration::from_secs(120))).expect("a read timeout");
            BufReader::new(stream)
        });
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.port,
            body.len()
        );
        let writer = stream.get_mut();
        writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(body.as_bytes())).expect("the request is sent");

        let mut status_line = String::new();
        stream.read_line(&mut status_line).expect("a status line");
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).expect("a header line");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let body = if chunked {
            read_chunked(stream)
        } else {
            let mut body = vec![0; length.unwrap_or(0)];
            stream.read_exact(&mut body).expect("the response body");
            body
        };
        if close {
            self.stream = None;
        }
        let value: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|error| panic!("{method} {path}: invalid JSON ({error}): {}", String::from_utf8_lossy(&body)));
        if !status_line.contains(" 200") {
            panic!("{method} {path} failed: {} {value}", status_line.trim());
        }
        value
    }
}

fn read_chunked(stream: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        stream.read_line(&mut size_line).expect("a chunk size");
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16).expect("a hex chunk size");
        let mut chunk = vec![0; size + 2];
        stream.read_exact(&mut chunk).expect("a chunk");
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// The app's window in a WebDriver session.
pub struct App {
    client: RefCell<Client>,
    session: String,
    driver_pid: u32,
}

impl App {
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.client.borrow_mut().request(method, &path, body.as_ref())["value"].clone()
    }

    /// Finds the first element matching a CSS selector, if any.
    pub fn try_find(&self, css: &str) -> Option<String> {
        let found = self.command("POST", "/elements", Some(json!({ "using": "css selector", "value": css })));
        found.as_array()?.first()?.get(ELEMENT_KEY)?.as_str().map(str::to_owned)
    }

    /// Waits until an element matches `css` and returns it.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(element) = self.try_find(css) {
                return element;
            }
            if Instant::now() > deadline {
                let error = self.text_of("#error").unwrap_or_default();
                let page = self.execute(
                    "return {url: location.href, ready: document.readyState, tauri: typeof window.__TAURI__, \
                     screens: [...document.querySelectorAll('main > section:not([hidden])')].map((s) => s.id)};",
                    json!([]),
                );
                panic!("no element matched `{css}` within {timeout:?}; the window's error box says {error:?}; page: {page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, css: &str) {
        let element = self.wait_for(css, Duration::from_secs(10));
        self.command("POST", &format!("/element/{element}/click"), Some(json!({})));
    }

    /// Clears an input and types `text` into it.
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_for(css, Duration::from_secs(10));
        self.command("POST", &format!("/element/{element}/clear"), Some(json!({})));
        self.command("POST", &format!("/element/{element}/value"), Some(json!({ "text": text })));
    }

    /// Returns the rendered text of the first element matching `css`.
    pub fn text_of(&self, css: &str) -> Option<String> {
        let element = self.try_find(css)?;
        self.command("GET", &format!("/element/{element}/text"), None).as_str().map(str::to_owned)
    }

    /// Runs a script in the window and returns its result.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.command("POST", "/execute/sync", Some(json!({ "script": script, "args": args })))
    }

    /// Runs a script that returns a promise and returns what it resolves to.
    pub fn execute_async(&self, script: &str) -> Value {
        let wrapped = format!("const done = arguments[arguments.length - 1]; (async () => {{ {script} }})().then(done, (error) => done('ERR ' + error));");
        self.command("POST", "/execute/async", Some(json!({ "script": wrapped, "args": [] })))
    }

    /// Shows a screen by clicking its menu button.
    pub fn open_screen(&self, name: &str) {
        self.click(&format!("nav button[data-screen='{name}']"));
        self.wait_for(&format!("#screen-{name}:not([hidden])"), Duration::from_secs(5));
    }

    /// Saves a PNG of the window once it has painted its current DOM: a
    /// screenshot taken at once can show the previous frame.
    pub fn screenshot(&self, path: &Path) {
        self.execute_async(
            "await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))); return true;",
        );
        let encoded = self.command("GET", "/screenshot", None);
        let bytes = decode_base64(encoded.as_str().expect("a base64 screenshot"));
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).expect("the screenshot folder is created");
        }
        std::fs::write(path, bytes).expect("the screenshot is written");
    }

    /// Returns the process id of the app started by the driver.
    pub fn app_pid(&self) -> Option<u32> {
        let app = binary("ferry-desktop");
        descendants(self.driver_pid).into_iter().find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == app)
        })
    }

    /// Ends the session, which closes the window and the app.
    pub fn close(self) {
        let path = format!("/session/{}", self.session);
        self.client.borrow_mut().request("DELETE", &path, None);
    }
}

/// Returns the resident set size (VmRSS) of `pid` and of each of its
/// descendants in KiB, from `/proc`: the app first, then its WebKit
/// processes.
pub fn rss_kib_of_tree(pid: u32) -> Vec<(u32, u64)> {
    std::iter::once(pid)
        .chain(descendants(pid))
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            let kib = line.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, kib))
        })
        .collect()
}

/// Returns every descendant process of `pid`, from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        // The parent pid is the second field after the command name, which
        // is in parentheses and may contain spaces.
        let Some(after) = stat.rsplit_once(')').map(|(_, after)| after) else { continue };
        if let Some(parent) = after.split_whitespace().nth(1).and_then(|field| field.parse::<u32>().ok()) {
            parents.push((child, parent));
        }
    }
    let mut found = vec![pid];
    let mut index = 0;
    while index < found.len() {
        let current = found[index];
        found.extend(parents.iter().filter(|(_, parent)| *parent == current).map(|(child, _)| *child));
        index += 1;
    }
    found.remove(0);
    found
}

/// Decodes standard base64 (RFC 4648 section 4), ignoring whitespace.
pub fn decode_base64(text: &str) -> Vec<u8> {
    let value = |byte: u8| -> u32 {
        match byte {
            b'A'..=b'Z' => u32::from(byte - b'A'),
            b'a'..=b'z' => u32::from(byte - b'a') + 26,
            b'0'..=b'9' => u32::from(byte - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("invalid base64 byte {byte}"),
        }
    };
    let symbols: Vec<u8> = text.bytes().filter(|byte| !byte.is_ascii_whitespace() && *byte != b'=').collect();
    let mut bytes = Vec::with_capacity(symbols.len() * 3 / 4);
    for group in symbols.chunks(4) {
        let mut buffer = 0u32;
        for (index, byte) in group.iter().enumerate() {
            buffer |= value(*byte) << (18 - 6 * index);
        }
        let count = group.len() * 6 / 8;
        for index in 0..count {
            bytes.push((buffer >> (16 - 8 * index)) as u8);
        }
    }
    bytes
}

/// Writes an executable `BROWSER` program that requests the authorization
/// URL and follows the redirects to the app's loopback listener, as a
/// browser does after a sign-in that the sandbox's `--auto-login` approves.
pub fn redirect_following_browser(folder: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = folder.join("follow-redirects");
    std::fs::write(&path, "#!/bin/sh\nexec curl --silent --location --max-redirs 10 --output /dev/null \"$1\"\n")
        .expect("the browser script is written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("the browser script is executable");
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_padding() {
        assert_eq!(decode_base64("aGVsbG8="), b"hello");
        assert_eq!(decode_base64("aGk="), b"hi");
        assert_eq!(decode_base64("YWJj"), b"abc");
    }
}
