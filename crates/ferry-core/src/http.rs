//! The HTTP client that every Ferry request goes through.
//!
//! - TLS: rustls, with server certificates verified by
//!   `rustls-platform-verifier` against the operating system's trust store
//!   (reqwest 0.13's `rustls` feature), so a hospital CA installed on the
//!   workstation works without configuration. On Linux the platform
//!   verifier loads the system roots with `rustls-native-certs`, which also
//!   reads `SSL_CERT_FILE` and `SSL_CERT_DIR`.
//! - Proxies: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (or
//!   their lower-case forms) are read once when a client is built. Loopback
//!   destinations never go through a proxy.
//! - Plain `http://` is accepted for loopback hosts only ([`require_secure`]).
//! - Redirects are not followed, so a bearer token is never replayed to
//!   another host.
//! - Every body read from a server has a size bound: JSON bodies fail past
//!   [`MAX_JSON_BODY_BYTES`] ([`read_json`]), and error bodies are cut at
//!   [`MAX_ERROR_BODY_BYTES`] ([`read_prefix`]).
//!
//! Not covered: proxy settings stored outside the environment (the macOS and
//! Windows system proxy configuration, PAC files).

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use url::{Host, Url};

/// Default maximum size of a JSON response body: discovery documents, token
/// responses and grant API replies are a few KiB.
pub const MAX_JSON_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Maximum part of an error response body that is read, for example an S3
/// XML error or a grant API error. Such bodies are typically under 1 KiB,
/// and only their first few hundred characters reach a message.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Hosts that never go through a proxy, added to whatever `NO_PROXY` lists.
const LOOPBACK_NO_PROXY: &str = "localhost,127.0.0.0/8,::1";

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "{url} uses plain http to a host that is not loopback; use an https:// URL \
         (plain http is accepted only for 127.0.0.0/8, [::1] and localhost)"
    )]
    InsecureUrl { url: String },
    #[error("{url} uses the unsupported scheme '{scheme}'; use an https:// URL")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("invalid proxy URL '{value}' in {variable}: {source}")]
    InvalidProxy {
        variable: &'static str,
        value: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to set up the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    #[error("request to {url} failed: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A 5xx or 429 response whose body is not read further, for example
    /// from a token endpoint behind an overloaded proxy.
    #[error("{url} returned {status}, a temporary failure; try again later")]
    Unavailable { url: String, status: u16 },
    #[error("response from {url} is larger than the limit of {limit} bytes")]
    BodyTooLarge { url: String, limit: usize },
    #[error("response from {url} is not the expected JSON: {source}")]
    InvalidJson {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Proxy settings, normally read from the environment with
/// [`ProxySettings::from_env`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// Proxy for `https://` URLs (`HTTPS_PROXY`).
    pub https: Option<String>,
    /// Proxy for `http://` URLs (`HTTP_PROXY`).
    pub http: Option<String>,
    /// Proxy for both schemes when the scheme's own variable is unset
    /// (`ALL_PROXY`).
    pub all: Option<String>,
    /// Comma-separated hosts, domains and CIDR ranges that bypass the proxy
    /// (`NO_PROXY`), with curl's syntax.
    pub no_proxy: Option<String>,
}

impl ProxySettings {
    /// Reads `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, each in
    /// upper or lower case (upper case wins).
    pub fn from_env() -> ProxySettings {
        ProxySettings::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the settings from a variable lookup, so tests need not change
    /// the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> ProxySettings {
        let read = |upper: &str, lower: &str| {
            lookup(upper)
                .or_else(|| lookup(lower))
                .filter(|value| !value.trim().is_empty())
        };
        ProxySettings {
            https: read("HTTPS_PROXY", "https_proxy"),
            http: read("HTTP_PROXY", "http_proxy"),
            all: read("ALL_PROXY", "all_proxy"),
            no_proxy: read("NO_PROXY", "no_proxy"),
        }
    }

    fn no_proxy_list(&self) -> Option<reqwest::NoProxy> {
        let list = match &self.no_proxy {
            Some(configured) => format!("{configured},{LOOPBACK_NO_PROXY}"),
            None => LOOPBACK_NO_PROXY.to_owned(),
        };
        reqwest::NoProxy::from_string(&list)
    }

    fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, HttpError> {
        // Disables reqwest's own environment lookup, which would not exempt
        // loopback hosts.
        builder = builder.no_proxy();

        let https = self.https.as_ref().map(|value| ("HTTPS_PROXY", value));
        let http = self.http.as_ref().map(|value| ("HTTP_PROXY", value));
        let all = self.all.as_ref().map(|value| ("ALL_PROXY", value));

        if let Some((variable, value)) = https.or(all) {
            let proxy = reqwest::Proxy::https(value.as_str())
                .map_err(|source| invalid_proxy(variable, value, source))?
                .no_proxy(self.no_proxy_list());
            builder = builder.proxy(proxy);
        }
        if let Some((variable, value)) = http.or(all) {
            let proxy = reqwest::Proxy::http(value.as_str())
                .map_err(|source| invalid_proxy(variable, value, source))?
                .no_proxy(self.no_proxy_list());
            builder = builder.proxy(proxy);
        }
        Ok(builder)
    }
}

fn invalid_proxy(variable: &'static str, value: &str, source: reqwest::Error) -> HttpError {
    // A proxy URL may carry a password: only the part before the userinfo
    // reaches the message.
    let value = match Url::parse(value) {
        Ok(url) => display_url(&url),
        Err(_) => "(unparsable value)".to_owned(),
    };
    HttpError::InvalidProxy {
        variable,
        value,
        source,
    }
}

/// Settings of [`build_client`].
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub proxies: ProxySettings,
    /// Roots trusted in addition to the operating system's trust store.
    pub extra_roots: Vec<reqwest::Certificate>,
    pub connect_timeout: Duration,
    /// Idle timeout: the maximum time without any byte read from a
    /// connection. It never limits how long a whole transfer may take.
    pub read_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            proxies: ProxySettings::from_env(),
            extra_roots: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Builds a client with the TLS, proxy, redirect and timeout rules of this
/// module. Callers still check each URL with [`require_secure`] before
/// sending anything to it.
pub fn build_client(options: &HttpOptions) -> Result<reqwest::Client, HttpError> {
    let builder = base_builder(options)?.read_timeout(options.read_timeout);
    builder.build().map_err(HttpError::Build)
}

/// Builds the client for requests to the object store, with the TLS, proxy
/// and redirect rules of [`build_client`] but without its read timeout:
/// the transfer engine applies its own idle timeout, which also counts the
/// bytes a part upload sends before the store's response starts.
/// So a loopback store is reached directly even when `HTTP_PROXY` is set,
/// and a signed URL never reaches a proxy in plain text.
pub fn build_store_client(options: &HttpOptions) -> Result<reqwest::Client, HttpError> {
    base_builder(options)?.build().map_err(HttpError::Build)
}

fn base_builder(options: &HttpOptions) -> Result<reqwest::ClientBuilder, HttpError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(options.connect_timeout);

    builder = options.proxies.apply(builder)?;
    if !options.extra_roots.is_empty() {
        builder = builder.tls_certs_merge(options.extra_roots.iter().cloned());
    }
    Ok(builder)
}

