//! FHIR R4 server for the sandbox data.

use axum::Router;

use crate::SharedState;

pub fn router() -> Router<SharedState> {
    Router::new()
}
