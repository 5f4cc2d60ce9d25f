//! The SMART App Launch flow over real HTTP against an in-process sandbox.

mod common;

use common::{CLINICIAN_SCOPE, Pkce, REDIRECT_URI, STAFF_SCOPE, Sandbox, refresh, str_field, with_param};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn discovery_advertises_what_is_implemented() {
    let sandbox = Sandbox::start().await;

    for path in ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"] {
        let config: Value = sandbox.client.get(sandbox.url(path)).send().await.unwrap().json().await.unwrap();

        assert_eq!(config["code_challenge_methods_supported"], serde_json::json!(["S256"]));
        assert_eq!(config["authorization_response_iss_parameter_supported"], true);
        assert_eq!(str_field(&config, "issuer"), sandbox.handle.urls.issuer);
        assert_eq!(str_field(&config, "authorization_endpoint"), sandbox.url("/authorize"));
        assert_eq!(str_field(&config, "token_endpoint"), sandbox.url("/token"));
        assert_eq!(str_field(&config, "revocation_endpoint"), sandbox.url("/revoke"));
        assert_eq!(str_field(&config, "jwks_uri"), sandbox.url("/jwks"));
        let capabilities: Vec<&str> = config["capabilities"].as_array().unwrap().iter().map(|value| value.as_str().unwrap()).collect();
        assert_eq!(
            capabilities,
            [
                "launch-standalone",
                "client-public",
                "context-standalone-patient",
                "permission-patient",
                "permission-user",
                "permission-offline",
                "permission-v2",
                "sso-openid-connect",
            ]
        );
    }
}

#[tokio::test]
async fn clinician_flow_returns_patient_context() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let scope = format!("{CLINICIAN_SCOPE} user/Patient.rs patient/DocumentReference.cruds");
    let params = sandbox.authorization_params("dr-rivera:pat-001", &scope, &pkce);

    let redirect = sandbox.authorize_redirect(&params).await;
    assert_eq!(redirect["state"], "state-123");
    assert_eq!(redirect["iss"], sandbox.handle.urls.issuer);
    let (status, tokens) = sandbox.redeem(&redirect["code"], &pkce).await;

    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(str_field(&tokens, "token_type"), "Bearer");
    assert_eq!(str_field(&tokens, "patient"), "pat-001");
    assert_eq!(
        str_field(&tokens, "scope"),
        "openid fhirUser launch/patient offline_access patient/Patient.rs patient/DocumentReference.crs"
    );
    assert!(tokens["refresh_token"].is_string());
    let id_token = decode_unverified(str_field(&tokens, "id_token"));
    assert_eq!(id_token["fhirUser"], sandbox.fhir("/Practitioner/dr-rivera"));
    assert_eq!(id_token["aud"], "ferry-desktop");
    let access = decode_unverified(str_field(&tokens, "access_token"));
    assert_eq!(access["patient"], "pat-001");
    assert_eq!(access["aud"], sandbox.handle.urls.fhir);
    assert_eq!(access["client_id"], "ferry-desktop");
}

#[tokio::test]
async fn imaging_staff_flow_grants_user_scopes_only() {
    let sandbox = Sandbox::start().await;

    let tokens = sandbox
        .login("tech-okafor", "openid fhirUser launch/patient patient/Patient.rs user/*.cruds")
        .await;

    assert_eq!(
        str_field(&tokens, "scope"),
        "openid fhirUser user/Patient.rs user/Practitioner.rs user/DocumentReference.crs"
    );
    assert!(tokens.get("patient").is_none(), "{tokens}");
    assert!(tokens.get("refresh_token").is_none(), "no offline_access, yet: {tokens}");
}

#[tokio::test]
async fn sign_in_page_lists_users_and_completes_on_submit() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let params = with_param(&sandbox.authorization_params("", CLINICIAN_SCOPE, &pkce), "login_hint", None);

    let page = sandbox.authorize(&params).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    for name in ["dr-rivera", "tech-okafor", "pat-001", "pat-003"] {
        assert!(html.contains(name), "sign-in page lacks {name}");
    }

    let mut form = params.clone();
    form.push(("user".into(), "dr-rivera".into()));
    form.push(("patient".into(), "pat-002".into()));
    let response = sandbox.client.post(sandbox.url("/authorize")).form(&form).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    let redirect = common::redirect_params(&response);
    let (status, tokens) = sandbox.redeem(&redirect["code"], &pkce).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(str_field(&tokens, "patient"), "pat-002");
}

