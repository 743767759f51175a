//! Outbound HTTP: the `ClaimFetcher` port on reqwest (rustls), asking modules' hooks for custom
//! claim values at token issuance.
//!
//! Invariant: the only crate that calls other services over HTTP at run time. A hook gets the
//! claim's name and the user's and tenant's ids, nothing secret; it must answer `{"value": …}`
//! within its timeout. Redirects are not followed (a hook is one configured endpoint, and a
//! redirect could lead the IAM anywhere), and answers over 64 KiB are refused unread.

use async_trait::async_trait;
use iam_domain::claims::ClaimHook;
use iam_ports::{ClaimFetcher, HookError, HookRequest};

/// Largest hook answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Calls claim hooks over HTTP.
#[derive(Clone)]
pub struct HttpClaimFetcher {
    client: reqwest::Client,
}

impl HttpClaimFetcher {
    /// A fetcher with its own connection pool.
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // Hooks are the platform's own endpoints: asked directly, never through a proxy
            // named by the environment.
            .no_proxy()
            .user_agent(concat!("iam/", env!("CARGO_PKG_VERSION"), " claim-hook"))
            .build()?;
        Ok(Self { client })
    }
}

#[async_trait]
impl ClaimFetcher for HttpClaimFetcher {
    async fn fetch(
        &self,
        hook: &ClaimHook,
        request: HookRequest<'_>,
    ) -> Result<serde_json::Value, HookError> {
        let body = serde_json::json!({
            "claim": request.claim.as_str(),
            "user_id": request.user.to_string(),
            "tenant_id": request.tenant.to_string(),
        });
        let answer = self
            .client
            .post(&hook.url)
            // Covers connecting, sending and reading the whole answer.
            .timeout(hook.timeout)
            .json(&body)
            .send()
            .await
            .map_err(classify)?;
        let status = answer.status();
        if !status.is_success() {
            return Err(HookError::Failed(format!("status {}", status.as_u16())));
        }
        if answer
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(HookError::Invalid);
        }
        // Chunk by chunk, so an answer without a length cannot grow past the limit in memory.
        let mut answer = answer;
        let mut bytes = Vec::new();
        while let Some(chunk) = answer.chunk().await.map_err(classify)? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(HookError::Invalid);
            }
            bytes.extend_from_slice(&chunk);
        }
        let mut parsed: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| HookError::Invalid)?;
        match parsed.get_mut("value") {
            Some(value) => Ok(value.take()),
            None => Err(HookError::Invalid),
        }
    }
}

fn classify(e: reqwest::Error) -> HookError {
    if e.is_timeout() {
        HookError::Timeout
    } else if e.is_connect() {
        HookError::Failed("connection failed".into())
    } else {
        HookError::Failed("request failed".into())
    }
}
