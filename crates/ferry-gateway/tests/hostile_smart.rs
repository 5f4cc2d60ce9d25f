//! Hostile input to the authorization server (`/authorize`, `/token`,
//! `/revoke`): every case gets a 4xx that names the problem and stores no
//! code or token.

mod common;

use common::{CLINICIAN_SCOPE, Pkce, REDIRECT_URI, Sandbox, str_field, with_param};
use reqwest::StatusCode;
use serde_json::Value;

/// Rows of the tables that hold codes and tokens.
fn stored_rows(sandbox: &Sandbox) -> i64 {
    let connection = sandbox.handle.state.db.lock();
    let mut total = 0;
    for table in [
        "authorization_codes",
        "token_families",
        "refresh_tokens",
        "access_tokens",
    ] {
        total += connection
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get::<_, i64>(0)
            })
            .unwrap();
    }
    total
}

fn location(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("location")
        .map(|value| value.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn redirect_uri_tricks_are_shown_as_error_page() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &pkce);
    let cases = [
        "http://127.0.0.1.evil.example:53123/callback",
        "http://127.0.0.1@evil.example:53123/callback",
        "http://evil.example@127.0.0.1.nip.io:53123/callback",
        "http://localhost:53123/callback",
        "http://LOCALHOST:53123/callback",
        "https://127.0.0.1:53123/callback",
        "ftp://127.0.0.1:53123/callback",
        "javascript:alert(1)//127.0.0.1:53123",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "http://127.0.0.1:53123/callback#fragment",
        "http://127.0.0.1/callback",
        "http://127.0.0.2:53123/callback",
        "http://0.0.0.0:53123/callback",
        "http://[::2]:53123/callback",
        "http://[::ffff:127.0.0.1]:53123/callback",
        "http://2130706433:53123/callback",
        "//127.0.0.1:53123/callback",
        "/callback",
        "http:/127.0.0.1:53123/callback",
        "http://127.0.0.1:99999/callback",
        " http://evil.example/ http://127.0.0.1:53123/callback",
    ];

    for redirect_uri in cases {
        let before = stored_rows(&sandbox);
        let response = sandbox
            .authorize(&with_param(&params, "redirect_uri", Some(redirect_uri)))
            .await;
        let status = response.status();
        let target = location(&response);
        let body = response.text().await.unwrap();

        // NOTE: the url crate reads 2130706433 as 127.0.0.1 and
        // [::ffff:127.0.0.1] as an IPv6 address; both are rejected or map to
        // loopback, and neither reaches another host.
        if status == StatusCode::FOUND {
            let target = target.unwrap();
            let host = url::Url::parse(&target)
                .unwrap()
                .host_str()
                .unwrap()
                .to_owned();
            assert_eq!(host, "127.0.0.1", "{redirect_uri:?} redirected to {target}");
            continue;
        }
        assert_eq!(status, StatusCode::BAD_REQUEST, "{redirect_uri:?}: {body}");
        assert!(
            target.is_none(),
            "{redirect_uri:?} redirected to {target:?}"
        );
        assert!(body.contains("redirect_uri"), "{redirect_uri:?}: {body}");
        assert!(
            !body.contains("<script>"),
            "{redirect_uri:?} is reflected unescaped: {body}"
        );
        assert_eq!(
            stored_rows(&sandbox),
            before,
            "{redirect_uri:?} stored a code"
        );
    }
}

#[tokio::test]
async fn redirect_uri_query_cannot_inject_a_second_code() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let redirect_uri =
        "http://127.0.0.1:53123/callback?code=attacker&state=attacker&iss=https://evil.example";
    let params = with_param(
        &sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &pkce),
        "redirect_uri",
        Some(redirect_uri),
    );

    let response = sandbox.authorize(&params).await;
    let status = response.status();
    let target = location(&response);

    // RFC 6749 §3.1.2 allows a query in the redirect URI, but the response
    // must not carry two `code`, `state` or `iss` parameters: a client that
    // reads the first one would take the attacker's values.
    if status == StatusCode::FOUND {
        let target = url::Url::parse(&target.unwrap()).unwrap();
        for name in ["code", "state", "iss"] {
            let count = target.query_pairs().filter(|(key, _)| key == name).count();
            assert_eq!(count, 1, "{name} appears {count} times in {target}");
        }
    } else {
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(target.is_none());
    }
}

