//! Tenant standing and hierarchy questions (backs gRPC TenantHierarchyService).

use std::sync::Arc;

use iam_domain::{Tenant, TenantId, TenantStatus};
use iam_ports::{BoxError, RevocationEvent, StoreError};
use tracing::info;

use crate::{Ports, RevocationView};

/// Why a tenant use case failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("tenant not found")]
    NotFound,
    #[error("service unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl From<StoreError> for TenantError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::Unavailable(e),
            StoreError::Conflict(_) | StoreError::Unexpected(_) => Self::Internal(Box::new(e)),
        }
    }
}

/// A tenant's own status and the status in force through its ancestors.
#[derive(Debug, Clone)]
pub struct TenantStanding {
    pub tenant: Tenant,
    /// Blocked if the tenant or any ancestor is blocked.
    pub effective: TenantStatus,
    /// The nearest blocked tenant (itself or an ancestor) when effectively blocked.
    pub blocked_by: Option<TenantId>,
}

/// Tenant standing, blocking and ancestry.
pub struct TenantService {
    ports: Ports,
    view: Arc<RevocationView>,
}

impl TenantService {
    /// Builds the service.
    pub fn new(ports: Ports, view: Arc<RevocationView>) -> Self {
        Self { ports, view }
    }

    /// Whether `descendant` lies strictly below `ancestor` (a tenant is not its own descendant).
    pub async fn is_descendant(
        &self,
        ancestor: TenantId,
        descendant: TenantId,
    ) -> Result<bool, TenantError> {
        let mut uow = self.ports.store.begin().await?;
        let ancestors = uow.ancestors(descendant).await?;
        uow.commit().await?;
        Ok(ancestors.contains(&ancestor))
    }

    /// The tenant's own and effective status.
    pub async fn standing(&self, id: TenantId) -> Result<TenantStanding, TenantError> {
        let mut uow = self.ports.store.begin().await?;
        let tenant = uow.tenant(id).await?.ok_or(TenantError::NotFound)?;
        let mut blocked_by = (tenant.status == TenantStatus::Blocked).then_some(id);
        if blocked_by.is_none() {
            for ancestor in uow.ancestors(id).await? {
                if uow
                    .tenant(ancestor)
                    .await?
                    .is_some_and(|t| t.status == TenantStatus::Blocked)
                {
                    blocked_by = Some(ancestor);
                    break;
                }
            }
        }
        uow.commit().await?;
        Ok(TenantStanding {
            tenant,
            effective: if blocked_by.is_some() {
                TenantStatus::Blocked
            } else {
                TenantStatus::Active
            },
            blocked_by,
        })
    }

    /// Blocks or unblocks a tenant (and so, effectively, its subtree).
    pub async fn set_status(&self, id: TenantId, status: TenantStatus) -> Result<(), TenantError> {
        let mut uow = self.ports.store.begin().await?;
        if !uow
            .set_tenant_status(id, status, self.ports.clock.now())
            .await?
        {
            return Err(TenantError::NotFound);
        }
        uow.commit().await?;
        info!(tenant.id = %id, status = status.as_str(), "tenant status changed");
        // The subtree's effective statuses come from a fresh snapshot. The change is committed
        // whatever happens here; a failed refresh is repaired by the feed's next resync.
        if let Err(e) = self.view.apply(RevocationEvent::TenantStatus(id)).await {
            tracing::warn!(error = %e, "revocation view refresh after a tenant change failed");
        }
        Ok(())
    }
}
