//! Driving `ferry` uploads and downloads in a [`FaultSandbox`] and checking
//! what they leave behind: the journal, the objects in the store, the
//! destination folder and the part bytes sent again. The fault tests share
//! these steps so that each test shows only its fault and its figures.

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::cli::{describe, events, run, sha256_file, sign_in, write_pattern_file};

use super::{FaultSandbox, Figures, has_aws_cli, long_tests, partial_files};

pub const MIB: u64 = 1024 * 1024;
/// Part size of the fault tests' uploads, in MiB: the smallest the CLI
/// accepts, so that a few MiB make several parts.
pub const PART_MIB: u64 = 5;

/// How long a killed `ferry` gets to end before the test fails.
const KILLED_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns how many times a test repeats its fault: 3 in the default
/// suite, `long` with `FERRY_LONG_TESTS=1`. `noun` names the repetitions in
/// the message printed for the default suite.
pub fn repetitions(noun: &str, long: u64) -> u64 {
    if long_tests() {
        long
    } else {
        eprintln!("3 {noun}; FERRY_LONG_TESTS=1 runs {long}");
        3
    }
}

/// Writes a file of `size` bytes whose content differs from every other
/// index's.
pub fn write_distinct_file(path: &Path, size: u64, index: u64) {
    write_pattern_file(path, size);
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    for offset in [0, size / 2, size - 8] {
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(&index.to_le_bytes()).unwrap();
    }
}

/// One transfer as `ferry --json transfers` lists it.
#[derive(Debug, Clone)]
pub struct TransferRecord {
    pub state: String,
    pub file_name: String,
    /// `upload` or `download`.
    pub direction: String,
}

impl FaultSandbox {
    /// Builds a `ferry --json upload` command of `path` for Patient/pat-001,
    /// in parts of [`PART_MIB`] MiB with `parallel` parts in flight.
    pub fn upload_command(&self, path: &Path, parallel: u64) -> Command {
        let mut command = self.ferry();
        command
            .args(["--json", "upload", "--patient", "pat-001", "--part-size"])
            .arg(PART_MIB.to_string())
            .arg("--parallel")
            .arg(parallel.to_string())
            .arg(path);
        command
    }

    /// Builds a `ferry --json download` command of `document_id` into
    /// `folder`.
    pub fn download_command(&self, document_id: &str, folder: &Path) -> Command {
        let mut command = self.ferry();
        command
            .args(["--json", "download", document_id, "--to"])
            .arg(folder);
        command
    }