#[tokio::test]
async fn duplicate_authorization_parameters_are_rejected() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &pkce);

    for name in [
        "response_type",
        "client_id",
        "redirect_uri",
        "code_challenge",
        "code_challenge_method",
        "scope",
        "state",
        "aud",
    ] {
        let value = params
            .iter()
            .find(|(key, _)| key == name)
            .unwrap()
            .1
            .clone();
        let mut duplicated = params.clone();
        duplicated.push((name.to_owned(), value));
        let before = stored_rows(&sandbox);

        let response = sandbox.authorize(&duplicated).await;
        let status = response.status();
        let target = location(&response);
        let body = response.text().await.unwrap();

        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(target.is_none(), "{name} redirected to {target:?}");
        assert!(
            body.contains(&format!("&#39;{name}&#39;")),
            "{name}: {body}"
        );
        assert_eq!(stored_rows(&sandbox), before);
    }
}

#[tokio::test]
async fn weak_or_malformed_pkce_is_rejected() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &pkce);
    let cases: [(&str, Option<&str>, &str); 7] = [
        ("code_challenge_method", None, "code_challenge_method"),
        ("code_challenge_method", Some("plain"), "plain"),
        ("code_challenge_method", Some("s256"), "s256"),
        ("code_challenge", None, "code_challenge"),
        ("code_challenge", Some("short"), "code_challenge"),
        ("code_challenge", Some(&"A".repeat(44)), "code_challenge"),
        (
            "code_challenge",
            Some("++++++++++++++++++++++++++++++++++++++++++="),
            "code_challenge",
        ),
    ];

    for (name, value, named) in cases {
        let before = stored_rows(&sandbox);
        let redirect = sandbox
            .authorize_redirect(&with_param(&params, name, value))
            .await;

        assert_eq!(
            redirect.get("error").map(String::as_str),
            Some("invalid_request"),
            "{name}={value:?}"
        );
        assert!(
            redirect["error_description"].contains(named),
            "{name}={value:?}: {redirect:?}"
        );
        assert!(
            !redirect.contains_key("code"),
            "{name}={value:?} issued a code"
        );
        assert_eq!(redirect["state"], "state-123");
        assert_eq!(stored_rows(&sandbox), before);
    }
}

#[tokio::test]
async fn oversized_authorization_values_are_rejected() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &pkce);

    for name in ["state", "scope", "nonce", "redirect_uri"] {
        let huge = match name {
            "redirect_uri" => format!("{REDIRECT_URI}/{}", "a".repeat(60_000)),
            _ => "a".repeat(60_000),
        };
        let before = stored_rows(&sandbox);
        let response = sandbox
            .authorize(&with_param(&params, name, Some(&huge)))
            .await;
        let status = response.status();
        let target = location(&response);
        let body = response.text().await.unwrap();

        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        assert!(target.is_none(), "{name}: redirected to {target:?}");
        assert!(
            body.contains(&format!("&#39;{name}&#39; is ")),
            "{name}: {}",
            &body[..body.len().min(300)]
        );
        assert_eq!(stored_rows(&sandbox), before, "{name}: stored a code");
    }
}

#[tokio::test]
async fn state_with_reserved_characters_is_returned_intact() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let state = "a&code=evil&iss=https://evil.example#frag %00\u{0}é";
    let params = with_param(
        &sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &pkce),
        "state",
        Some(state),
    );

    let response = sandbox.authorize(&params).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let target = url::Url::parse(&location(&response).unwrap()).unwrap();
    let pairs: Vec<(String, String)> = target.query_pairs().into_owned().collect();

    assert_eq!(
        pairs.iter().filter(|(key, _)| key == "code").count(),
        1,
        "{target}"
    );
    assert_eq!(
        pairs.iter().filter(|(key, _)| key == "iss").count(),
        1,
        "{target}"
    );
    let returned = pairs.iter().find(|(key, _)| key == "state").unwrap();
    assert_eq!(returned.1, state);
    assert!(target.fragment().is_none(), "{target}");
}

