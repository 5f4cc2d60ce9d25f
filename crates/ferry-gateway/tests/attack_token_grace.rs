//! Attacks on the refresh-token grace period over real HTTP: a thief who
//! has the previous refresh token must not end up with a token family
//! that outlives the client's next refresh.

mod common;

use common::*;
use reqwest::StatusCode;

#[tokio::test]
async fn grace_thief_branch_dies_on_client_refresh() {
    let sandbox = Sandbox::start().await;
    let tokens = sandbox.login("dr-rivera:pat-001", CLINICIAN_SCOPE).await;
    let stolen = str_field(&tokens, "refresh_token").to_owned();
    // The client rotates and keeps the successor.
    let (status, client) = refresh(&sandbox, &stolen).await;
    assert_eq!(status, StatusCode::OK, "{client}");
    let client_token = str_field(&client, "refresh_token").to_owned();

    // The thief presents the previous token within the grace period and
    // rotates the token it gets once more.
    let (status, thief) = refresh(&sandbox, &stolen).await;
    assert_eq!(status, StatusCode::OK, "{thief}");
    let (status, thief) = refresh(&sandbox, str_field(&thief, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{thief}");
    let thief_refresh = str_field(&thief, "refresh_token").to_owned();
    let thief_access = str_field(&thief, "access_token").to_owned();
    let (before, _) = sandbox.get_fhir("/Patient/pat-001", &thief_access).await;
    assert_eq!(before, StatusCode::OK);

    // The client's next refresh finds its token replaced.
    let (status, body) = refresh(&sandbox, &client_token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");

    let (status, body) = refresh(&sandbox, &thief_refresh).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the thief's branch survived: {body}"
    );
    let (after, _) = sandbox.get_fhir("/Patient/pat-001", &thief_access).await;
    assert_eq!(after, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn second_grace_use_revokes_family() {
    let sandbox = Sandbox::start().await;
    let tokens = sandbox.login("dr-rivera:pat-001", CLINICIAN_SCOPE).await;
    let first = str_field(&tokens, "refresh_token").to_owned();
    let (status, _) = refresh(&sandbox, &first).await;
    assert_eq!(status, StatusCode::OK);
    let (status, graced) = refresh(&sandbox, &first).await;
    assert_eq!(status, StatusCode::OK, "{graced}");
    let graced_refresh = str_field(&graced, "refresh_token").to_owned();

    let (status, body) = refresh(&sandbox, &first).await;

    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = refresh(&sandbox, &graced_refresh).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the family outlived a second grace use"
    );
}

#[tokio::test]
async fn grace_with_other_client_id_rejected() {
    let sandbox = Sandbox::start().await;
    let tokens = sandbox.login("dr-rivera:pat-001", CLINICIAN_SCOPE).await;
    let first = str_field(&tokens, "refresh_token").to_owned();
    let (status, rotated) = refresh(&sandbox, &first).await;
    assert_eq!(status, StatusCode::OK);
    let client_token = str_field(&rotated, "refresh_token").to_owned();

    let (status, body) = sandbox
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", "other-app"),
            ("refresh_token", first.as_str()),
        ])
        .await;

    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // The rejected request neither used the grace nor revoked the family.
    let (status, body) = refresh(&sandbox, &client_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
