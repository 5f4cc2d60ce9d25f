//! Refresh tokens stored under the entry name used before entries carried
//! the data folder's device id (`profile/{name}/refresh-token`) are moved to
//! the current entry the first time they are read.

mod transfer_support;

use transfer_support::*;

#[tokio::test]
async fn legacy_refresh_token_entry_is_migrated() {
    let fixture = Fixture::start(SandboxOptions::default()).await;
    let context = fixture.session.context();
    let entry = context.profile.refresh_token_entry(&context.dirs).unwrap();
    let legacy = format!("profile/{}/refresh-token", context.profile.name);
    let token = context
        .store
        .get(&entry)
        .unwrap()
        .expect("the sign-in stored a refresh token");
    context.store.set(&legacy, &token).unwrap();
    context.store.delete(&entry).unwrap();

    fixture
        .session
        .refresh()
        .await
        .expect("the refresh reads the token from the legacy entry");

    assert!(
        context.store.get(&legacy).unwrap().is_none(),
        "the legacy entry was not deleted"
    );
    let current = context.store.get(&entry).unwrap();
    assert!(
        current.is_some(),
        "no refresh token under the current entry"
    );
    assert!(fixture.session.info().refresh_token_stored);
}

#[tokio::test]
async fn current_entry_wins_over_legacy_entry() {
    let fixture = Fixture::start(SandboxOptions::default()).await;
    let context = fixture.session.context();
    let legacy = format!("profile/{}/refresh-token", context.profile.name);
    context
        .store
        .set(&legacy, &ferry_core::secrets::Secret::new("stale-token"))
        .unwrap();

    fixture
        .session
        .refresh()
        .await
        .expect("the refresh uses the current entry, not the stale legacy one");

    assert!(
        context.store.get(&legacy).unwrap().is_some(),
        "a legacy entry is left alone while the current entry exists"
    );
}
