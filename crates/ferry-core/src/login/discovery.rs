//! SMART App Launch discovery: `{fhir}/.well-known/smart-configuration`.

use serde::Deserialize;
use url::Url;

use super::LoginError;
use crate::http::{display_url, read_json, require_secure};

/// The fields of a SMART configuration document that Ferry uses (SMART App
/// Launch 2.x, "Conformance"), plus `ferry_grant_api`, the base URL of the
/// gateway's grant API.
#[derive(Debug, Clone, Deserialize)]
pub struct SmartConfiguration {
    /// Required when the server supports OpenID Connect; compared with `iss`
    /// of callbacks (RFC 9207) and of id_tokens.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<Url>,
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    #[serde(default)]
    pub revocation_endpoint: Option<Url>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub ferry_grant_api: Option<Url>,
}

impl SmartConfiguration {
    /// Returns whether the server accepts PKCE with `S256` (RFC 7636).
    pub fn supports_s256(&self) -> bool {
        self.code_challenge_methods_supported
            .iter()
            .any(|method| method == "S256")
    }
}

/// Returns the URL of the SMART configuration of a FHIR base URL.
pub fn smart_configuration_url(fhir_base_url: &Url) -> Url {
    let mut url = fhir_base_url.clone();
    let path = format!(
        "{}/.well-known/smart-configuration",
        url.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url.set_query(None);
    url
}

/// Fetches and checks the SMART configuration of a FHIR server: every
/// endpoint must be `https://` (or loopback `http://`) and PKCE `S256` must
/// be offered.
pub async fn discover(
    http: &reqwest::Client,
    fhir_base_url: &Url,
) -> Result<SmartConfiguration, LoginError> {
    let url = smart_configuration_url(fhir_base_url);
    require_secure(&url)?;

    let response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|source| LoginError::Discovery {
            url: display_url(&url),
            detail: with_root_cause(&source),
        })?;
    if !response.status().is_success() {
        return Err(LoginError::Discovery {
            url: display_url(&url),
            detail: format!(
                "the server answered {}; check that {} is the server's FHIR base URL",
                response.status(),
                fhir_base_url
            ),
        });
    }
    let config: SmartConfiguration = read_json(response).await?;

    check(&config, &url)?;
    Ok(config)
}

fn check(config: &SmartConfiguration, url: &Url) -> Result<(), LoginError> {
    if !config.supports_s256() {
        return Err(LoginError::NoS256 {
            url: display_url(url),
            offered: config.code_challenge_methods_supported.clone(),
        });
    }

    let endpoints = [
        Some(&config.authorization_endpoint),
        Some(&config.token_endpoint),
        config.revocation_endpoint.as_ref(),
        config.jwks_uri.as_ref(),
        config.ferry_grant_api.as_ref(),
    ];
    for endpoint in endpoints.into_iter().flatten() {
        require_secure(endpoint)?;
    }

    if config.authorization_response_iss_parameter_supported && config.issuer.is_none() {
        return Err(LoginError::Discovery {
            url: display_url(url),
            detail: "the server advertises authorization_response_iss_parameter_supported \
                     but publishes no issuer to compare `iss` with"
                .to_owned(),
        });
    }
    Ok(())
}

/// Returns an error's message followed by its innermost source, such as
/// "Connection refused (os error 111)", which reqwest's own message for a
/// failed request leaves out.
fn with_root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut root = None;
    let mut source = error.source();
    while let Some(cause) = source {
        root = Some(cause);
        source = cause.source();
    }
    match root {
        Some(root) => format!("{error}: {root}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> SmartConfiguration {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn configuration_url_appends_well_known_path() {
        let fhir = Url::parse("https://fhir.example/r4/").unwrap();
        assert_eq!(
            smart_configuration_url(&fhir).as_str(),
            "https://fhir.example/r4/.well-known/smart-configuration"
        );
    }

    #[test]
    fn server_without_s256_is_rejected() {
        let config = config(serde_json::json!({
            "authorization_endpoint": "https://auth.example/authorize",
            "token_endpoint": "https://auth.example/token",
            "code_challenge_methods_supported": ["plain"],
        }));
        let url = Url::parse("https://fhir.example/.well-known/smart-configuration").unwrap();
        let error = check(&config, &url).unwrap_err();
        assert!(matches!(error, LoginError::NoS256 { .. }));
        assert!(error.to_string().contains("S256"), "{error}");
        assert!(error.to_string().contains("[\"plain\"]"), "{error}");
    }

    #[test]
    fn remote_plain_http_endpoint_is_rejected() {
        let config = config(serde_json::json!({
            "authorization_endpoint": "https://auth.example/authorize",
            "token_endpoint": "http://auth.example/token",
            "code_challenge_methods_supported": ["S256"],
        }));
        let url = Url::parse("https://fhir.example/.well-known/smart-configuration").unwrap();
        let error = check(&config, &url).unwrap_err();
        assert!(
            error.to_string().contains("http://auth.example/token"),
            "{error}"
        );
    }
}