async fn authorization_error(sandbox: &Sandbox, params: &[(String, String)]) -> (String, String) {
    let redirect = sandbox.authorize_redirect(params).await;
    assert!(redirect.get("code").is_none(), "a code was issued: {redirect:?}");
    assert_eq!(redirect["state"], "state-123");
    assert_eq!(redirect["iss"], sandbox.handle.urls.issuer);
    (redirect["error"].clone(), redirect["error_description"].clone())
}

#[tokio::test]
async fn missing_code_challenge_is_rejected() {
    let sandbox = Sandbox::start().await;
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &Pkce::new());

    let (error, description) = authorization_error(&sandbox, &with_param(&params, "code_challenge", None)).await;

    assert_eq!(error, "invalid_request");
    assert!(description.contains("code_challenge"), "{description}");
}

#[tokio::test]
async fn plain_challenge_method_is_rejected() {
    let sandbox = Sandbox::start().await;
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &Pkce::new());

    let (error, description) =
        authorization_error(&sandbox, &with_param(&params, "code_challenge_method", Some("plain"))).await;
    let (missing_error, _) =
        authorization_error(&sandbox, &with_param(&params, "code_challenge_method", None)).await;

    assert_eq!(error, "invalid_request");
    assert_eq!(description, "code_challenge_method 'plain' is not supported; use S256");
    assert_eq!(missing_error, "invalid_request");
}

#[tokio::test]
async fn wrong_code_verifier_is_rejected_and_burns_code() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &pkce);
    let redirect = sandbox.authorize_redirect(&params).await;

    let (status, body) = sandbox.redeem(&redirect["code"], &Pkce::new()).await;
    let (retry_status, _) = sandbox.redeem(&redirect["code"], &pkce).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(str_field(&body, "error_description").contains("code_verifier"), "{body}");
    assert_eq!(retry_status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn missing_or_foreign_aud_is_rejected() {
    let sandbox = Sandbox::start().await;
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &Pkce::new());

    let (missing, missing_description) = authorization_error(&sandbox, &with_param(&params, "aud", None)).await;
    let (foreign, foreign_description) =
        authorization_error(&sandbox, &with_param(&params, "aud", Some("https://fhir.example.org/r4"))).await;

    assert_eq!(missing, "invalid_request");
    assert!(missing_description.contains("'aud'"), "{missing_description}");
    assert_eq!(foreign, "invalid_request");
    assert!(foreign_description.contains("https://fhir.example.org/r4"), "{foreign_description}");
}

#[tokio::test]
async fn foreign_redirect_uri_is_not_redirected_to() {
    let sandbox = Sandbox::start().await;
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &Pkce::new());

    for uri in [
        "https://attacker.example/callback",
        "http://localhost:53123/callback",
        "http://192.168.1.5:53123/callback",
        "http://127.0.0.1/callback",
    ] {
        let response = sandbox.authorize(&with_param(&params, "redirect_uri", Some(uri))).await;

        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{uri}");
        assert!(response.headers().get("location").is_none(), "{uri} was redirected to");
        let html = response.text().await.unwrap();
        assert!(html.contains("redirect_uri"), "{uri}: {html}");
    }
}

#[tokio::test]
async fn ipv6_loopback_redirect_uri_is_accepted() {
    let sandbox = Sandbox::start().await;
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &Pkce::new());

    let response = sandbox
        .authorize(&with_param(&params, "redirect_uri", Some("http://[::1]:40000/cb")))
        .await;

    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()["location"].to_str().unwrap();
    assert!(location.starts_with("http://[::1]:40000/cb?code="), "{location}");
}

