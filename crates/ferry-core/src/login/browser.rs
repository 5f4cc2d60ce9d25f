//! Opening the authorization URL in a browser.

use std::process::{Command, Stdio};

use url::Url;

/// Something that shows the authorization URL to the user.
pub trait BrowserLauncher: Send + Sync {
    /// Starts opening `url` and returns without waiting for the browser.
    fn open(&self, url: &Url) -> Result<(), BrowserError>;
}

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("no browser is available: {0}")]
    Unavailable(String),
    #[error("failed to start the browser `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// The user's browser: the programs listed in `BROWSER` (separated by `:`,
/// each run with the URL as its last argument, or in place of `%s` when the
/// entry contains it), else the platform's opener (`xdg-open`, `open`, or
/// `rundll32 url.dll,FileProtocolHandler` on Windows).
#[derive(Debug, Clone, Default)]
pub struct SystemBrowser;

impl BrowserLauncher for SystemBrowser {
    fn open(&self, url: &Url) -> Result<(), BrowserError> {
        if let Some(browsers) = std::env::var_os("BROWSER").filter(|value| !value.is_empty()) {
            let browsers = browsers.to_string_lossy().into_owned();
            let mut last_error = None;
            for entry in browsers.split(':').filter(|entry| !entry.trim().is_empty()) {
                match spawn(&command_for_entry(entry, url.as_str())) {
                    Ok(()) => return Ok(()),
                    Err(error) => last_error = Some(error),
                }
            }
            return Err(last_error.unwrap_or_else(|| {
                BrowserError::Unavailable("BROWSER lists no program".to_owned())
            }));
        }

        spawn(&platform_opener(url.as_str())?)
    }
}

/// Splits a `BROWSER` entry into program and arguments on whitespace,
/// putting the URL in place of `%s` or after the last argument.
fn command_for_entry(entry: &str, url: &str) -> Vec<String> {
    let mut words: Vec<String> = entry.split_whitespace().map(str::to_owned).collect();
    if words.iter().any(|word| word.contains("%s")) {
        for word in &mut words {
            *word = word.replace("%s", url);
        }
    } else {
        words.push(url.to_owned());
    }
    words
}

fn platform_opener(url: &str) -> Result<Vec<String>, BrowserError> {
    if cfg!(target_os = "macos") {
        return Ok(vec!["open".to_owned(), url.to_owned()]);
    }
    if cfg!(target_os = "windows") {
        // `cmd /c start` would interpret `&` in the query string.
        return Ok(vec![
            "rundll32".to_owned(),
            "url.dll,FileProtocolHandler".to_owned(),
            url.to_owned(),
        ]);
    }
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    if !has_display {
        return Err(BrowserError::Unavailable(
            "no graphical session (DISPLAY and WAYLAND_DISPLAY are unset) and BROWSER is unset"
                .to_owned(),
        ));
    }
    Ok(vec!["xdg-open".to_owned(), url.to_owned()])
}

/// Starts the program without a terminal attached, and reaps it on a
/// background thread so it leaves no zombie process.
fn spawn(command: &[String]) -> Result<(), BrowserError> {
    let (program, arguments) = command
        .split_first()
        .ok_or_else(|| BrowserError::Unavailable("empty browser command".to_owned()))?;
    let mut child = Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| BrowserError::Spawn {
            program: program.clone(),
            source,
        })?;
    tracing::debug!(program, "browser started");
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// A "browser" that cannot open anything, so the user opens the URL
/// elsewhere and pastes the redirect back.
#[derive(Debug, Clone, Default)]
pub struct NoBrowser;

impl BrowserLauncher for NoBrowser {
    fn open(&self, _url: &Url) -> Result<(), BrowserError> {
        Err(BrowserError::Unavailable(
            "browser opening is turned off".to_owned(),
        ))
    }
}

/// A browser stand-in that requests the authorization URL with an HTTP
/// client and follows the redirects to the loopback listener. It completes
/// a sign-in only where the server approves without a page, such as the
/// sandbox gateway started with `--auto-login`; `ferry demo` and tests use
/// it. Only loopback URLs are followed.
#[derive(Debug, Clone)]
pub struct RedirectFollower {
    client: reqwest::Client,
}

impl RedirectFollower {
    pub fn new() -> RedirectFollower {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= 10 || !crate::http::is_loopback(attempt.url()) {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .expect("a plain HTTP client builds");
        RedirectFollower { client }
    }
}

impl Default for RedirectFollower {
    fn default() -> RedirectFollower {
        RedirectFollower::new()
    }
}

impl BrowserLauncher for RedirectFollower {
    fn open(&self, url: &Url) -> Result<(), BrowserError> {
        if !crate::http::is_loopback(url) {
            return Err(BrowserError::Unavailable(format!(
                "the redirect follower visits loopback servers only, not {}",
                crate::http::display_url(url)
            )));
        }
        let client = self.client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            match client.get(url).send().await {
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "redirect follower finished")
                }
                Err(error) => tracing::warn!(%error, "redirect follower failed"),
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browser_entry_gets_url_appended() {
        assert_eq!(
            command_for_entry("firefox --new-tab", "http://x/?a=1&b=2"),
            ["firefox", "--new-tab", "http://x/?a=1&b=2"]
        );
    }

    #[test]
    fn browser_entry_placeholder_is_replaced() {
        assert_eq!(
            command_for_entry("lynx -dump %s", "http://x/"),
            ["lynx", "-dump", "http://x/"]
        );
    }
}
