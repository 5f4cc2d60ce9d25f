//! Ferry's reference gateway.