async fn post_token(
    sandbox: &Sandbox,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = sandbox.client.post(sandbox.url("/token")).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"));
    (status, body)
}

#[tokio::test]
async fn token_endpoint_rejects_wrong_content_types() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let redirect = sandbox
        .authorize_redirect(&sandbox.authorization_params(
            "dr-rivera:pat-001",
            CLINICIAN_SCOPE,
            &pkce,
        ))
        .await;
    let form = format!(
        "grant_type=authorization_code&client_id=ferry-desktop&code={}&redirect_uri={}&code_verifier={}",
        redirect["code"],
        url::form_urlencoded::byte_serialize(REDIRECT_URI.as_bytes()).collect::<String>(),
        pkce.verifier
    );
    let before = stored_rows(&sandbox);

    for content_type in [
        None,
        Some("application/json"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        Some("application/x-www-form-urlencoded-evil"),
    ] {
        let (status, body) = post_token(&sandbox, content_type, form.clone().into_bytes()).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{content_type:?}: {body}");
        assert_eq!(body["error"], "invalid_request");
        assert!(
            str_field(&body, "error_description").contains("Content-Type"),
            "{body}"
        );
    }
    let (status, body) = post_token(
        &sandbox,
        Some("application/x-www-form-urlencoded"),
        vec![0xff, 0xfe, b'='],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        str_field(&body, "error_description").contains("UTF-8"),
        "{body}"
    );

    assert_eq!(
        stored_rows(&sandbox),
        before,
        "a rejected request issued tokens"
    );
    // The code was never presented, so it still works.
    let (status, body) = sandbox.redeem(&redirect["code"], &pkce).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn malformed_code_verifiers_are_rejected() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let long = "a".repeat(129);
    let cases = [
        "",
        "short",
        &long,
        "a b c d e f g h i j k l m n o p q r s t u v w x y z",
        &format!("{}+", "a".repeat(42)),
        &format!("{}é", "a".repeat(42)),
    ];

    for verifier in cases {
        let redirect = sandbox
            .authorize_redirect(&sandbox.authorization_params(
                "dr-rivera:pat-001",
                CLINICIAN_SCOPE,
                &pkce,
            ))
            .await;
        let before = stored_rows(&sandbox);
        let (status, body) = sandbox
            .token(&[
                ("grant_type", "authorization_code"),
                ("client_id", "ferry-desktop"),
                ("code", &redirect["code"]),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier),
            ])
            .await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{verifier:?}: {body}");
        assert_eq!(body["error"], "invalid_request", "{verifier:?}");
        assert!(
            str_field(&body, "error_description").contains("code_verifier"),
            "{body}"
        );
        assert_eq!(stored_rows(&sandbox), before, "{verifier:?} issued tokens");
    }
}

#[tokio::test]
async fn redirect_uri_in_token_request_matches_as_sent() {
    let sandbox = Sandbox::start().await;

    // The authorization request's redirect URI without a path: the token
    // request repeats it character for character (RFC 6749 §4.1.3).
    for redirect_uri in ["http://127.0.0.1:53123", "http://[::1]:53123/cb?x=1"] {
        let pkce = Pkce::new();
        let params = with_param(
            &sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &pkce),
            "redirect_uri",
            Some(redirect_uri),
        );
        let response = sandbox.authorize(&params).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{redirect_uri}");
        let target = url::Url::parse(&location(&response).unwrap()).unwrap();
        let code = target
            .query_pairs()
            .find(|(key, _)| key == "code")
            .unwrap()
            .1
            .into_owned();

        let (status, body) = sandbox
            .token(&[
                ("grant_type", "authorization_code"),
                ("client_id", "ferry-desktop"),
                ("code", &code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", &pkce.verifier),
            ])
            .await;

        assert_eq!(status, StatusCode::OK, "{redirect_uri}: {body}");
    }
}