/// Checks that `url` is `https://`, or `http://` to a loopback host
/// (127.0.0.0/8, `::1` or `localhost`).
pub fn require_secure(url: &Url) -> Result<(), HttpError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(HttpError::InsecureUrl {
            url: display_url(url),
        }),
        scheme => Err(HttpError::UnsupportedScheme {
            url: display_url(url),
            scheme: scheme.to_owned(),
        }),
    }
}

/// Returns whether the URL's host is a loopback address or `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(address)) => IpAddr::V4(address).is_loopback(),
        Some(Host::Ipv6(address)) => IpAddr::V6(address).is_loopback(),
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Formats a URL for logs and error messages: scheme, host, port and path,
/// without the userinfo, query string or fragment, where credentials and
/// signatures live.
pub fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// Reads a response body, failing once it grows past `limit` bytes, so an
/// endless body cannot exhaust memory.
pub async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Bytes, HttpError> {
    let url = display_url(response.url());
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(HttpError::BodyTooLarge { url, limit });
    }

    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| HttpError::Request {
            url: url.clone(),
            source,
        })?;
        if body.len() + chunk.len() > limit {
            return Err(HttpError::BodyTooLarge { url, limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads at most `limit` bytes of a response body and drops the rest,
/// returning the bytes read and whether the body was longer. Meant for error
/// bodies, where the status matters more than the whole text.
pub async fn read_prefix(
    response: reqwest::Response,
    limit: usize,
) -> Result<(Bytes, bool), HttpError> {
    let url = display_url(response.url());
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| HttpError::Request {
            url: url.clone(),
            source,
        })?;
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body.freeze(), true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), false))
}

