//! TenantHierarchyService: IsDescendant and GetTenantStatus.

use std::sync::Arc;

use iam_application::TenantService;
use iam_domain::TenantStatus;
use tonic::{Request, Response, Status};

use crate::convert::tenant_id;
use crate::pb::{self, tenant_hierarchy_service_server};
use crate::status;

/// The TenantHierarchyService implementation.
pub struct Tenants {
    tenants: Arc<TenantService>,
}

impl Tenants {
    pub fn new(tenants: Arc<TenantService>) -> Self {
        Self { tenants }
    }
}

fn wire(s: TenantStatus) -> i32 {
    match s {
        TenantStatus::Active => pb::TenantStatus::Active.into(),
        // A deleted tenant is never answered (not found); were it, it would be unusable.
        TenantStatus::Blocked | TenantStatus::Deleted => pb::TenantStatus::Blocked.into(),
    }
}

#[tonic::async_trait]
impl tenant_hierarchy_service_server::TenantHierarchyService for Tenants {
    async fn is_descendant(
        &self,
        request: Request<pb::IsDescendantRequest>,
    ) -> Result<Response<pb::IsDescendantResponse>, Status> {
        let req = request.into_inner();
        let answer = self
            .tenants
            .is_descendant(
                tenant_id("ancestor_id", &req.ancestor_id)?,
                tenant_id("descendant_id", &req.descendant_id)?,
            )
            .await
            .map_err(status::tenant)?;
        Ok(Response::new(pb::IsDescendantResponse {
            is_descendant: answer,
        }))
    }

    async fn get_tenant_status(
        &self,
        request: Request<pb::GetTenantStatusRequest>,
    ) -> Result<Response<pb::GetTenantStatusResponse>, Status> {
        let id = tenant_id("tenant_id", &request.into_inner().tenant_id)?;
        let standing = self.tenants.standing(id).await.map_err(status::tenant)?;
        Ok(Response::new(pb::GetTenantStatusResponse {
            status: wire(standing.effective),
            own_status: wire(standing.tenant.status),
            blocked_by: standing
                .blocked_by
                .map(|t| t.to_string())
                .unwrap_or_default(),
        }))
    }
}
