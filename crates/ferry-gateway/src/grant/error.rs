//! The grant API's error response: status, `ApiError` body, and the
//! mapping of internal failures to a generic `internal` body that is logged once.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ferry_api::{ApiError, ErrorCode};

use crate::audit::AuditError;
use crate::policy::Decision;
use crate::repository::RepositoryError;
use crate::s3::S3Error;

/// An error response of the grant API.
#[derive(Debug)]
pub struct GrantError {
    pub status: StatusCode,
    pub body: ApiError,
    /// FHIR R4 issue type (`timeout`, …). When set, the body is also an
    /// `OperationOutcome` with one issue of this code, as the rate limiter's
    /// `429` is, so FHIR tooling reads the failure too.
    pub fhir_issue: Option<&'static str>,
}

impl GrantError {
    pub fn new(status: StatusCode, error: ErrorCode, message: impl Into<String>) -> GrantError {
        GrantError {
            status,
            body: ApiError {
                error,
                message: message.into(),
                field: None,
                correlation_id: None,
            },
            fhir_issue: None,
        }
    }

    /// `400 invalid_request` naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> GrantError {
        GrantError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
            .with_field(field)
    }

    pub fn not_found(message: impl Into<String>) -> GrantError {
        GrantError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> GrantError {
        GrantError::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }

    /// `500 internal`: logs `error` once and hides it from the client.
    pub fn internal(stage: &str, error: &dyn std::error::Error) -> GrantError {
        tracing::error!(stage, error = %error, "grant API request failed");
        GrantError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("the gateway failed to {stage}; retry later"),
        )
    }

    /// `502 internal` for a store failure, or `504` when the store request
    /// timed out: logged once, the cause hidden from the client.
    pub fn store(stage: &str, error: &S3Error) -> GrantError {
        tracing::error!(stage, error = %error, "object store request failed");
        if error.is_timeout() {
            let mut timeout = GrantError::new(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::Internal,
                format!("the object store did not answer in time to {stage}; retry later"),
            );
            timeout.fhir_issue = Some("timeout");
            return timeout;
        }
        GrantError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::Internal,
            format!("the object store failed to {stage}; retry later"),
        )
    }

    /// The response for a policy denial.
    pub fn denied(decision: &Decision) -> GrantError {
        match decision {
            Decision::Allow { .. } => GrantError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal error",
            ),
            Decision::Deny {
                code,
                field,
                message,
                ..
            } => {
                let status = match code {
                    ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
                    _ => StatusCode::FORBIDDEN,
                };
                let mut error = GrantError::new(status, *code, message.clone());
                error.body.field = field.map(str::to_owned);
                error
            }
        }
    }

    /// Names the field at fault; an empty name (the whole body) names none.
    pub fn with_field(mut self, field: impl Into<String>) -> GrantError {
        let field = field.into();
        self.body.field = (!field.is_empty()).then_some(field);
        self
    }

    pub fn with_correlation(mut self, correlation_id: &str) -> GrantError {
        self.body.correlation_id = Some(correlation_id.to_owned());
        self
    }
}

impl IntoResponse for GrantError {
    fn into_response(self) -> Response {
        let Some(code) = self.fhir_issue else {
            return (self.status, Json(self.body)).into_response();
        };

        let mut body = serde_json::to_value(&self.body).unwrap_or_default();
        if let Some(fields) = body.as_object_mut() {
            fields.insert("resourceType".into(), "OperationOutcome".into());
            fields.insert(
                "issue".into(),
                serde_json::json!([{
                    "severity": "error",
                    "code": code,
                    "diagnostics": self.body.message,
                }]),
            );
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<RepositoryError> for GrantError {
    fn from(error: RepositoryError) -> Self {
        GrantError::internal("read or write the grant database", &error)
    }
}

impl From<AuditError> for GrantError {
    fn from(error: AuditError) -> Self {
        GrantError::internal("record the audit event", &error)
    }
}
