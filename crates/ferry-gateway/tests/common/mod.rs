//! A sandbox started in-process on 127.0.0.1:0 with a temporary data folder,
//! and a client that drives the SMART flow over real HTTP.

#![allow(dead_code)]

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_gateway::{SandboxConfig, SandboxHandle, start_sandbox};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

pub const REDIRECT_URI: &str = "http://127.0.0.1:53123/callback";
pub const CLINICIAN_SCOPE: &str = "openid fhirUser launch/patient offline_access patient/Patient.rs patient/DocumentReference.crs";
pub const STAFF_SCOPE: &str = "openid fhirUser offline_access user/Patient.rs user/Practitioner.rs user/DocumentReference.crs";

pub struct Sandbox {
    pub handle: SandboxHandle,
    pub client: reqwest::Client,
    _data_dir: tempfile::TempDir,
}

impl Sandbox {
    pub async fn start() -> Sandbox {
        Sandbox::start_with("").await
    }

    /// Starts a sandbox whose data folder holds `grant_toml` as `grant.toml`.
    pub async fn start_with(grant_toml: &str) -> Sandbox {
        let (handle, client, data_dir) = start_in_temp_dir(grant_toml).await;
        Sandbox {
            handle,
            client,
            _data_dir: data_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.urls.issuer)
    }

    pub fn fhir(&self, path: &str) -> String {
        format!("{}{path}", self.handle.urls.fhir)
    }

    /// Standard authorization request parameters with a fresh PKCE pair.
    pub fn authorization_params(
        &self,
        login_hint: &str,
        scope: &str,
        pkce: &Pkce,
    ) -> Vec<(String, String)> {
        authorization_params(&self.handle.urls.fhir, login_hint, scope, pkce)
    }

    pub async fn authorize(&self, params: &[(String, String)]) -> reqwest::Response {
        self.client
            .get(self.url("/authorize"))
            .query(params)
            .send()
            .await
            .unwrap()
    }

    /// Runs the authorization request and returns the redirect's parameters.
    pub async fn authorize_redirect(&self, params: &[(String, String)]) -> HashMap<String, String> {
        let response = self.authorize(params).await;
        assert_eq!(
            response.status(),
            StatusCode::FOUND,
            "authorization did not redirect"
        );
        redirect_params(&response)
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url("/token"))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    pub async fn redeem(&self, code: &str, pkce: &Pkce) -> (StatusCode, Value) {
        self.token(&code_exchange_form(code, pkce)).await
    }

    /// Signs in as `login_hint` with `scope` and returns the token response.
    pub async fn login(&self, login_hint: &str, scope: &str) -> Value {
        sign_in(&self.client, &self.handle, login_hint, scope).await
    }

    pub async fn get_fhir(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(self.fhir(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

/// Starts a sandbox on 127.0.0.1:0 whose temporary data folder contains
/// `grant_toml` as `grant.toml`, and a client that does not follow
/// redirects. The sandbox's data is deleted when the folder is dropped.
pub async fn start_in_temp_dir(
    grant_toml: &str,
) -> (SandboxHandle, reqwest::Client, tempfile::TempDir) {
    let data_dir = tempfile::tempdir().expect("temporary data folder");
    std::fs::write(data_dir.path().join("grant.toml"), grant_toml).unwrap();
    let handle = start_sandbox(SandboxConfig {
        data_dir: data_dir.path().to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        auto_login: None,
    })
    .await
    .expect("sandbox starts");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    (handle, client, data_dir)
}

/// Builds the parameters of an authorization request (SMART App Launch,
/// RFC 7636) to a sandbox whose FHIR base URL is `fhir`.
pub fn authorization_params(
    fhir: &str,
    login_hint: &str,
    scope: &str,
    pkce: &Pkce,
) -> Vec<(String, String)> {
    [
        ("response_type", "code"),
        ("client_id", "ferry-desktop"),
        ("redirect_uri", REDIRECT_URI),
        ("scope", scope),
        ("state", "state-123"),
        ("aud", fhir),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("login_hint", login_hint),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// Builds the form of a token request that redeems `code` with the PKCE
/// verifier of `pkce` (RFC 6749 §4.1.3, RFC 7636 §4.5).
pub fn code_exchange_form<'a>(code: &'a str, pkce: &'a Pkce) -> [(&'static str, &'a str); 5] {
    [
        ("grant_type", "authorization_code"),
        ("client_id", "ferry-desktop"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", &pkce.verifier),
    ]
}

/// Signs in to `sandbox` as `login_hint` with `scope` through `/authorize`
/// (the `login_hint` skips the sign-in page) and `/token` with PKCE, and
/// returns the token response.
pub async fn sign_in(
    client: &reqwest::Client,
    sandbox: &SandboxHandle,
    login_hint: &str,
    scope: &str,
) -> Value {
    let pkce = Pkce::new();
    let params = authorization_params(&sandbox.urls.fhir, login_hint, scope, &pkce);
    let response = client
        .get(format!("{}/authorize", sandbox.urls.issuer))
        .query(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "authorization did not redirect"
    );
    let redirect = redirect_params(&response);
    let code = redirect.get("code").expect("redirect carries a code");

    let response = client
        .post(format!("{}/token", sandbox.urls.issuer))
        .form(&code_exchange_form(code, &pkce))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "token request failed: {body}");
    body
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Pkce {
        let bytes: [u8; 32] = rand::random();
        let verifier = URL_SAFE_NO_PAD.encode(bytes);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

pub fn redirect_params(response: &reqwest::Response) -> HashMap<String, String> {
    let location = response
        .headers()
        .get("location")
        .expect("redirect has a Location")
        .to_str()
        .unwrap();
    let url = url::Url::parse(location).unwrap();
    assert!(
        location.starts_with(REDIRECT_URI),
        "redirected to {location}"
    );
    url.query_pairs().into_owned().collect()
}

/// Sends a refresh token request (RFC 6749 §6) for the `ferry-desktop` client.
pub async fn refresh(sandbox: &Sandbox, refresh_token: &str) -> (StatusCode, Value) {
    sandbox
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ferry-desktop"),
            ("refresh_token", refresh_token),
        ])
        .await
}

pub fn with_param(
    params: &[(String, String)],
    name: &str,
    value: Option<&str>,
) -> Vec<(String, String)> {
    let mut changed: Vec<(String, String)> = params
        .iter()
        .filter(|(key, _)| key != name)
        .cloned()
        .collect();
    if let Some(value) = value {
        changed.push((name.to_owned(), value.to_owned()));
    }
    changed
}

pub fn str_field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string '{name}' in {value}"))
}
