//! The loopback redirect listener of RFC 8252 §7.3 and the checks applied to
//! every authorization response, whether it arrives on the listener or is
//! pasted by the user.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use oauth2::AuthorizationCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use url::Url;

use super::{LoginError, LoginPrompt};

/// Path of the redirect URI on the loopback listener.
pub const CALLBACK_PATH: &str = "/callback";
/// Maximum size of a request head on the listener.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;
/// Time a connection to the listener may take to send its request.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Maximum length of server-provided text (`error_description`) shown to the
/// user.
const MAX_SERVER_TEXT_CHARS: usize = 300;

/// The values an authorization response must match.
#[derive(Clone)]
pub struct CallbackCheck {
    /// The `state` sent in the authorization request.
    pub state: String,
    /// The issuer from discovery, compared with `iss` (RFC 9207).
    pub issuer: Option<String>,
    /// Whether the server advertised
    /// `authorization_response_iss_parameter_supported`, which makes `iss`
    /// mandatory in responses.
    pub require_iss: bool,
}

impl std::fmt::Debug for CallbackCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackCheck")
            .field("state", &"[redacted]")
            .field("issuer", &self.issuer)
            .field("require_iss", &self.require_iss)
            .finish()
    }
}

/// The result of checking one authorization response.
#[derive(Debug)]
pub enum CallbackOutcome {
    /// Not a response to this sign-in (wrong or missing `state`, or a
    /// malformed request). The listener responds with an error page and
    /// keeps waiting.
    Ignored(String),
    /// The authorization code of this sign-in.
    Code(AuthorizationCode),
    /// A response to this sign-in that ends it with an error.
    Failed(LoginError),
}

/// Checks an authorization response's query parameters. `state` is checked
/// before anything else, so a response that does not belong to this sign-in
/// can neither end it nor supply a code.
pub fn check_callback(pairs: &[(String, String)], check: &CallbackCheck) -> CallbackOutcome {
    for name in ["state", "code", "iss", "error"] {
        if pairs.iter().filter(|(key, _)| key == name).count() > 1 {
            // RFC 6749 §3.1: response parameters must not be repeated.
            return CallbackOutcome::Ignored(format!(
                "the parameter `{name}` appears more than once"
            ));
        }
    }
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };

    match get("state") {
        None => return CallbackOutcome::Ignored("the response has no `state`".to_owned()),
        Some(state) if !constant_time_eq(state.as_bytes(), check.state.as_bytes()) => {
            return CallbackOutcome::Ignored(
                "the response's `state` belongs to another sign-in".to_owned(),
            );
        }
        Some(_) => {}
    }

    // RFC 9207 §2.4: compare `iss` with the issuer from discovery, and reject
    // a response without `iss` when the server advertises that it sends one.
    match (get("iss"), check.issuer.as_deref()) {
        (Some(received), Some(expected)) if received != expected => {
            return CallbackOutcome::Failed(LoginError::IssuerMismatch {
                expected: expected.to_owned(),
                received: sanitize(received),
            });
        }
        (None, Some(expected)) if check.require_iss => {
            return CallbackOutcome::Failed(LoginError::MissingIssuer {
                expected: expected.to_owned(),
            });
        }
        _ => {}
    }

    if let Some(error) = get("error") {
        return CallbackOutcome::Failed(LoginError::Authorization {
            error: sanitize(error),
            description: get("error_description").map(sanitize),
        });
    }
    match get("code") {
        Some(code) if !code.is_empty() => {
            CallbackOutcome::Code(AuthorizationCode::new(code.to_owned()))
        }
        _ => CallbackOutcome::Failed(LoginError::MissingCode),
    }
}

/// Checks a redirect URL pasted by the user, for sign-ins where the browser
/// cannot reach the loopback listener (for example through SSH).
pub fn check_pasted_url(text: &str, check: &CallbackCheck) -> CallbackOutcome {
    let Ok(url) = Url::parse(text.trim()) else {
        return CallbackOutcome::Ignored(
            "the pasted text is not a URL; paste the whole address from the browser's address bar"
                .to_owned(),
        );
    };
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    check_callback(&pairs, check)
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// Keeps printable characters of server-provided text, cut to a bounded
/// length, before it reaches a terminal or page.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|character| !character.is_control())
        .take(MAX_SERVER_TEXT_CHARS)
        .collect()
}

