//! A hostile server on loopback against the client: endless bodies,
//! redirects to another host, plain http to a remote host, and download
//! names that try to leave the chosen folder.

use std::path::{Component, Path};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ferry_core::grant::{GrantClient, StaticAccessToken};
use ferry_core::http::{
    HttpOptions, MAX_JSON_BODY_BYTES, ProxySettings, build_client, require_secure,
};
use ferry_core::secrets::Secret;
use ferry_core::transfer::safe_file_name;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;

/// Bytes an endless server offers before it gives up; far above every
/// bound the client states.
const ENDLESS_LIMIT: u64 = 256 * 1024 * 1024;

fn client() -> reqwest::Client {
    build_client(&HttpOptions {
        proxies: ProxySettings::default(),
        ..HttpOptions::default()
    })
    .expect("build the HTTP client")
}

/// Starts a server that answers every request with 200 and a JSON body
/// that never ends, and returns its URL and the bytes it managed to send.
async fn endless_json_server() -> (Url, Arc<AtomicU64>) {
    endless_server("200 OK").await
}

/// Starts a server that answers every request with `status` and a body
/// that never ends, and returns its URL and the bytes it managed to send.
async fn endless_server(status: &'static str) -> (Url, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut head = vec![0; 16 * 1024];
                let _ = socket.read(&mut head).await;
                let header = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n["
                );
                if socket.write_all(header.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 * 1024];
                while counter.load(Ordering::Relaxed) < ENDLESS_LIMIT {
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                    counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (
        Url::parse(&format!("http://{address}/grant/v1")).unwrap(),
        sent,
    )
}

#[tokio::test]
async fn grant_client_stops_reading_an_endless_body() {
    let (base_url, sent) = endless_json_server().await;
    let tokens = Arc::new(StaticAccessToken(Secret::new("test-token")));
    let grants = GrantClient::new(base_url, client(), tokens);

    let result = grants.keys().await;

    assert!(result.is_err(), "an endless body parsed as a JWKS");
    // The client's bound is 4 MiB; socket buffers let the server get some
    // megabytes further before the connection closes.
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        sent < 4 * MAX_JSON_BODY_BYTES as u64,
        "the client read {sent} bytes of an endless body"
    );
}

#[tokio::test]
async fn grant_client_cuts_an_endless_error_body() {
    let (base_url, sent) = endless_server("500 Internal Server Error").await;
    let tokens = Arc::new(StaticAccessToken(Secret::new("test-token")));
    let grants = GrantClient::new(base_url, client(), tokens);

    let error = grants
        .keys()
        .await
        .expect_err("a 500 answer parsed as a JWKS");

    assert_eq!(error.status(), Some(500), "{error}");
    assert!(error.is_retryable(), "{error}");
    assert!(
        error.to_string().len() < 1024,
        "the message carries the whole body"
    );
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        sent < 4 * MAX_JSON_BODY_BYTES as u64,
        "the client read {sent} bytes of an endless error body"
    );
}

#[tokio::test]
async fn discovery_stops_reading_an_endless_body() {
    let (base_url, sent) = endless_json_server().await;

    let result = ferry_core::login::discover(&client(), &base_url).await;

    let error = result.expect_err("an endless body parsed as a SMART configuration");
    assert!(error.to_string().contains("larger than"), "{error}");
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        sent < 4 * MAX_JSON_BODY_BYTES as u64,
        "the client read {sent} bytes"
    );
}

