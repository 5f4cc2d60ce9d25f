//! Networks of hospitals: a private CA, a CONNECT proxy, loopback-only
//! plain http, no redirects, and bounded response bodies, all against
//! servers this test starts on 127.0.0.1.
//!
//! The private CA reaches the trust store in two ways:
//! - through `SSL_CERT_FILE`, which the platform verifier reads on Linux
//!   (rustls-platform-verifier loads the system roots with
//!   rustls-native-certs), in a child process so the variable does not
//!   leak into parallel tests, together with `HTTPS_PROXY`;
//! - through `HttpOptions::extra_roots`, in this process.
//!
//! The server's certificate names `hospital.test`, a name that only the
//! proxy resolves (to 127.0.0.1), so a successful request proves that it
//! went through the proxy.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};

use ferry_core::http::{
    HttpError, HttpOptions, MAX_JSON_BODY_BYTES, ProxySettings, build_client, read_json,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

const HOSPITAL_HOST: &str = "hospital.test";

struct PrivateCa {
    ca_pem: String,
    ca_der: Vec<u8>,
    server_cert_der: Vec<u8>,
    server_key_der: Vec<u8>,
}

fn private_ca() -> PrivateCa {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Ferry Test Hospital Root CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut server_params = CertificateParams::new(vec![HOSPITAL_HOST.to_owned()]).unwrap();
    server_params
        .distinguished_name
        .push(DnType::CommonName, HOSPITAL_HOST);
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    PrivateCa {
        ca_pem: ca.pem(),
        ca_der: ca.der().to_vec(),
        server_cert_der: server_cert.der().to_vec(),
        server_key_der: server_key.serialize_der(),
    }
}

/// Starts an HTTPS server for `hospital.test` that returns a small JSON
/// document for every request.
async fn start_tls_server(ca: &PrivateCa) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![ca.server_cert_der.clone().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(ca.server_key_der.clone().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();

    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = read_head(&mut stream).await;
                let body = r#"{"server":"hospital"}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

/// Starts a CONNECT proxy that records each requested authority and tunnels
/// `hospital.test:PORT` to `127.0.0.1:PORT`. It rejects every other host,
/// so no traffic leaves the machine.
async fn start_connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();

    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let head = read_head(&mut client).await;
                let mut words = head.split_whitespace();
                let (Some("CONNECT"), Some(authority)) = (words.next(), words.next()) else {
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                        .await;
                    return;
                };
                recorded.lock().unwrap().push(authority.to_owned());

                let Some(port) = authority
                    .strip_prefix(&format!("{HOSPITAL_HOST}:"))
                    .and_then(|port| port.parse::<u16>().ok())
                else {
                    let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", port)).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (address, seen)
}

/// Reads a request head up to the blank line (at most 64 KiB).
async fn read_head<S: AsyncReadExt + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Starts a plain-http loopback server that sends `response` on each
/// connection and records the request heads.
async fn start_plain_server(response: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                recorded.lock().unwrap().push(head);
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (address, heads)
}

fn options_with_proxy(proxy: SocketAddr) -> HttpOptions {
    HttpOptions {
        proxies: ProxySettings {
            https: Some(format!("http://{proxy}")),
            ..ProxySettings::default()
        },
        extra_roots: Vec::new(),
        ..HttpOptions::default()
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(" / ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test]
async fn extra_root_through_proxy_is_trusted() {
    let ca = private_ca();
    let server = start_tls_server(&ca).await;
    let (proxy, seen) = start_connect_proxy().await;
    let mut options = options_with_proxy(proxy);
    options.extra_roots = vec![reqwest::Certificate::from_der(&ca.ca_der).unwrap()];
    let client = build_client(&options).unwrap();

    let url = format!("https://{HOSPITAL_HOST}:{}/fhir/metadata", server.port());
    let response = client.get(&url).send().await.unwrap();

    assert_eq!(response.status(), 200);
    let body: serde_json::Value = read_json(response).await.unwrap();
    assert_eq!(body["server"], "hospital");
    assert_eq!(
        *seen.lock().unwrap(),
        [format!("{HOSPITAL_HOST}:{}", server.port())]
    );
}

#[tokio::test]
async fn unknown_private_ca_is_rejected() {
    // The CA is generated now, so no trust store of this machine contains it.
    let ca = private_ca();
    let server = start_tls_server(&ca).await;
    let (proxy, seen) = start_connect_proxy().await;
    let client = build_client(&options_with_proxy(proxy)).unwrap();

    let url = format!("https://{HOSPITAL_HOST}:{}/fhir/metadata", server.port());
    let error = client.get(&url).send().await.unwrap_err();

    let chain = error_chain(&error);
    assert!(chain.to_lowercase().contains("certificate"), "{chain}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the request did not use the proxy"
    );
}

/// Runs in a child process with `SSL_CERT_FILE` and `HTTPS_PROXY` set by
/// [`system_trust_store_and_proxy_variables_are_honoured`]; skipped in a
/// normal run.
#[tokio::test]
async fn child_fetches_with_default_options() {
    let Ok(url) = std::env::var("FERRY_TEST_FETCH_URL") else {
        return;
    };
    let client = build_client(&HttpOptions::default()).unwrap();
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = read_json(response).await.unwrap();
    assert_eq!(body["server"], "hospital");
}

#[tokio::test]
async fn system_trust_store_and_proxy_variables_are_honoured() {
    let ca = private_ca();
    let server = start_tls_server(&ca).await;
    let (proxy, seen) = start_connect_proxy().await;
    let folder = tempfile::tempdir().unwrap();
    let ca_file = folder.path().join("hospital-ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();

    let url = format!("https://{HOSPITAL_HOST}:{}/fhir/metadata", server.port());
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "child_fetches_with_default_options",
            "--exact",
            "--nocapture",
        ])
        .env("FERRY_TEST_FETCH_URL", &url)
        .env("SSL_CERT_FILE", &ca_file)
        .env("HTTPS_PROXY", format!("http://{proxy}"))
        .env_remove("https_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("SSL_CERT_DIR");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("1 passed"), "child did not run:\n{stdout}");
    assert_eq!(
        *seen.lock().unwrap(),
        [format!("{HOSPITAL_HOST}:{}", server.port())]
    );
}

#[tokio::test]
async fn loopback_requests_bypass_proxy() {
    let (proxy, seen) = start_connect_proxy().await;
    let (server, heads) = start_plain_server(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    let options = HttpOptions {
        proxies: ProxySettings {
            https: Some(format!("http://{proxy}")),
            http: Some(format!("http://{proxy}")),
            ..ProxySettings::default()
        },
        ..HttpOptions::default()
    };
    let client = build_client(&options).unwrap();

    let response = client
        .get(format!("http://127.0.0.1:{}/fhir", server.port()))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(heads.lock().unwrap().len(), 1);
    assert!(
        seen.lock().unwrap().is_empty(),
        "the proxy saw {:?}",
        seen.lock().unwrap()
    );
}

#[tokio::test]
async fn redirect_is_not_followed_with_token() {
    let (target, target_heads) =
        start_plain_server("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{}/elsewhere\r\nContent-Length: 0\r\n\r\n",
        target.port()
    );
    let (server, _) = start_plain_server(Box::leak(redirect.into_boxed_str())).await;
    let client = build_client(&HttpOptions::default()).unwrap();

    let response = client
        .get(format!(
            "http://127.0.0.1:{}/grant/v1/uploads",
            server.port()
        ))
        .bearer_auth("access-token-value")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 302);
    assert!(
        target_heads.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
}

#[tokio::test]
async fn declared_oversized_json_body_is_rejected() {
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
        MAX_JSON_BODY_BYTES + 1
    );
    let (server, _) = start_plain_server(Box::leak(response.into_boxed_str())).await;
    let client = build_client(&HttpOptions::default()).unwrap();

    let response = client
        .get(format!("http://127.0.0.1:{}/big", server.port()))
        .send()
        .await
        .unwrap();
    let error = read_json::<serde_json::Value>(response).await.unwrap_err();

    assert!(matches!(error, HttpError::BodyTooLarge { .. }), "{error}");
}

#[tokio::test]
async fn endless_json_body_is_cut_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let _ = read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await;
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
        // At most 64 MiB, far past the limit; stops when the client hangs up.
        for _ in 0..1024 {
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let client = build_client(&HttpOptions::default()).unwrap();

    let response = client
        .get(format!("http://{address}/endless"))
        .send()
        .await
        .unwrap();
    let error = read_json::<serde_json::Value>(response).await.unwrap_err();

    let HttpError::BodyTooLarge { url, limit } = error else {
        panic!("expected BodyTooLarge, got {error}");
    };
    assert_eq!(limit, MAX_JSON_BODY_BYTES);
    assert_eq!(url, format!("http://{address}/endless"));
}
