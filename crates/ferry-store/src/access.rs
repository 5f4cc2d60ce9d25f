//! Connects the [`AccessHook`] to s3s: the access check that asks the hook,
//! and the per-request slot that carries what it learned to the place where
//! the response status is known.

use std::sync::{Arc, Mutex, PoisonError};

use s3s::S3Result;
use s3s::access::{S3Access, S3AccessContext};
use s3s::s3_error;
use tracing::warn;

use crate::hook::{AccessDecision, AccessHook, AccessOutcome, AccessRequest, describe_request};

/// Shared between the HTTP wrapper, which puts it into the request's
/// extensions, and [`HookAccess`], which fills it in after authentication.
#[derive(Clone, Default)]
pub(crate) struct AccessSlot(Arc<Mutex<Option<Checked>>>);

struct Checked {
    request: AccessRequest,
    denial: Option<String>,
}

impl AccessSlot {
    fn fill(&self, request: AccessRequest, denial: Option<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Checked { request, denial });
    }

    /// Combines what the access check saw with the response status. `unchecked`
    /// describes the request when it never reached the access check.
    pub(crate) fn finish(
        &self,
        unchecked: AccessRequest,
        status: u16,
    ) -> (AccessRequest, AccessOutcome) {
        match self.0.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(Checked {
                request,
                denial: Some(reason),
            }) => (request, AccessOutcome::DeniedByHook { reason }),
            Some(Checked {
                request,
                denial: None,
            }) => (request, AccessOutcome::Responded { status }),
            None => (unchecked, AccessOutcome::Rejected { status }),
        }
    }
}

/// The s3s access check: requires a verified signature, then asks the hook.
pub(crate) struct HookAccess {
    pub(crate) hook: Arc<dyn AccessHook>,
}

#[async_trait::async_trait]
impl S3Access for HookAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        };
        let access_key_id = credentials.access_key.clone();

        let mut request = describe_request(cx.method(), cx.uri());
        request.access_key_id = Some(access_key_id);
        request.operation = Some(cx.s3_op().name().to_owned());
        request.bucket = cx.s3_path().get_bucket_name().map(str::to_owned);
        request.key = cx.s3_path().get_object_key().map(str::to_owned);

        let decision = self.hook.authorize(&request);
        let slot = cx.extensions_mut().get::<AccessSlot>().cloned();
        match decision {
            AccessDecision::Allow => {
                if let Some(slot) = slot {
                    slot.fill(request, None);
                }
                Ok(())
            }
            AccessDecision::Deny { reason } => {
                warn!(
                    operation = request.operation.as_deref().unwrap_or_default(),
                    bucket = request.bucket.as_deref().unwrap_or_default(),
                    key = request.key.as_deref().unwrap_or_default(),
                    reason,
                    "access hook denied a request"
                );
                if let Some(slot) = slot {
                    slot.fill(request, Some(reason));
                }
                Err(s3_error!(AccessDenied, "Access Denied"))
            }
        }
    }
}