#[tokio::test]
async fn unknown_scope_is_rejected() {
    let sandbox = Sandbox::start().await;
    let params = sandbox.authorization_params("dr-rivera:pat-001", "openid patient/Observation.rs", &Pkce::new());

    let (error, description) = authorization_error(&sandbox, &params).await;

    assert_eq!(error, "invalid_scope");
    assert!(description.contains("patient/Observation.rs"), "{description}");
}

#[tokio::test]
async fn replayed_code_is_rejected_and_revokes_its_tokens() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &pkce);
    let redirect = sandbox.authorize_redirect(&params).await;
    let (_, tokens) = sandbox.redeem(&redirect["code"], &pkce).await;
    let access_token = str_field(&tokens, "access_token");
    let (before, _) = sandbox.get_fhir("/Patient/pat-001", access_token).await;

    let (status, body) = sandbox.redeem(&redirect["code"], &pkce).await;
    let (after, _) = sandbox.get_fhir("/Patient/pat-001", access_token).await;
    let (refresh_status, _) = refresh(&sandbox, str_field(&tokens, "refresh_token")).await;

    assert_eq!(before, StatusCode::OK);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(str_field(&body, "error_description").contains("already used"), "{body}");
    assert_eq!(after, StatusCode::UNAUTHORIZED);
    assert_eq!(refresh_status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_family() {
    let sandbox = Sandbox::start().await;
    let tokens = sandbox.login("dr-rivera:pat-001", CLINICIAN_SCOPE).await;
    let first = str_field(&tokens, "refresh_token").to_owned();

    let (status, rotated) = refresh(&sandbox, &first).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = str_field(&rotated, "refresh_token").to_owned();
    assert_ne!(first, second);
    assert_eq!(str_field(&rotated, "patient"), "pat-001");
    // Using the successor proves that the client stored it, which ends the first
    // token's grace period.
    let (status, rotated_again) = refresh(&sandbox, &second).await;
    assert_eq!(status, StatusCode::OK, "{rotated_again}");
    let third = str_field(&rotated_again, "refresh_token").to_owned();
    let new_access = str_field(&rotated_again, "access_token");
    let (before, _) = sandbox.get_fhir("/Patient/pat-001", new_access).await;
    assert_eq!(before, StatusCode::OK);

    let (reuse_status, reuse) = refresh(&sandbox, &first).await;
    assert_eq!(reuse_status, StatusCode::BAD_REQUEST);
    assert_eq!(reuse["error"], "invalid_grant");
    assert!(str_field(&reuse, "error_description").contains("already used"), "{reuse}");

    let (third_status, _) = refresh(&sandbox, &third).await;
    assert_eq!(third_status, StatusCode::BAD_REQUEST, "the family's newest refresh token still works");
    let (after, _) = sandbox.get_fhir("/Patient/pat-001", new_access).await;
    assert_eq!(after, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn lost_rotation_is_recovered_within_grace() {
    let sandbox = Sandbox::start().await;
    let tokens = sandbox.login("dr-rivera:pat-001", CLINICIAN_SCOPE).await;
    let first = str_field(&tokens, "refresh_token").to_owned();
    // The client is killed before it stores this response.
    let (status, lost) = refresh(&sandbox, &first).await;
    assert_eq!(status, StatusCode::OK, "{lost}");

    let (status, recovered) = refresh(&sandbox, &first).await;

    assert_eq!(status, StatusCode::OK, "{recovered}");
    let second = str_field(&recovered, "refresh_token").to_owned();
    assert_ne!(second, first);
    assert_ne!(second, str_field(&lost, "refresh_token"));
    assert_eq!(str_field(&recovered, "patient"), "pat-001");
    let (status, next) = refresh(&sandbox, &second).await;
    assert_eq!(status, StatusCode::OK, "the recovered token rotates: {next}");
    let (read, _) = sandbox
        .get_fhir("/Patient/pat-001", str_field(&next, "access_token"))
        .await;
    assert_eq!(read, StatusCode::OK);
}

#[tokio::test]
async fn grace_accepts_previous_token_only_once() {
    let sandbox = Sandbox::start().await;
    let tokens = sandbox.login("dr-rivera:pat-001", CLINICIAN_SCOPE).await;
    let first = str_field(&tokens, "refresh_token").to_owned();
    let (status, _) = refresh(&sandbox, &first).await;
    assert_eq!(status, StatusCode::OK);
    let (status, recovered) = refresh(&sandbox, &first).await;
    assert_eq!(status, StatusCode::OK, "{recovered}");

    let (status, third_use) = refresh(&sandbox, &first).await;

    assert_eq!(status, StatusCode::BAD_REQUEST, "{third_use}");
    assert!(str_field(&third_use, "error_description").contains("already used"), "{third_use}");
    let (newest, _) = refresh(&sandbox, str_field(&recovered, "refresh_token")).await;
    assert_eq!(newest, StatusCode::BAD_REQUEST, "the family was not revoked");
}

#[tokio::test]
async fn replaced_successor_revokes_family_when_presented() {
    let sandbox = Sandbox::start().await;
    let tokens = sandbox.login("dr-rivera:pat-001", CLINICIAN_SCOPE).await;
    let first = str_field(&tokens, "refresh_token").to_owned();
    let (_, lost) = refresh(&sandbox, &first).await;
    let (status, recovered) = refresh(&sandbox, &first).await;
    assert_eq!(status, StatusCode::OK, "{recovered}");

    // A holder of the replaced token is not the client that recovered.
    let (status, stale) = refresh(&sandbox, str_field(&lost, "refresh_token")).await;

    assert_eq!(status, StatusCode::BAD_REQUEST, "{stale}");
    assert_eq!(stale["error"], "invalid_grant");
    let (newest, _) = refresh(&sandbox, str_field(&recovered, "refresh_token")).await;
    assert_eq!(newest, StatusCode::BAD_REQUEST, "the family was not revoked");
}

#[tokio::test]
async fn reuse_outside_grace_revokes_family() {
    let sandbox = Sandbox::start_with("[smart]\nrefresh_token_grace_seconds = 0\n").await;
    let tokens = sandbox.login("dr-rivera:pat-001", CLINICIAN_SCOPE).await;
    let first = str_field(&tokens, "refresh_token").to_owned();
    let (status, rotated) = refresh(&sandbox, &first).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");

    let (status, reuse) = refresh(&sandbox, &first).await;

    assert_eq!(status, StatusCode::BAD_REQUEST, "{reuse}");
    assert!(str_field(&reuse, "error_description").contains("already used"), "{reuse}");
    let (newest, _) = refresh(&sandbox, str_field(&rotated, "refresh_token")).await;
    assert_eq!(newest, StatusCode::BAD_REQUEST, "the family was not revoked");
}

#[tokio::test]
async fn refresh_cannot_widen_scope() {
    let sandbox = Sandbox::start().await;
    let tokens = sandbox.login("dr-rivera:pat-001", CLINICIAN_SCOPE).await;

    let (status, body) = sandbox
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ferry-desktop"),
            ("refresh_token", str_field(&tokens, "refresh_token")),
            ("scope", "patient/Practitioner.rs"),
        ])
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn revoked_tokens_stop_working() {
    let sandbox = Sandbox::start().await;
    let tokens = sandbox.login("tech-okafor", STAFF_SCOPE).await;
    let access_token = str_field(&tokens, "access_token");
    let other = sandbox.login("tech-okafor", STAFF_SCOPE).await;

    let revoke_access = sandbox
        .client
        .post(sandbox.url("/revoke"))
        .form(&[("client_id", "ferry-desktop"), ("token", access_token)])
        .send()
        .await
        .unwrap();
    let revoke_refresh = sandbox
        .client
        .post(sandbox.url("/revoke"))
        .form(&[("client_id", "ferry-desktop"), ("token", str_field(&other, "refresh_token"))])
        .send()
        .await
        .unwrap();
    let revoke_unknown = sandbox
        .client
        .post(sandbox.url("/revoke"))
        .form(&[("client_id", "ferry-desktop"), ("token", "not-a-token")])
        .send()
        .await
        .unwrap();

    assert_eq!(revoke_access.status(), StatusCode::OK);
    assert_eq!(revoke_refresh.status(), StatusCode::OK);
    assert_eq!(revoke_unknown.status(), StatusCode::OK);
    let (status, outcome) = sandbox.get_fhir("/Patient/pat-001", access_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{outcome}");
    let (refresh_status, _) = refresh(&sandbox, str_field(&other, "refresh_token")).await;
    assert_eq!(refresh_status, StatusCode::BAD_REQUEST);
    let (other_access, _) = sandbox.get_fhir("/Patient/pat-001", str_field(&other, "access_token")).await;
    assert_eq!(other_access, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn access_token_verifies_with_published_jwks() {
    let sandbox = Sandbox::start().await;
    let tokens = sandbox.login("dr-rivera:pat-001", CLINICIAN_SCOPE).await;
    let jwks: jsonwebtoken::jwk::JwkSet =
        sandbox.client.get(sandbox.url("/jwks")).send().await.unwrap().json().await.unwrap();
    let access_token = str_field(&tokens, "access_token");

    let header = jsonwebtoken::decode_header(access_token).unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("token's kid is in the JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[&sandbox.handle.urls.issuer]);
    validation.set_audience(&[&sandbox.handle.urls.fhir]);
    let claims = jsonwebtoken::decode::<Value>(access_token, &key, &validation).unwrap().claims;

    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(claims["sub"], "dr-rivera");
    assert_eq!(claims["fhirUser"], sandbox.fhir("/Practitioner/dr-rivera"));
    assert!(claims["jti"].is_string());
    let mut tampered = access_token.to_owned();
    tampered.insert_str(tampered.rfind('.').unwrap() + 1, "AAAA");
    assert!(jsonwebtoken::decode::<Value>(&tampered, &key, &validation).is_err());
}

#[tokio::test]
async fn token_endpoint_rejects_malformed_requests() {
    let sandbox = Sandbox::start().await;
    let url = sandbox.url("/token");

    let duplicate = sandbox
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=authorization_code&grant_type=refresh_token&client_id=ferry-desktop")
        .send()
        .await
        .unwrap();
    let json_body = sandbox.client.post(&url).json(&serde_json::json!({"grant_type": "refresh_token"})).send().await.unwrap();
    let unknown_client = sandbox.token(&[("grant_type", "refresh_token"), ("client_id", "other-app")]).await;
    let unknown_grant = sandbox.token(&[("grant_type", "password"), ("client_id", "ferry-desktop")]).await;
    let huge = sandbox
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();

    assert_eq!(duplicate.status(), StatusCode::BAD_REQUEST);
    let body: Value = duplicate.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(str_field(&body, "error_description").contains("'grant_type'"), "{body}");
    assert_eq!(json_body.status(), StatusCode::BAD_REQUEST);
    let body: Value = json_body.json().await.unwrap();
    assert!(str_field(&body, "error_description").contains("application/x-www-form-urlencoded"));
    assert_eq!(unknown_client.0, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_client.1["error"], "invalid_client");
    assert_eq!(unknown_grant.0, StatusCode::BAD_REQUEST);
    assert_eq!(unknown_grant.1["error"], "unsupported_grant_type");
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = huge.json().await.unwrap();
    assert!(str_field(&body, "error_description").contains("larger than"), "{body}");
}

#[tokio::test]
async fn code_for_other_redirect_uri_is_rejected() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &pkce);
    let redirect = sandbox.authorize_redirect(&params).await;

    let (status, body) = sandbox
        .token(&[
            ("grant_type", "authorization_code"),
            ("client_id", "ferry-desktop"),
            ("code", &redirect["code"]),
            ("redirect_uri", "http://127.0.0.1:1/other"),
            ("code_verifier", &pkce.verifier),
        ])
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(str_field(&body, "error_description").contains("redirect_uri"));
    assert!(REDIRECT_URI.starts_with("http://127.0.0.1:"));
}

/// Decodes a JWT's claims without checking the signature; signatures are
/// checked in `access_token_verifies_with_published_jwks`.
fn decode_unverified(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
