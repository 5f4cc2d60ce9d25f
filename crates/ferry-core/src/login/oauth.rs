//! The `oauth2` crate wired to Ferry's HTTP client, and the SMART fields of
//! token responses.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AsyncHttpClient, AuthType, AuthUrl, ClientId, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    ExtraTokenFields, HttpClientError, HttpRequest, HttpResponse, RedirectUrl, RevocationUrl,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

use super::SmartConfiguration;
use crate::http::{HttpError, MAX_JSON_BODY_BYTES, read_limited, require_secure};

/// SMART App Launch fields of a token response beyond RFC 6749's.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct SmartTokenFields {
    /// Patient in context, granted with `launch/patient`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    /// OpenID Connect id_token, granted with `openid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl ExtraTokenFields for SmartTokenFields {}

impl fmt::Debug for SmartTokenFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmartTokenFields")
            .field("patient", &self.patient)
            .field("id_token", &self.id_token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

pub type SmartTokenResponse = StandardTokenResponse<SmartTokenFields, BasicTokenType>;

/// Parses a token endpoint's success body (RFC 6749 §5.1, with SMART's
/// `patient` and `id_token`) with the same serde types the `oauth2` crate
/// uses when it receives the response.
pub fn parse_token_response(body: &[u8]) -> Result<SmartTokenResponse, serde_json::Error> {
    serde_json::from_slice(body)
}

/// An OAuth 2.0 client for one SMART server: authorization and token
/// endpoints set, revocation endpoint when the server has one.
pub type SmartClient = oauth2::Client<
    BasicErrorResponse,
    SmartTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointSet,
>;

/// Builds a public client (no secret, `client_id` in the request body as
/// RFC 6749 §2.3.1 allows for clients without credentials).
pub fn smart_client(
    config: &SmartConfiguration,
    client_id: &str,
    redirect_uri: Option<RedirectUrl>,
) -> SmartClient {
    let client = oauth2::Client::new(ClientId::new(client_id.to_owned()))
        .set_auth_type(AuthType::RequestBody)
        .set_auth_uri(AuthUrl::from_url(config.authorization_endpoint.clone()))
        .set_token_uri(TokenUrl::from_url(config.token_endpoint.clone()))
        .set_revocation_url_option(
            config
                .revocation_endpoint
                .clone()
                .map(RevocationUrl::from_url),
        );
    match redirect_uri {
        Some(redirect_uri) => client.set_redirect_uri(redirect_uri),
        None => client,
    }
}

/// Adapter that sends `oauth2`'s requests with Ferry's `reqwest` client, so
/// they get the same TLS, proxy and redirect rules as every other request.
pub struct OAuthHttp<'a>(pub &'a reqwest::Client);

impl<'c> AsyncHttpClient<'c> for OAuthHttp<'_> {
    type Error = HttpClientError<HttpError>;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let url = url::Url::parse(&request.uri().to_string())
                .map_err(|error| HttpClientError::Other(error.to_string()))?;
            require_secure(&url).map_err(|error| HttpClientError::Reqwest(Box::new(error)))?;

            let request = reqwest::Request::try_from(request).map_err(|source| {
                HttpClientError::Reqwest(Box::new(HttpError::Request {
                    url: crate::http::display_url(&url),
                    source,
                }))
            })?;
            let response = self.0.execute(request).await.map_err(|source| {
                HttpClientError::Reqwest(Box::new(HttpError::Request {
                    url: crate::http::display_url(&url),
                    source,
                }))
            })?;

            // A 5xx or 429 status carries no verdict on the grant, so it becomes
            // a transport failure, which keeps the refresh token and is retried.
            let status = response.status();
            if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
                return Err(HttpClientError::Reqwest(Box::new(HttpError::Unavailable {
                    url: crate::http::display_url(&url),
                    status: status.as_u16(),
                })));
            }

            let mut builder = http::Response::builder().status(status);
            for (name, value) in response.headers() {
                builder = builder.header(name, value);
            }
            let body = read_limited(response, MAX_JSON_BODY_BYTES)
                .await
                .map_err(|error| HttpClientError::Reqwest(Box::new(error)))?;
            builder.body(body.to_vec()).map_err(HttpClientError::Http)
        })
    }
}

#[cfg(test)]
mod tests {
    use oauth2::TokenResponse;

    use super::*;

    #[test]
    fn smart_token_response_parses() {
        let body = br#"{"access_token":"at-123","token_type":"Bearer","expires_in":300,
            "scope":"launch/patient openid","refresh_token":"rt-456",
            "patient":"pat-001","id_token":"header.payload.signature"}"#;

        let response = parse_token_response(body).unwrap();

        assert_eq!(response.access_token().secret(), "at-123");
        assert_eq!(response.expires_in(), Some(std::time::Duration::from_secs(300)));
        assert_eq!(response.scopes().map(Vec::len), Some(2));
        assert_eq!(response.refresh_token().map(|token| token.secret().as_str()), Some("rt-456"));
        assert_eq!(response.extra_fields().patient.as_deref(), Some("pat-001"));
        assert!(response.extra_fields().id_token.is_some());
    }

    #[test]
    fn token_response_without_access_token_is_rejected() {
        let error = parse_token_response(br#"{"token_type":"Bearer"}"#).unwrap_err();
        assert!(error.to_string().contains("access_token"), "{error}");
    }

    #[test]
    fn token_response_debug_hides_tokens() {
        let body = br#"{"access_token":"at-secret","token_type":"bearer",
            "refresh_token":"rt-secret","id_token":"idt-secret"}"#;
        let shown = format!("{:?}", parse_token_response(body).unwrap());
        for secret in ["at-secret", "rt-secret", "idt-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
