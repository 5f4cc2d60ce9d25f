//! Wire types of Ferry's grant API, shared by the client (`ferry-core`) and
//! the reference gateway (`ferry-gateway`). The contract they implement is
//! described in `docs/grant-api.md`.

/// Version of the grant API contract, sent in the `Ferry-Api-Version` header
/// and used as the path prefix (`/grant/v1/...`).
pub const API_VERSION: &str = "v1";