#[tokio::test]
async fn replayed_code_and_reused_refresh_token_issue_nothing() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let redirect = sandbox
        .authorize_redirect(&sandbox.authorization_params(
            "dr-rivera:pat-001",
            CLINICIAN_SCOPE,
            &pkce,
        ))
        .await;
    let (status, first) = sandbox.redeem(&redirect["code"], &pkce).await;
    assert_eq!(status, StatusCode::OK);
    let refresh_token = str_field(&first, "refresh_token").to_owned();

    let before = stored_rows(&sandbox);
    for _ in 0..3 {
        let (status, body) = sandbox.redeem(&redirect["code"], &pkce).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_grant");
        assert!(
            str_field(&body, "error_description").contains("already used"),
            "{body}"
        );
    }
    assert_eq!(stored_rows(&sandbox), before);

    // The replay revoked the family: the refresh token no longer works.
    let (status, body) = sandbox
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", "ferry-desktop"),
            ("refresh_token", &refresh_token),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        str_field(&body, "error_description").contains("revoked"),
        "{body}"
    );
    assert_eq!(stored_rows(&sandbox), before);
}

#[tokio::test]
async fn revoke_rejects_malformed_requests() {
    let sandbox = Sandbox::start().await;
    let url = sandbox.url("/revoke");
    let cases: [(Option<&str>, &str, &str); 5] = [
        (
            Some("application/x-www-form-urlencoded"),
            "client_id=ferry-desktop",
            "'token'",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            "client_id=ferry-desktop&token=a&token=b",
            "more than once",
        ),
        (
            Some("application/json"),
            "{\"token\":\"a\",\"client_id\":\"ferry-desktop\"}",
            "Content-Type",
        ),
        (None, "client_id=ferry-desktop&token=a", "Content-Type"),
        (
            Some("application/x-www-form-urlencoded"),
            "token=a",
            "client_id",
        ),
    ];

    for (content_type, body, named) in cases {
        let mut request = sandbox.client.post(&url).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();

        assert!(status.is_client_error(), "{body}: {status}");
        assert!(
            str_field(&answer, "error_description").contains(named),
            "{body}: {answer}"
        );
    }
    let huge = sandbox
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "client_id=ferry-desktop&token={}",
            "a".repeat(2 * 1024 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn sign_in_form_rejects_hostile_posts() {
    let sandbox = Sandbox::start().await;
    let pkce = Pkce::new();
    let params = sandbox.authorization_params("dr-rivera:pat-001", CLINICIAN_SCOPE, &pkce);
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().filter(|(key, _)| key != "login_hint"))
        .append_pair("user", "dr-rivera")
        .append_pair("patient", "pat-001")
        .finish();
    let before = stored_rows(&sandbox);

    let json = sandbox
        .client
        .post(sandbox.url("/authorize"))
        .header("content-type", "application/json")
        .body(form.clone())
        .send()
        .await
        .unwrap();
    let duplicate_user = sandbox
        .client
        .post(sandbox.url("/authorize"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("{form}&user=tech-okafor"))
        .send()
        .await
        .unwrap();
    let unknown_user = sandbox
        .client
        .post(sandbox.url("/authorize"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.replace("user=dr-rivera", "user=%3Cscript%3Ealert(1)%3C%2Fscript%3E"))
        .send()
        .await
        .unwrap();
    let other_patient = sandbox
        .client
        .post(sandbox.url("/authorize"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.replace("patient=pat-001", "patient=..%2Fpat-002"))
        .send()
        .await
        .unwrap();

    assert_eq!(json.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(duplicate_user.status(), StatusCode::BAD_REQUEST);
    assert!(
        duplicate_user
            .text()
            .await
            .unwrap()
            .contains("more than once")
    );
    assert_eq!(unknown_user.status(), StatusCode::BAD_REQUEST);
    let page = unknown_user.text().await.unwrap();
    assert!(page.contains("is not a sandbox user"), "{page}");
    assert!(
        !page.contains("<script>alert"),
        "the user name is reflected unescaped"
    );
    assert_eq!(other_patient.status(), StatusCode::BAD_REQUEST);
    assert!(
        other_patient
            .text()
            .await
            .unwrap()
            .contains("is not a sandbox patient")
    );
    assert_eq!(stored_rows(&sandbox), before);
}
