//! SMART App Launch 2 authorization server.

use axum::Router;

use crate::SharedState;

pub fn router() -> Router<SharedState> {
    Router::new()
}
