//! The service credential that management RPCs require.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tonic::{Request, Status};

/// Accepted service credentials, kept only as SHA-256 digests: comparing digests leaks nothing
/// useful through timing, and the secrets themselves are not kept in memory.
#[derive(Clone, Default)]
pub struct ServiceCredentials {
    digests: Arc<Vec<[u8; 32]>>,
}

impl ServiceCredentials {
    /// Accepts any of `secrets`; an empty list refuses every management call.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            digests: Arc::new(
                secrets
                    .into_iter()
                    .map(|s| Sha256::digest(s.as_bytes()).into())
                    .collect(),
            ),
        }
    }

    /// Lets a request through if it carries an accepted `authorization: Bearer <credential>`.
    pub fn require<T>(&self, request: Request<T>) -> Result<Request<T>, Status> {
        if self.digests.is_empty() {
            return Err(Status::unauthenticated(
                "management RPCs are disabled: no service credential is configured",
            ));
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("a service credential is required"))?;
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        if self.digests.contains(&digest) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(
                "the service credential is not valid",
            ))
        }
    }
}
