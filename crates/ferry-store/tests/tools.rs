//! Standard S3 tools against the store with the credentials it prints:
//! aws-cli and rclone copy a file in and out. Each test skips with a message
//! when its tool is not on PATH.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{BUCKET, store};

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|folder| folder.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Writes 20 MiB, above aws-cli's 8 MiB multipart threshold, so the copy in
/// uses CreateMultipartUpload, UploadPart and CompleteMultipartUpload.
fn write_test_file(path: &Path) -> Vec<u8> {
    let data: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(path, &data).expect("write the test file");
    data
}

async fn run(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().expect("run the tool"))
        .await
        .expect("tool thread")
}

fn assert_success(what: &str, output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn aws_cli_copies_a_file_in_and_out() {
    let Some(aws) = find_on_path("aws") else {
        eprintln!(
            "SKIPPED: aws is not on PATH; install aws-cli (Debian package awscli) to run this test"
        );
        return;
    };
    let s3 = store().start().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("upload.bin");
    let copy = work.path().join("download.bin");
    let data = write_test_file(&source);
    let config = work.path().join("aws-config");
    std::fs::write(&config, "[default]\ns3 =\n    addressing_style = path\n").unwrap();
    let credentials = &s3.handle.credentials()[0];
    let aws_command = |args: &[&str]| {
        let mut command = Command::new(&aws);
        command
            .args(args)
            .args(["--endpoint-url", s3.handle.endpoint().as_str()])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", work.path())
            .env("AWS_CONFIG_FILE", &config)
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                work.path().join("no-credentials"),
            )
            .env("AWS_ACCESS_KEY_ID", &credentials.access_key_id)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                credentials.secret_access_key.expose(),
            )
            .env("AWS_DEFAULT_REGION", s3.handle.region())
            .env("AWS_EC2_METADATA_DISABLED", "true");
        command
    };
    let target = format!("s3://{BUCKET}/tools/aws.bin");

    let upload = run(aws_command(&[
        "s3",
        "cp",
        source.to_str().unwrap(),
        &target,
    ]))
    .await;
    assert_success("aws s3 cp (upload)", &upload);
    let download = run(aws_command(&["s3", "cp", &target, copy.to_str().unwrap()])).await;
    assert_success("aws s3 cp (download)", &download);
    let listing = run(aws_command(&["s3", "ls", &format!("s3://{BUCKET}/tools/")])).await;
    assert_success("aws s3 ls", &listing);

    let stored = s3
        .handle
        .store()
        .head_object(BUCKET, "tools/aws.bin")
        .unwrap();
    assert!(
        stored.parts_count.is_some(),
        "aws-cli did not use a multipart upload"
    );
    assert_eq!(stored.size, data.len() as u64);
    assert!(
        std::fs::read(&copy).unwrap() == data,
        "downloaded file differs"
    );
    assert!(String::from_utf8_lossy(&listing.stdout).contains("aws.bin"));
}

#[tokio::test]
async fn rclone_copies_a_file_in_and_out() {
    let Some(rclone) = find_on_path("rclone") else {
        eprintln!(
            "SKIPPED: rclone is not on PATH; install it (Debian package rclone) to run this test"
        );
        return;
    };
    let s3 = store().start().await;
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("upload.bin");
    let copy = work.path().join("download.bin");
    let data = write_test_file(&source);
    let credentials = &s3.handle.credentials()[0];
    let rclone_command = |args: &[&str]| {
        let mut command = Command::new(&rclone);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", work.path())
            .env("RCLONE_CONFIG", work.path().join("rclone.conf"))
            .env("RCLONE_CONFIG_FERRY_TYPE", "s3")
            .env("RCLONE_CONFIG_FERRY_PROVIDER", "Other")
            .env(
                "RCLONE_CONFIG_FERRY_ACCESS_KEY_ID",
                &credentials.access_key_id,
            )
            .env(
                "RCLONE_CONFIG_FERRY_SECRET_ACCESS_KEY",
                credentials.secret_access_key.expose(),
            )
            .env(
                "RCLONE_CONFIG_FERRY_ENDPOINT",
                s3.handle.endpoint().as_str(),
            )
            .env("RCLONE_CONFIG_FERRY_REGION", s3.handle.region())
            .env("RCLONE_CONFIG_FERRY_FORCE_PATH_STYLE", "true");
        command
    };
    let target = format!("ferry:{BUCKET}/tools/rclone.bin");

    let upload = run(rclone_command(&[
        "copyto",
        source.to_str().unwrap(),
        &target,
    ]))
    .await;
    assert_success("rclone copyto (upload)", &upload);
    let download = run(rclone_command(&["copyto", &target, copy.to_str().unwrap()])).await;
    assert_success("rclone copyto (download)", &download);

    let stored = s3
        .handle
        .store()
        .head_object(BUCKET, "tools/rclone.bin")
        .unwrap();
    assert_eq!(stored.size, data.len() as u64);
    assert!(
        std::fs::read(&copy).unwrap() == data,
        "downloaded file differs"
    );
}