/// A listener on an ephemeral loopback port that receives the authorization
/// response.
#[derive(Debug)]
pub struct LoopbackListener {
    listener: TcpListener,
    redirect_uri: Url,
}

impl LoopbackListener {
    /// Binds `127.0.0.1` on a port chosen by the system, or `[::1]` when IPv4
    /// loopback is unavailable. The redirect URI names exactly the bound
    /// address (RFC 8252 §7.3 and §8.3 prefer the IP literal to `localhost`).
    pub async fn bind() -> Result<LoopbackListener, LoginError> {
        let ipv4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let ipv6 = SocketAddr::from((Ipv6Addr::LOCALHOST, 0));
        let listener = match TcpListener::bind(ipv4).await {
            Ok(listener) => listener,
            Err(ipv4_error) => {
                tracing::debug!(error = %ipv4_error, "IPv4 loopback unavailable, trying [::1]");
                TcpListener::bind(ipv6)
                    .await
                    .map_err(LoginError::Listener)?
            }
        };
        LoopbackListener::from_listener(listener)
    }

    /// Uses an already bound listener; its address must be loopback.
    pub fn from_listener(listener: TcpListener) -> Result<LoopbackListener, LoginError> {
        let address = listener.local_addr().map_err(LoginError::Listener)?;
        assert!(
            address.ip().is_loopback(),
            "the redirect listener must be on loopback"
        );
        let redirect_uri = Url::parse(&format!("http://{address}{CALLBACK_PATH}"))
            .expect("a socket address forms a valid URL");
        Ok(LoopbackListener {
            listener,
            redirect_uri,
        })
    }

    pub fn redirect_uri(&self) -> &Url {
        &self.redirect_uri
    }

    /// Waits for the authorization response of this sign-in, from the
    /// listener or from `paste`, until `timeout` passes. Responses that do
    /// not belong to this sign-in are reported through `prompt` and the wait
    /// goes on.
    pub async fn wait(
        self,
        check: CallbackCheck,
        mut paste: Option<mpsc::Receiver<String>>,
        timeout: Duration,
        prompt: &(dyn Fn(LoginPrompt) + Send + Sync),
    ) -> Result<AuthorizationCode, LoginError> {
        let check = Arc::new(check);
        let (outcomes, mut received) = mpsc::channel::<CallbackOutcome>(16);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);

        loop {
            let outcome = tokio::select! {
                accepted = self.listener.accept() => {
                    match accepted {
                        Ok((stream, peer)) => {
                            tracing::debug!(%peer, "connection on the redirect listener");
                            tokio::spawn(serve_connection(stream, check.clone(), outcomes.clone()));
                        }
                        Err(error) => tracing::warn!(%error, "accepting on the redirect listener failed"),
                    }
                    continue;
                }
                Some(outcome) = received.recv() => outcome,
                line = next_line(&mut paste), if paste.is_some() => match line {
                    Some(line) => check_pasted_url(&line, &check),
                    None => {
                        paste = None;
                        continue;
                    }
                },
                () = &mut deadline => {
                    return Err(LoginError::TimedOut { waited: timeout });
                }
            };

            match outcome {
                CallbackOutcome::Code(code) => return Ok(code),
                CallbackOutcome::Failed(error) => return Err(error),
                CallbackOutcome::Ignored(reason) => {
                    tracing::warn!(%reason, "authorization response ignored");
                    prompt(LoginPrompt::ResponseIgnored { reason });
                }
            }
        }
    }
}

