//! Local trouble during transfers: the source rewritten during an upload,
//! the destination's disk filling during a download, and the journal's
//! folder read-only. The last two mount a small tmpfs or a read-only bind
//! mount, which needs root; without it they are skipped with a message.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::cli::{describe, events, run, sha256_file, write_pattern_file};
use ferry_tests::fault::{
    Action, FaultSandbox, Figures, RequestKind, Rule, SandboxSettings, partial_files,
    print_figures, skip_without_credential_store,
};

const MIB: u64 = 1024 * 1024;

/// A mount made for one test, undone when dropped.
struct Mount(std::path::PathBuf);

impl Mount {
    fn run(args: &[&str]) -> bool {
        Command::new("mount")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn tmpfs(path: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(path).unwrap();
        let options = format!("size={size}");
        let target = path.to_str().unwrap();
        Mount::run(&["-t", "tmpfs", "-o", &options, "tmpfs", target])
            .then(|| Mount(path.to_owned()))
    }

    fn read_only(path: &Path) -> Option<Mount> {
        let target = path.to_str().unwrap();
        if !Mount::run(&["--bind", target, target]) {
            return None;
        }
        let mount = Mount(path.to_owned());
        Mount::run(&["-o", "remount,ro,bind", target]).then_some(mount)
    }

    fn resize(&self, size: &str) -> bool {
        let options = format!("remount,size={size}");
        Mount::run(&["-o", &options, self.0.to_str().unwrap()])
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn upload(env: &FaultSandbox, path: &Path) -> Command {
    let mut command = env.ferry();
    command
        .args([
            "--json",
            "upload",
            "--patient",
            "pat-001",
            "--part-size",
            "5",
            "--parallel",
            "1",
        ])
        .arg(path);
    command
}

#[test]
fn source_rewritten_during_upload_fails_and_stores_nothing() {
    if skip_without_credential_store() {
        return;
    }
    let env = FaultSandbox::start(&SandboxSettings::default());
    let size = 30 * MIB;
    let source = env.home.path().join("changing.bin");
    write_pattern_file(&source, size);
    // 6 parts at 4 MiB/s: the upload takes about 8 s.
    env.proxy.add_rule(Rule {
        kind: RequestKind::UploadPart,
        skip: 0,
        times: u32::MAX,
        action: Action::Throttle(4 * MIB),
    });

    let child = upload(&env, &source)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ferry starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.proxy.upload_parts().len() < 2 {
        assert!(Instant::now() < deadline, "no part reached the store");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Same size, other bytes: only the content and the mtime differ.
    let mut changed = std::fs::read(&source).unwrap();
    for byte in changed.iter_mut().step_by(4096) {
        *byte ^= 0xff;
    }
    std::fs::write(&source, &changed).unwrap();

    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("changed since the transfer began"),
        "{}",
        describe(&output)
    );
    assert!(events(&output.stdout, "uploaded").is_empty());
    if let Some(objects) = env.objects() {
        assert!(objects.is_empty(), "no object was stored: {objects:?}");
    }
    print_figures(
        "source-rewritten",
        &Figures {
            runs: 1,
            transfers: 1,
            bytes_moved: env.proxy.upload_part_bytes(),
            bytes_resent: 0,
            lost: 0,
            corrupted: 0,
        },
    );
}

#[test]
fn full_disk_during_download_fails_clearly_and_resumes() {
    if skip_without_credential_store() {
        return;
    }
    let env = FaultSandbox::start(&SandboxSettings::default());
    let size = 12 * MIB + 7;
    let source = env.home.path().join("big.bin");
    write_pattern_file(&source, size);
    let uploaded = run(&mut upload(&env, &source));
    assert!(uploaded.status.success(), "{}", describe(&uploaded));
    let document_id = events(&uploaded.stdout, "uploaded")[0]["document_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let folder = env.home.path().join("small-disk");
    let Some(mount) = Mount::tmpfs(&folder, "8m") else {
        eprintln!("skipped: mounting an 8 MiB tmpfs failed (root and mount rights are needed)");
        return;
    };
    let bystander = folder.join("other.txt");
    std::fs::write(&bystander, b"kept").unwrap();

    let output = run(env
        .ferry()
        .args(["--json", "download", &document_id, "--to"])
        .arg(&folder));
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(
        stderr.contains("no space") || stderr.contains("disk full") || stderr.contains("space"),
        "the error names the full disk: {}",
        describe(&output)
    );
    assert!(
        !folder.join("big.bin").exists(),
        "no file appears under the final name"
    );
    assert_eq!(std::fs::read(&bystander).unwrap(), b"kept");
    let partial = partial_files(&folder);
    eprintln!("after the full disk: partial files {partial:?}");

    assert!(mount.resize("64m"), "the tmpfs grows");
    let listed = run(env.ferry().args(["--json", "transfers"]));
    let document: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let record = document["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|record| record["direction"] == "download")
        .expect("the download is in the journal")
        .clone();
    let id = record["transfer_id"].as_str().unwrap();
    let resumed = run(env.ferry().args(["--json", "transfers", "resume", id]));
    assert!(resumed.status.success(), "{}", describe(&resumed));
    assert_eq!(sha256_file(&folder.join("big.bin")), sha256_file(&source));
    assert!(partial_files(&folder).is_empty());
    assert_eq!(std::fs::read(&bystander).unwrap(), b"kept");
    drop(mount);
    print_figures(
        "disk-full-download",
        &Figures {
            runs: 1,
            transfers: 2,
            bytes_moved: 2 * size,
            bytes_resent: 0,
            lost: 0,
            corrupted: 0,
        },
    );
}

#[test]
fn read_only_journal_folder_fails_clearly_before_sending() {
    if skip_without_credential_store() {
        return;
    }
    let env = FaultSandbox::start(&SandboxSettings::default());
    let source = env.home.path().join("small.bin");
    write_pattern_file(&source, MIB);
    let profile_dir = env.home.path().join("data/profiles").join(&env.profile);
    std::fs::create_dir_all(&profile_dir).unwrap();
    let Some(mount) = Mount::read_only(&profile_dir) else {
        eprintln!("skipped: a read-only bind mount failed (root and mount rights are needed)");
        return;
    };

    let output = run(&mut upload(&env, &source));
    drop(mount);
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(
        stderr.contains("read-only") || stderr.contains("readonly") || stderr.contains("journal"),
        "the error names the read-only journal: {}",
        describe(&output)
    );
    assert_eq!(env.proxy.upload_part_bytes(), 0, "no part was sent");
    if let Some(objects) = env.objects() {
        assert!(objects.is_empty(), "{objects:?}");
    }
    eprintln!("read-only journal: {}", stderr.trim());
}
