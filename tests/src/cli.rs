//! Running the built `ferry` and `ferry-gateway` binaries from tests.
//!
//! The binaries are taken from the cargo target folder that holds the test
//! executable (`$CARGO_TARGET_DIR/debug`), so `cargo build --workspace --bins`
//! (which scripts/test runs) must come first.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Returns the folder of the built binaries: the parent of the test
/// executable's `deps` folder.
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    let deps = exe.parent().expect("the test executable is in a folder");
    let dir = if deps.file_name().is_some_and(|name| name == "deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// Returns the path of a built binary, failing the test with the build
/// command when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = binary_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing; run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// A `ferry` command whose folders are below `home` (`FERRY_HOME`), with
/// no browser and logs at the default level.
pub fn ferry(home: &Path) -> Command {
    let mut command = Command::new(binary("ferry"));
    command
        .env("FERRY_HOME", home)
        .env_remove("FERRY_PROFILE")
        .env_remove("RUST_LOG")
        .env("BROWSER", "false")
        .stdin(Stdio::null());
    command
}

/// Runs a command to completion and returns its output.
pub fn run(command: &mut Command) -> Output {
    command.output().expect("the command starts")
}

/// Exit code, stdout and stderr of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A sandbox gateway started for one test, stopped when dropped.
pub struct Sandbox {
    child: Child,
    /// FHIR base URL printed by the gateway.
    pub fhir_url: String,
}

impl Sandbox {
    /// Starts `ferry-gateway sandbox` on an ephemeral loopback port with its
    /// data in `data_dir`, signing every authorization request in as
    /// `auto_login` (`USER` or `USER:PATIENT`).
    pub fn start(data_dir: &Path, auto_login: &str) -> Sandbox {
        let mut child = sandbox_command("127.0.0.1:0", data_dir, auto_login)
            .spawn()
            .expect("ferry-gateway starts");

        let lines = stdout_lines(&mut child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let fhir_url = loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the sandbox gateway prints its FHIR URL within 60 s");
            if let Some(url) = fhir_url_in_line(&line) {
                break url;
            }
        };
        Sandbox { child, fhir_url }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds a `ferry-gateway sandbox` command listening on `listen` with its
/// data in `data_dir`, signing every authorization request in as
/// `auto_login`. Its stdout is piped, for [`stdout_lines`].
pub fn sandbox_command(listen: &str, data_dir: &Path, auto_login: &str) -> Command {
    let mut command = Command::new(binary("ferry-gateway"));
    command
        .args(["sandbox", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .args(["--auto-login", auto_login])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// Passes each line that `child` prints on its piped stdout to the returned
/// channel, from a thread of its own, until the stream ends.
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = sender.send(line);
        }
    });
    receiver
}

/// Finds an `http://…/fhir` URL in a line of the gateway's output.
fn fhir_url_in_line(line: &str) -> Option<String> {
    line.split(|c: char| c.is_whitespace() || c == '"')
        .map(|word| word.trim_end_matches([',', '.', ';', '/']))
        .find(|word| word.starts_with("http://") && word.ends_with("/fhir"))
        .map(str::to_owned)
}

/// Returns the lowercase hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).expect("the file opens");
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).expect("the file reads");
    hex::encode(hasher.finalize())
}

/// True when a Secret Service can be reached (scripts/test starts one on a
/// private D-Bus session). Tests that store a refresh token need it.
pub fn has_credential_store() -> bool {
    std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|address| !address.is_empty())
}

/// A sandbox gateway and a `ferry` home whose profile `local` is signed in
/// to it through the real login flow, with `curl` as the browser that
/// follows the redirects to the loopback listener.
pub struct SignedIn {
    pub home: tempfile::TempDir,
    pub sandbox: Sandbox,
    /// Name of the profile that points at the sandbox. Credential store
    /// entries are named by profile, not by `FERRY_HOME`, so every test
    /// gets its own name to keep parallel tests apart.
    pub profile: String,
}

impl SignedIn {
    /// Starts the sandbox with `auto_login` and signs in as `kind`
    /// (`clinician` or `imaging-staff`).
    pub fn start(auto_login: &str, kind: &str) -> SignedIn {
        let home = tempfile::tempdir().expect("a temporary folder");
        let sandbox = Sandbox::start(&home.path().join("gateway"), auto_login);
        let profile = add_signed_in_profile(home.path(), "test", &sandbox.fhir_url, kind);

        SignedIn {
            home,
            sandbox,
            profile,
        }
    }

    /// A `ferry --profile NAME` command in this home.
    pub fn ferry(&self) -> Command {
        let mut command = ferry(self.home.path());
        command.args(["--profile", &self.profile]);
        command
    }
}

/// Adds a profile for the FHIR server at `fhir_url` in `home`, signs it in
/// as `kind` with [`sign_in`], and returns its name. Credential store
/// entries are named by profile, not by `FERRY_HOME`, so the name joins
/// `prefix`, the process id and the name of `home` to keep parallel tests
/// apart.
pub fn add_signed_in_profile(home: &Path, prefix: &str, fhir_url: &str, kind: &str) -> String {
    let suffix = home
        .file_name()
        .map(|name| name.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let profile = format!("{prefix}-{}-{suffix}", std::process::id());
    let added = run(ferry(home).args(["profiles", "add", &profile, fhir_url]));
    assert!(added.status.success(), "{}", describe(&added));
    sign_in(home, &profile, kind);
    profile
}

/// Signs in the profile `profile` of `home` as `kind` (`clinician` or
/// `imaging-staff`) through the real login flow, with `curl` as the browser
/// that follows the redirects to the loopback listener.
pub fn sign_in(home: &Path, profile: &str, kind: &str) {
    let login = run(ferry(home)
        .args(["--profile", profile, "login", "--as", kind])
        .env("BROWSER", "curl -sfL -o /dev/null"));
    assert!(login.status.success(), "{}", describe(&login));
}

/// Parses NDJSON output and returns the events named `name`.
pub fn events(stdout: &[u8], name: &str) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["event"] == name)
        .collect()
}

/// Writes `size` bytes of a fixed, non-repeating pattern to `path`.
pub fn write_pattern_file(path: &Path, size: u64) {
    use std::io::Write as _;
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(path).expect("the file is created"));
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut written = 0u64;
    let mut block = vec![0u8; 1 << 16];
    while written < size {
        for chunk in block.chunks_mut(8) {
            // xorshift64: cheap bytes that differ in every part.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let take = (size - written).min(block.len() as u64) as usize;
        file.write_all(&block[..take]).expect("the file is written");
        written += take as u64;
    }
    file.flush().expect("the file is flushed");
}

/// Free bytes on the file system holding `path`, from `df`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let output = Command::new("df").args(["-Pk"]).arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().nth(1)?;
    let available_kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(available_kib * 1024)
}

/// The workspace root, where `scripts/` is; `ferry demo` runs from there.
pub fn workspace_root_dir() -> PathBuf {
    crate::workspace_root()
}