async fn next_line(paste: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match paste {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    check: Arc<CallbackCheck>,
    outcomes: mpsc::Sender<CallbackOutcome>,
) {
    let head =
        match tokio::time::timeout(REQUEST_READ_TIMEOUT, read_request_head(&mut stream)).await {
            Ok(Ok(head)) => head,
            Ok(Err(reason)) => {
                let _ = respond(&mut stream, 400, "Bad request", &reason).await;
                return;
            }
            Err(_) => return,
        };

    let Some(target) = request_target(&head) else {
        let _ = respond(
            &mut stream,
            400,
            "Bad request",
            "Ferry expected a GET request.",
        )
        .await;
        return;
    };
    let Ok(url) = Url::parse("http://loopback.invalid").and_then(|base| base.join(&target)) else {
        let _ = respond(
            &mut stream,
            400,
            "Bad request",
            "The request target is not a valid path.",
        )
        .await;
        return;
    };
    if url.path() != CALLBACK_PATH {
        let _ = respond(
            &mut stream,
            404,
            "Not found",
            "Ferry is waiting for a sign-in here.",
        )
        .await;
        return;
    }

    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let outcome = check_callback(&pairs, &check);
    let (status, title, text) = match &outcome {
        CallbackOutcome::Code(_) => (
            200,
            "Signed in",
            "Ferry received the sign-in. You can close this tab and return to Ferry.".to_owned(),
        ),
        CallbackOutcome::Ignored(reason) => (
            400,
            "Not this sign-in",
            format!(
                "This response does not belong to the sign-in that Ferry is waiting for: {reason}."
            ),
        ),
        CallbackOutcome::Failed(error) => (400, "Sign-in failed", format!("{error}")),
    };
    let _ = respond(&mut stream, status, title, &text).await;
    let _ = outcomes.send(outcome).await;
}

async fn read_request_head(stream: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 2048];
    loop {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|error| format!("reading the request failed: {error}"))?;
        if read == 0 {
            return Err("the connection closed before the request ended".to_owned());
        }
        head.extend_from_slice(&buffer[..read]);
        if head.windows(4).any(|window| window == b"\r\n\r\n") {
            return String::from_utf8(head).map_err(|_| "the request is not UTF-8".to_owned());
        }
        if head.len() > MAX_REQUEST_HEAD_BYTES {
            return Err("the request is too large".to_owned());
        }
    }
}