    /// Lists the journal's transfers with `ferry --json transfers`.
    pub fn transfers(&self) -> Vec<TransferRecord> {
        let listed = run(self.ferry().args(["--json", "transfers"]));
        assert!(listed.status.success(), "{}", describe(&listed));
        let document: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        document["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|record| TransferRecord {
                state: record["state"].as_str().unwrap_or_default().to_owned(),
                file_name: record["file_name"].as_str().unwrap_or_default().to_owned(),
                direction: record["direction"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Returns the states of the journal's transfers.
    pub fn transfer_states(&self) -> Vec<String> {
        self.transfers()
            .into_iter()
            .map(|record| record.state)
            .collect()
    }

    /// Asserts that every transfer in the journal is completed, and returns
    /// their states.
    pub fn check_transfers_completed(&self) -> Vec<String> {
        let states = self.transfer_states();
        assert!(
            states.iter().all(|state| state == "completed"),
            "unfinished transfers: {states:?}"
        );
        states
    }

    /// Runs `ferry --json resume`, asserts that it succeeded and returns its
    /// output.
    pub fn resume(&self) -> Output {
        let resumed = run(self.ferry().args(["--json", "resume"]));
        assert!(resumed.status.success(), "{}", describe(&resumed));
        resumed
    }

    /// Signs the profile in again as imaging staff, through the gateway's
    /// real login flow with curl as the browser that follows the redirects.
    pub fn sign_in(&self) {
        sign_in(self.home.path(), &self.profile, "imaging-staff");
    }

    /// Returns the body bytes of `UploadPart` requests that reached the
    /// store beyond the `moved` bytes of the files themselves.
    pub fn resent_part_bytes(&self, moved: u64) -> u64 {
        self.proxy.upload_part_bytes().saturating_sub(moved)
    }
}

/// Starts `command` with its stdout and stderr piped.
pub fn spawn_piped(command: &mut Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry starts")
}

/// Waits up to `timeout` for `child` to end, and kills it with SIGKILL if
/// it has not. Returns whether it was killed, and its output.
pub fn wait_or_kill(child: Child, timeout: Duration) -> (bool, Output) {
    let pid = child.id();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(timeout) {
        Ok(output) => (false, output.expect("ferry ran")),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let output = receiver
                .recv_timeout(KILLED_EXIT_TIMEOUT)
                .expect("a killed ferry ends")
                .expect("ferry ran");
            (true, output)
        }
    }
}

/// Waits for `child` to end within `timeout` and returns its output. Fails
/// the test, after killing the child, when it outlives `timeout`.
pub fn finish(child: Child, timeout: Duration) -> Output {
    let (killed, output) = wait_or_kill(child, timeout);
    assert!(
        !killed,
        "ferry did not finish within {timeout:?}\n{}",
        describe(&output)
    );
    output
}

/// Returns the DocumentReference id from the `uploaded` event of a
/// `ferry --json upload`.
pub fn uploaded_document_id(upload: &Output) -> String {
    events(&upload.stdout, "uploaded")[0]["document_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Asserts that a `ferry --json upload` or `resume` of `source` succeeded
/// and uploaded it once with its SHA-256; returns the document id.
pub fn check_uploaded(upload: &Output, source: &Path) -> String {
    assert!(upload.status.success(), "{}", describe(upload));
    let uploaded = events(&upload.stdout, "uploaded");
    assert_eq!(uploaded.len(), 1, "{}", describe(upload));
    assert_eq!(uploaded[0]["sha256"], sha256_file(source));
    uploaded[0]["document_id"].as_str().unwrap().to_owned()
}

/// Checks the upload's result, the object in the store and a download
/// back; returns the document id.
pub fn check_round_trip(env: &FaultSandbox, source: &Path, upload: &Output) -> String {
    let document_id = check_uploaded(upload, source);

    let size = std::fs::metadata(source).unwrap().len();
    if let Some(objects) = env.objects() {
        assert_eq!(objects.len(), 1, "one object in the store: {objects:?}");
        assert_eq!(objects[0].1, size, "the object has the file's size");
    }

    let folder = env.home.path().join("back");
    let download = run(env
        .ferry()
        .args(["--json", "download", &document_id, "--overwrite", "--to"])
        .arg(&folder));
    assert!(download.status.success(), "{}", describe(&download));
    let name = source.file_name().unwrap();
    assert_eq!(sha256_file(&folder.join(name)), sha256_file(source));
    document_id
}

/// Asserts that `folder` contains the finished file `name` and nothing else,
/// no partial file included, and returns whether the file's SHA-256 is
/// `expected_sha256`.
pub fn finished_download_matches(folder: &Path, name: &str, expected_sha256: &str) -> bool {
    let names: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [name], "only the finished file is left");
    assert!(partial_files(folder).is_empty());
    sha256_file(&folder.join(name)) == expected_sha256
}

/// Asserts that the store contains one whole object per upload of `sizes`
/// and no other, and returns the number of objects. Returns `None`, and
/// prints why, when the aws CLI that lists the store is missing.
pub fn check_one_object_per_upload(env: &FaultSandbox, sizes: &[u64]) -> Option<usize> {
    if !has_aws_cli() {
        eprintln!("the aws CLI is missing: the store's listing is not checked");
        return None;
    }
    let mut stored: Vec<u64> = env
        .objects()
        .unwrap()
        .iter()
        .map(|(_, size)| *size)
        .collect();
    stored.sort_unstable();
    let mut expected = sizes.to_vec();
    expected.sort_unstable();
    assert_eq!(
        stored, expected,
        "one whole object per upload, no duplicates"
    );
    Some(stored.len())
}

/// Asserts that at most `bound` part bytes reached the store beyond the
/// `moved` bytes of the files, and returns the bytes sent again. `limit`
/// names what bounds them, as in "were in flight at the kills".
pub fn check_resent_part_bytes(env: &FaultSandbox, moved: u64, bound: u64, limit: &str) -> u64 {
    let resent = env.resent_part_bytes(moved);
    assert!(
        resent <= bound,
        "{resent} bytes were sent again; at most {bound} {limit}"
    );
    resent
}

/// Formats a time as an HTTP date (RFC 9110 §5.6.7, IMF-fixdate).
pub fn http_date(time: jiff::Timestamp) -> String {
    time.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Formats the time `seconds` from now as an HTTP date.
pub fn http_date_in(seconds: i64) -> String {
    http_date(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds))
}

impl Figures {
    /// Builds the figures of `runs` faults over uploads of files of
    /// `sizes`, with the `bytes_resent` part bytes they sent again.
    pub fn uploads(runs: u64, sizes: &[u64], bytes_resent: u64) -> Figures {
        Figures {
            runs,
            transfers: sizes.len() as u64,
            bytes_moved: sizes.iter().sum(),
            bytes_resent,
            lost: 0,
            corrupted: 0,
        }
    }

    /// Builds the figures of `runs` faults over `transfers` downloads of
    /// `size` bytes each, for which the store sent `fetched` bytes, and of
    /// which `corrupted` did not match the source.
    pub fn downloads(
        runs: u64,
        transfers: u64,
        size: u64,
        fetched: u64,
        corrupted: u64,
    ) -> Figures {
        let moved = transfers * size;
        Figures {
            runs,
            transfers,
            bytes_moved: moved,
            bytes_resent: fetched.saturating_sub(moved),
            lost: 0,
            corrupted,
        }
    }

    /// Builds the figures of one run that uploaded `size` bytes and
    /// downloaded them back, with the part bytes the upload sent again.
    pub fn round_trip(env: &FaultSandbox, size: u64) -> Figures {
        Figures {
            runs: 1,
            transfers: 2,
            bytes_moved: 2 * size,
            bytes_resent: env.resent_part_bytes(size),
            lost: 0,
            corrupted: 0,
        }
    }

    /// Builds the figures of one run that uploaded `size` bytes, with the
    /// part bytes it sent again.
    pub fn one_upload(env: &FaultSandbox, size: u64) -> Figures {
        Figures {
            runs: 1,
            transfers: 1,
            bytes_moved: size,
            bytes_resent: env.resent_part_bytes(size),
            lost: 0,
            corrupted: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_date_is_formatted_as_imf_fixdate() {
        let time = jiff::Timestamp::from_second(1_445_412_480).unwrap();
        assert_eq!(http_date(time), "Wed, 21 Oct 2015 07:28:00 GMT");
    }
}
