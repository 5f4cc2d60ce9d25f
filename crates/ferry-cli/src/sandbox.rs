//! Starting the sandbox gateway as a child process for `ferry demo`.
//!
//! The `ferry-gateway` binary is looked up beside the running `ferry`
//! executable first (a cargo build puts both in one folder), then on `PATH`.
//! It listens on an ephemeral loopback port and prints its URLs on stdout;
//! its logs go to a file in the demo's folder.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::exit::{CliError, CliResult};

/// Name of the gateway's executable.
pub const GATEWAY_BINARY: &str = if cfg!(windows) {
    "ferry-gateway.exe"
} else {
    "ferry-gateway"
};

/// How long the gateway may take to print its URLs after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A sandbox gateway started by this process; killed when dropped.
#[derive(Debug)]
pub struct SandboxProcess {
    child: Child,
    /// FHIR base URL, the `aud` of access tokens and the URL of a profile.
    pub fhir_url: String,
    /// File that receives the gateway's stdout and stderr.
    pub log_path: PathBuf,
}

impl SandboxProcess {
    /// Starts `ferry-gateway sandbox` with its data in `data_dir` and the
    /// given `--auto-login` choice, and waits until it prints its FHIR URL.
    pub async fn start(
        binary: &Path,
        data_dir: &Path,
        auto_login: &str,
        log_path: &Path,
    ) -> CliResult<SandboxProcess> {
        let log_file = std::fs::File::create(log_path).map_err(|error| {
            CliError::failure(format!(
                "failed to create the gateway log {}: {error}",
                log_path.display()
            ))
        })?;

        let mut child = Command::new(binary)
            .arg("sandbox")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--auto-login")
            .arg(auto_login)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                CliError::failure(format!(
                    "failed to start {}: {error}; build it with `cargo build -p ferry-gateway`",
                    binary.display()
                ))
            })?;
        tracing::info!(binary = %binary.display(), pid = child.id(), "sandbox gateway started");

        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut printed = Vec::new();
        let wait_for_url = async {
            while let Some(line) = lines.next_line().await? {
                tracing::debug!(line = %line, "gateway output");
                printed.push(line.clone());
                if let Some(url) = fhir_url_in_line(&line) {
                    return Ok(Some(url));
                }
            }
            Ok::<_, std::io::Error>(None)
        };
        let found = tokio::time::timeout(START_TIMEOUT, wait_for_url).await;

        let fhir_url = match found {
            Ok(Ok(Some(url))) => url,
            Ok(Ok(None)) | Ok(Err(_)) => {
                let status = child.wait().await.ok();
                return Err(CliError::failure(format!(
                    "the sandbox gateway exited ({}) before printing its URLs; see {}",
                    status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string()),
                    log_path.display()
                )));
            }
            Err(_) => {
                return Err(CliError::failure(format!(
                    "the sandbox gateway printed no FHIR URL within {} s; see {}",
                    START_TIMEOUT.as_secs(),
                    log_path.display()
                )));
            }
        };

        // Keep reading the gateway's stdout so that it never blocks on a
        // full pipe; the lines go to the log file after what stderr wrote.
        let append_path = log_path.to_owned();
        tokio::spawn(async move {
            let Ok(mut file) = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&append_path)
                .await
            else {
                return;
            };
            for line in printed {
                let _ = file.write_all(format!("{line}\n").as_bytes()).await;
            }
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = file.write_all(format!("{line}\n").as_bytes()).await;
            }
        });

        Ok(SandboxProcess {
            child,
            fhir_url,
            log_path: log_path.to_owned(),
        })
    }

    /// Stops the gateway and waits for it to exit.
    pub async fn stop(mut self) {
        if let Err(error) = self.child.kill().await {
            tracing::warn!(%error, "failed to stop the sandbox gateway");
        }
    }
}

/// Finds the `ferry-gateway` executable: beside the running executable,
/// then in the folders of `PATH`.
pub fn find_gateway_binary() -> CliResult<PathBuf> {
    let beside_current = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(GATEWAY_BINARY)));
    if let Some(path) = beside_current.filter(|path| path.is_file()) {
        return Ok(path);
    }

    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(GATEWAY_BINARY))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            CliError::failure(format!(
                "{GATEWAY_BINARY} was found neither beside this executable nor on PATH; \
                 build it with `cargo build -p ferry-gateway` or run scripts/demo"
            ))
        })
}

/// Finds the sandbox's FHIR base URL in one line of the gateway's output:
/// either a JSON object with a `fhir` field (at the top or under `urls`), or
/// text holding an `http://` URL whose path ends in `/fhir`.
pub fn fhir_url_in_line(line: &str) -> Option<String> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
        let field = value
            .get("fhir")
            .or_else(|| value.get("urls").and_then(|urls| urls.get("fhir")));
        if let Some(url) = field.and_then(serde_json::Value::as_str) {
            return Some(url.to_owned());
        }
    }

    line.split(|c: char| c.is_whitespace() || c == '"' || c == '<' || c == '>')
        .map(|word| word.trim_end_matches([',', '.', ';', ')']))
        .filter(|word| word.starts_with("http://") || word.starts_with("https://"))
        .find(|word| word.trim_end_matches('/').ends_with("/fhir"))
        .map(|word| word.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_url_found_in_text_line() {
        assert_eq!(
            fhir_url_in_line("FHIR base URL:  http://127.0.0.1:41234/fhir").as_deref(),
            Some("http://127.0.0.1:41234/fhir")
        );
    }

    #[test]
    fn fhir_url_found_in_json_line() {
        let line = r#"{"urls":{"issuer":"http://127.0.0.1:5/","fhir":"http://127.0.0.1:5/fhir"}}"#;
        assert_eq!(
            fhir_url_in_line(line).as_deref(),
            Some("http://127.0.0.1:5/fhir")
        );
    }

    #[test]
    fn other_urls_are_not_taken_for_fhir() {
        assert_eq!(
            fhir_url_in_line("token endpoint: http://127.0.0.1:5/token"),
            None
        );
        assert_eq!(
            fhir_url_in_line("smart: http://127.0.0.1:5/fhir/.well-known/smart-configuration"),
            None
        );
    }

    #[tokio::test]
    async fn gateway_that_exits_early_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("gateway.log");
        // `false` exits at once with status 1 and prints nothing.
        let error = SandboxProcess::start(Path::new("false"), dir.path(), "tech-okafor", &log)
            .await
            .unwrap_err();
        assert!(error.message.contains("exited"), "{}", error.message);
        assert!(error.message.contains("gateway.log"), "{}", error.message);
    }
}