#[tokio::test]
async fn redirect_to_another_host_does_not_carry_the_token() {
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_address = other.local_addr().unwrap();
    let contacted = Arc::new(AtomicBool::new(false));
    let flag = contacted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = other.accept().await {
            flag.store(true, Ordering::Relaxed);
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                .await;
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut head = vec![0; 16 * 1024];
            let _ = socket.read(&mut head).await;
            let response = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{other_address}/stolen\r\ncontent-length: 0\r\n\r\n"
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    let base_url = Url::parse(&format!("http://{address}/grant/v1")).unwrap();
    let tokens = Arc::new(StaticAccessToken(Secret::new("bearer-secret")));
    let grants = GrantClient::new(base_url, client(), tokens);

    let result = grants.download("doc-1").await;

    assert!(result.is_err(), "a redirect was followed to a result");
    let message = result.unwrap_err().to_string();
    assert!(!message.contains("bearer-secret"), "{message}");
    assert!(
        !contacted.load(Ordering::Relaxed),
        "the client followed the redirect to another host"
    );
}

#[test]
fn remote_plain_http_is_refused() {
    for text in [
        "http://hospital.example/fhir",
        "http://10.0.0.5:7420/fhir",
        "http://127.0.0.1.nip.io/fhir",
        "http://localhost.evil.example/fhir",
        "http://[::ffff:10.0.0.5]/fhir",
        "ftp://127.0.0.1/fhir",
        "file:///etc/passwd",
    ] {
        assert!(
            require_secure(&Url::parse(text).unwrap()).is_err(),
            "{text} was accepted"
        );
    }
}

#[test]
fn hostile_download_names_stay_inside_the_folder() {
    let folder = tempfile::tempdir().unwrap();
    let long = format!("{}.zip", "x".repeat(1000));
    let long_unicode = format!("{}.dcm", "é".repeat(300));
    let names = [
        "../../../etc/passwd",
        "..\\..\\Windows\\System32\\drivers\\etc\\hosts",
        "/etc/shadow",
        "C:\\Users\\victim\\evil.exe",
        "C:evil.exe",
        "\\\\server\\share\\evil.exe",
        "..",
        ".",
        "...",
        "",
        " ",
        "nul\0byte.zip",
        "\0",
        "CON",
        "con.txt",
        "aux.tar.gz",
        "LPT1 .txt",
        "COM9",
        "study.zip.",
        "study.zip   ",
        ".bashrc",
        "a/../../b",
        "line\nbreak.zip",
        "tab\t.zip",
        "\u{202e}piz.exe",
        &long,
        &long_unicode,
    ];

    for name in names {
        let safe = safe_file_name(name);
        let path = folder.path().join(&safe);

        assert!(!safe.is_empty(), "{name:?}");
        assert!(safe.len() <= 255, "{name:?} gave {} bytes", safe.len());
        assert_eq!(path.parent(), Some(folder.path()), "{name:?} gave {safe:?}");
        let components: Vec<Component<'_>> = Path::new(&safe).components().collect();
        assert!(
            matches!(components.as_slice(), [Component::Normal(_)]),
            "{name:?} gave {safe:?}"
        );
        assert!(
            !safe.contains(['\0', ':', '\\', '/']),
            "{name:?} gave {safe:?}"
        );
        assert!(
            !safe.starts_with('.'),
            "{name:?} gave the hidden name {safe:?}"
        );

        std::fs::write(&path, b"x")
            .unwrap_or_else(|error| panic!("{name:?} gave {safe:?}: {error}"));
        std::fs::remove_file(&path).unwrap();
    }
}

/// Returns "old-token" until the grant client asks for a renewed token,
/// then "new-token".
struct RotatingTokens;

impl ferry_core::grant::AccessTokenSource for RotatingTokens {
    fn access_token(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<Secret, ferry_core::grant::AccessTokenError>> {
        Box::pin(async { Ok(Secret::new("old-token")) })
    }

    fn renewed_access_token(
        &self,
    ) -> futures::future::BoxFuture<'_, Result<Secret, ferry_core::grant::AccessTokenError>> {
        Box::pin(async { Ok(Secret::new("new-token")) })
    }
}

/// Starts a gateway stand-in that answers 401 `invalid_token` unless the
/// bearer token is `accepted`, and 200 with an empty JWKS otherwise.
/// Returns its URL and the number of requests it received.
async fn token_checking_server(accepted: &'static str) -> (Url, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            let mut head = vec![0; 16 * 1024];
            let read = socket.read(&mut head).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&head[..read]).to_ascii_lowercase();
            let response = if head.contains(&format!("authorization: bearer {accepted}\r\n")) {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"keys\":[]}"
            } else {
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 25\r\nconnection: close\r\n\r\n{\"error\":\"invalid_token\"}"
            };
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (
        Url::parse(&format!("http://{address}/grant/v1")).unwrap(),
        requests,
    )
}

#[tokio::test]
async fn rejected_access_token_is_renewed_once() {
    let (base_url, requests) = token_checking_server("new-token").await;
    let grants = GrantClient::new(base_url, client(), Arc::new(RotatingTokens));

    let keys = grants.keys().await.expect("the renewed token is accepted");

    assert!(keys.keys.is_empty());
    assert_eq!(
        requests.load(Ordering::Relaxed),
        2,
        "one rejected request and one retry"
    );
}

#[tokio::test]
async fn token_rejected_twice_gives_401() {
    let (base_url, requests) = token_checking_server("never-issued").await;
    let grants = GrantClient::new(base_url, client(), Arc::new(RotatingTokens));

    let error = grants.keys().await.expect_err("a rejected token passed");

    assert_eq!(error.status(), Some(401), "{error}");
    assert!(!error.is_retryable(), "{error}");
    assert_eq!(
        requests.load(Ordering::Relaxed),
        2,
        "the request was retried more than once"
    );
}