/// Returns the target of a `GET` request line.
fn request_target(head: &str) -> Option<String> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    (method == "GET" && target.starts_with('/')).then(|| target.to_owned())
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    title: &str,
    text: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Ferry: {title}</title></head>\
         <body><h1>{title}</h1><p>{}</p></body></html>",
        escape_html(text)
    );
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oauth2::AuthorizationCode;

    fn check(require_iss: bool) -> CallbackCheck {
        CallbackCheck {
            state: "state-123".to_owned(),
            issuer: Some("https://auth.example".to_owned()),
            require_iss,
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn code_of(outcome: CallbackOutcome) -> Option<AuthorizationCode> {
        match outcome {
            CallbackOutcome::Code(code) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn matching_state_and_iss_yield_code() {
        let outcome = check_callback(
            &pairs(&[
                ("code", "c1"),
                ("state", "state-123"),
                ("iss", "https://auth.example"),
            ]),
            &check(true),
        );
        assert_eq!(code_of(outcome).unwrap().secret(), "c1");
    }

    #[test]
    fn wrong_or_missing_state_is_ignored() {
        for list in [
            pairs(&[("code", "c1"), ("state", "other")]),
            pairs(&[("code", "c1")]),
            pairs(&[("code", "c1"), ("state", "state-12")]),
        ] {
            let outcome = check_callback(&list, &check(false));
            assert!(
                matches!(outcome, CallbackOutcome::Ignored(_)),
                "{list:?}: {outcome:?}"
            );
        }
    }

    #[test]
    fn error_with_wrong_state_is_ignored() {
        let outcome = check_callback(
            &pairs(&[("error", "access_denied"), ("state", "other")]),
            &check(false),
        );
        assert!(
            matches!(outcome, CallbackOutcome::Ignored(_)),
            "{outcome:?}"
        );
    }

    #[test]
    fn repeated_state_is_ignored() {
        let outcome = check_callback(
            &pairs(&[
                ("code", "c1"),
                ("state", "state-123"),
                ("state", "state-123"),
            ]),
            &check(false),
        );
        assert!(
            matches!(outcome, CallbackOutcome::Ignored(_)),
            "{outcome:?}"
        );
    }

    #[test]
    fn iss_mismatch_fails() {
        let outcome = check_callback(
            &pairs(&[
                ("code", "c1"),
                ("state", "state-123"),
                ("iss", "https://evil.example"),
            ]),
            &check(false),
        );
        let CallbackOutcome::Failed(error) = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert!(matches!(error, LoginError::IssuerMismatch { .. }));
        assert!(
            error.to_string().contains("https://evil.example"),
            "{error}"
        );
    }

    #[test]
    fn missing_iss_fails_when_advertised() {
        let list = pairs(&[("code", "c1"), ("state", "state-123")]);
        let outcome = check_callback(&list, &check(true));
        assert!(
            matches!(
                outcome,
                CallbackOutcome::Failed(LoginError::MissingIssuer { .. })
            ),
            "{outcome:?}"
        );

        let outcome = check_callback(&list, &check(false));
        assert!(matches!(outcome, CallbackOutcome::Code(_)), "{outcome:?}");
    }

    #[test]
    fn error_response_fails_with_description() {
        let outcome = check_callback(
            &pairs(&[
                ("error", "access_denied"),
                ("error_description", "The user said no\n"),
                ("state", "state-123"),
                ("iss", "https://auth.example"),
            ]),
            &check(true),
        );
        let CallbackOutcome::Failed(error) = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert_eq!(
            error.to_string(),
            "the server refused the sign-in: access_denied: The user said no"
        );
    }

    #[test]
    fn missing_code_fails() {
        let outcome = check_callback(&pairs(&[("state", "state-123")]), &check(false));
        assert!(
            matches!(outcome, CallbackOutcome::Failed(LoginError::MissingCode)),
            "{outcome:?}"
        );
    }

    #[test]
    fn pasted_url_is_checked_like_callback() {
        let outcome = check_pasted_url(
            "  http://127.0.0.1:4000/callback?code=c9&state=state-123&iss=https%3A%2F%2Fauth.example \n",
            &check(true),
        );
        assert_eq!(code_of(outcome).unwrap().secret(), "c9");

        let outcome = check_pasted_url("code=c9&state=state-123", &check(true));
        assert!(
            matches!(outcome, CallbackOutcome::Ignored(_)),
            "{outcome:?}"
        );
    }

    #[test]
    fn request_target_accepts_get_only() {
        assert_eq!(
            request_target("GET /callback?code=1 HTTP/1.1\r\nHost: x\r\n\r\n").as_deref(),
            Some("/callback?code=1")
        );
        assert_eq!(request_target("POST /callback HTTP/1.1\r\n\r\n"), None);
        assert_eq!(request_target("GET http://evil/ HTTP/1.1\r\n\r\n"), None);
    }

    #[tokio::test]
    async fn listener_redirect_uri_names_bound_address() {
        let listener = LoopbackListener::bind().await.unwrap();
        let address = listener.listener.local_addr().unwrap();
        assert_ne!(address.port(), 0);
        assert_eq!(
            listener.redirect_uri().as_str(),
            format!("http://{address}/callback")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wait_times_out_with_advice() {
        let listener = LoopbackListener::bind().await.unwrap();
        let error = listener
            .wait(check(false), None, Duration::from_secs(300), &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(error, LoginError::TimedOut { .. }));
        assert!(error.to_string().contains("5 minutes"), "{error}");
    }

    #[tokio::test]
    async fn pasted_redirect_completes_wait() {
        let listener = LoopbackListener::bind().await.unwrap();
        let (sender, receiver) = mpsc::channel(4);
        sender.send("not a url".to_owned()).await.unwrap();
        sender
            .send("http://127.0.0.1:1/callback?code=pasted&state=state-123".to_owned())
            .await
            .unwrap();
        let ignored = std::sync::Mutex::new(Vec::new());
        let code = listener
            .wait(
                check(false),
                Some(receiver),
                Duration::from_secs(300),
                &|prompt| {
                    ignored.lock().unwrap().push(format!("{prompt:?}"));
                },
            )
            .await
            .unwrap();
        assert_eq!(code.secret(), "pasted");
        assert_eq!(ignored.lock().unwrap().len(), 1);
    }
}
