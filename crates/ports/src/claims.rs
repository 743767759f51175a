//! Asking a module's HTTP hook for a custom claim's value.

use async_trait::async_trait;
use iam_domain::claims::{ClaimHook, ClaimName};
use iam_domain::{TenantId, UserId};

/// Why a hook gave no value.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// No answer within the hook's timeout.
    #[error("the hook did not answer in time")]
    Timeout,
    /// Unreachable, or an answer other than 2xx.
    #[error("the hook failed: {0}")]
    Failed(String),
    /// A 2xx answer that is not `{"value": …}` JSON.
    #[error("the hook's answer is not {{\"value\": …}} JSON")]
    Invalid,
}

/// What a hook is told about the token being issued.
#[derive(Debug, Clone, Copy)]
pub struct HookRequest<'a> {
    pub claim: &'a ClaimName,
    pub user: UserId,
    pub tenant: TenantId,
}

/// Calls claim hooks.
#[async_trait]
pub trait ClaimFetcher: Send + Sync {
    /// The hook's value for this token, within its timeout.
    async fn fetch(
        &self,
        hook: &ClaimHook,
        request: HookRequest<'_>,
    ) -> Result<serde_json::Value, HookError>;
}