/// Reads and parses a JSON body of at most [`MAX_JSON_BODY_BYTES`].
pub async fn read_json<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, HttpError> {
    let url = display_url(response.url());
    let body = read_limited(response, MAX_JSON_BODY_BYTES).await?;
    serde_json::from_slice(&body).map_err(|source| HttpError::InvalidJson { url, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn loopback_http_is_accepted() {
        for text in [
            "http://127.0.0.1:7420/fhir",
            "http://127.8.9.10/",
            "http://[::1]:8080/callback",
            "http://localhost/fhir",
            "http://LOCALHOST:1/",
            "https://hospital.example/fhir",
        ] {
            assert!(require_secure(&url(text)).is_ok(), "{text} was rejected");
        }
    }

    #[test]
    fn remote_plain_http_is_rejected_with_url() {
        let error = require_secure(&url("http://hospital.example/fhir?x=1")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("http://hospital.example/fhir uses plain http"),
            "{message}"
        );
        assert!(!message.contains("x=1"), "{message}");
    }

    #[test]
    fn lookalike_loopback_names_are_rejected() {
        for text in [
            "http://localhost.evil.example/",
            "http://127.0.0.1.nip.io/",
            "http://10.0.0.1/",
            "http://[::2]/",
        ] {
            assert!(require_secure(&url(text)).is_err(), "{text} was accepted");
        }
    }

    #[test]
    fn other_schemes_are_rejected() {
        let error = require_secure(&url("ftp://127.0.0.1/file")).unwrap_err();
        assert!(matches!(error, HttpError::UnsupportedScheme { .. }));
    }

    #[test]
    fn display_url_drops_credentials_and_query() {
        let shown = display_url(&url(
            "https://user:pw@store.example/bucket/key?X-Amz-Signature=abc#frag",
        ));
        assert_eq!(shown, "https://store.example/bucket/key");
    }

    #[test]
    fn proxy_settings_prefer_upper_case_variables() {
        let settings = ProxySettings::from_lookup(|name| match name {
            "HTTPS_PROXY" => Some("http://upper:3128".to_owned()),
            "https_proxy" => Some("http://lower:3128".to_owned()),
            "http_proxy" => Some("http://plain:3128".to_owned()),
            "no_proxy" => Some(".hospital.example".to_owned()),
            "ALL_PROXY" => Some("  ".to_owned()),
            _ => None,
        });
        assert_eq!(settings.https.as_deref(), Some("http://upper:3128"));
        assert_eq!(settings.http.as_deref(), Some("http://plain:3128"));
        assert_eq!(settings.all, None);
        assert_eq!(settings.no_proxy.as_deref(), Some(".hospital.example"));
    }

    #[test]
    fn invalid_proxy_message_hides_password() {
        let options = HttpOptions {
            proxies: ProxySettings {
                https: Some("http://user:secret@[proxy".to_owned()),
                ..ProxySettings::default()
            },
            ..HttpOptions::default()
        };
        let error = build_client(&options).expect_err("an unparsable proxy URL was accepted");
        let message = error.to_string();
        assert!(message.contains("HTTPS_PROXY"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
}
