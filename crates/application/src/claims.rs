//! Custom claims: registration by modules, and resolution of their values at token issuance.

use std::collections::BTreeSet;
use std::sync::Arc;

use iam_domain::claims::{
    ClaimDefinition, ClaimError, ClaimLimits, ClaimName, ClaimScope, ClaimSource, FailurePolicy,
};
use iam_domain::{Tenant, TenantId, User};
use iam_ports::{ClaimFetcher, HookRequest, RevocationEvent};
use tracing::{info, warn};

use crate::authz::{Actor, AdminError, Auditor, Caller, Operation, authorize};
use crate::{Ports, RevocationView};

/// A claim to register.
#[derive(Debug, Clone)]
pub struct NewClaim {
    pub name: ClaimName,
    /// `None`: every token (platform root tenant only); else the caller's tenant.
    pub tenant_scope: Option<TenantScope>,
    pub source: ClaimSource,
}

/// A claim limited to the caller's tenant.
#[derive(Debug, Clone, Copy)]
pub struct TenantScope {
    /// Also every tenant below it.
    pub descendants: bool,
}

/// The values to inject into one token.
#[derive(Debug, Clone, Default)]
pub struct ResolvedClaims {
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Claims whose hook refuses issuance without them: never dropped to fit the token.
    pub required: BTreeSet<String>,
}

/// Why claims could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A claim that refuses issuance without it is unavailable.
    #[error(transparent)]
    Refused(#[from] ClaimsUnavailable),
    /// The store could not say which tenants are above this one.
    #[error("the store is unavailable")]
    Store(#[source] iam_ports::StoreError),
}

/// Why no token may be issued with the claims it needs.
#[derive(Debug, thiserror::Error)]
#[error("claim {claim} is unavailable: {reason}")]
pub struct ClaimsUnavailable {
    pub claim: String,
    pub reason: String,
}

/// Registers, lists and deletes custom claims, and resolves them for tokens.
pub struct ClaimService {
    ports: Ports,
    view: Arc<RevocationView>,
    fetcher: Arc<dyn ClaimFetcher>,
    limits: ClaimLimits,
    audit: Auditor,
}

impl ClaimService {
    /// Builds the service.
    pub fn new(
        ports: Ports,
        view: Arc<RevocationView>,
        fetcher: Arc<dyn ClaimFetcher>,
        limits: ClaimLimits,
    ) -> Self {
        Self {
            audit: Auditor::new(ports.clone()),
            ports,
            view,
            fetcher,
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> ClaimLimits {
        self.limits
    }

    /// The claims that reach the tenant's tokens (platform-wide, its own, and its ancestors'
    /// that include descendants), each with whether the tenant owns it: only an owner sees
    /// where another's values come from.
    pub async fn list(
        &self,
        actor: &Actor,
        tenant: TenantId,
    ) -> Result<Vec<(ClaimDefinition, bool)>, AdminError> {
        let mut uow = self.ports.store.begin().await?;
        authorize(&mut *uow, actor, Operation::ListClaims, tenant).await?;
        let ancestors = uow.ancestors(tenant).await?;
        let root = uow.root_tenant().await? == Some(tenant);
        let all = uow.claims().await?;
        uow.commit().await?;
        Ok(all
            .into_iter()
            .filter(|c| c.scope.covers(tenant, &ancestors))
            .map(|c| {
                let owned = match c.scope {
                    ClaimScope::Platform => root,
                    ClaimScope::Tenant { tenant: t, .. } => t == tenant,
                };
                (c, owned)
            })
            .collect())
    }

    /// Registers a claim. A platform-wide one needs the caller in the platform's root tenant.
    pub async fn register(
        &self,
        actor: &Actor,
        tenant: TenantId,
        new: NewClaim,
    ) -> Result<ClaimDefinition, AdminError> {
        let target = format!("claims/{}", new.name);
        let result = async {
            if let ClaimSource::Constant(v) = &new.source {
                self.limits
                    .check_value(v)
                    .map_err(AdminError::InvalidClaim)?;
            }
            let mut uow = self.ports.store.begin().await?;
            authorize(&mut *uow, actor, Operation::RegisterClaim, tenant).await?;
            // The platform (its root tenant, or a service) speaks for every module; a tenant
            // speaks for itself only: its claims are named `tenant.…`, and it may not make the
            // IAM call URLs of its choosing from inside the platform's network.
            let root = uow.root_tenant().await? == Some(tenant);
            let platform = matches!(actor.caller, Caller::Service) || root;
            if !platform {
                if !new.name.is_tenant_namespace() {
                    return Err(AdminError::InvalidClaim(ClaimError::TenantNamespace));
                }
                if matches!(new.source, ClaimSource::Hook(_)) {
                    return Err(AdminError::HooksPlatformOnly);
                }
            }
            let scope = match new.tenant_scope {
                Some(s) => ClaimScope::Tenant {
                    tenant,
                    descendants: s.descendants,
                },
                None if root => ClaimScope::Platform,
                None => return Err(AdminError::NotRoot),
            };
            let def = ClaimDefinition {
                name: new.name,
                scope,
                source: new.source,
                created_at: self.ports.clock.now(),
            };
            uow.insert_claim(&def).await?;
            self.audit
                .success(&mut *uow, actor, Operation::RegisterClaim, tenant, &target)
                .await?;
            uow.commit().await?;
            info!(claim = def.name.as_str(), "custom claim registered");
            Ok(def)
        }
        .await;
        let result = self
            .audit
            .finish(actor, Operation::RegisterClaim, tenant, &target, result)
            .await;
        if result.is_ok() {
            self.changed().await;
        }
        result
    }

    /// Deletes a claim the caller's tenant registered (platform-wide ones from the root tenant);
    /// no token is issued with it from now on.
    pub async fn delete(
        &self,
        actor: &Actor,
        tenant: TenantId,
        name: &ClaimName,
    ) -> Result<(), AdminError> {
        let target = format!("claims/{name}");
        let result = async {
            let mut uow = self.ports.store.begin().await?;
            authorize(&mut *uow, actor, Operation::DeleteClaim, tenant).await?;
            let found = uow
                .claims()
                .await?
                .into_iter()
                .find(|c| &c.name == name)
                .ok_or(AdminError::ClaimNotFound)?;
            let ours = match found.scope {
                ClaimScope::Tenant { tenant: t, .. } => t == tenant,
                ClaimScope::Platform => {
                    matches!(actor.caller, Caller::Service)
                        || uow.root_tenant().await? == Some(tenant)
                }
            };
            if !ours {
                return Err(AdminError::ClaimNotFound);
            }
            uow.delete_claim(name).await?;
            self.audit
                .success(&mut *uow, actor, Operation::DeleteClaim, tenant, &target)
                .await?;
            uow.commit().await?;
            info!(claim = name.as_str(), "custom claim deleted");
            Ok(())
        }
        .await;
        let result = self
            .audit
            .finish(actor, Operation::DeleteClaim, tenant, &target, result)
            .await;
        if result.is_ok() {
            self.changed().await;
        }
        result
    }

    async fn changed(&self) {
        if let Err(e) = self.view.apply(RevocationEvent::ClaimsChanged).await {
            warn!(error = %e, "claim view refresh failed");
        }
    }

    /// Whether some registered hook refuses issuance when it fails (refresh then resolves
    /// before spending the token, so a failure costs the client nothing).
    pub fn has_refusing_hooks(&self) -> bool {
        self.view.claims().iter().any(
            |c| matches!(&c.source, ClaimSource::Hook(h) if h.on_failure == FailurePolicy::Refuse),
        )
    }

    /// The values of every claim that reaches a token of `user` in `tenant`. Hooks are asked
    /// concurrently, each within its own timeout; a failing one is omitted or refuses the
    /// token as it declared. Values over the per-claim limit count as failures.
    pub async fn resolve(
        &self,
        user: &User,
        tenant: &Tenant,
    ) -> Result<ResolvedClaims, ResolveError> {
        let defs = self.view.claims();
        if defs.is_empty() {
            return Ok(ResolvedClaims::default());
        }
        let ancestors = if defs.iter().any(|c| c.scope.needs_ancestry()) {
            self.ancestors(tenant.id).await?
        } else {
            Vec::new()
        };
        let applicable: Vec<&ClaimDefinition> = defs
            .iter()
            .filter(|c| c.scope.covers(tenant.id, &ancestors))
            .collect();
        let asked = futures::future::join_all(applicable.iter().map(|c| async move {
            match &c.source {
                ClaimSource::Hook(hook) => {
                    let request = HookRequest {
                        claim: &c.name,
                        user: user.id,
                        tenant: tenant.id,
                    };
                    Some(
                        self.fetcher
                            .fetch(hook, request)
                            .await
                            .map_err(|e| e.to_string()),
                    )
                }
                _ => None,
            }
        }))
        .await;
        let mut out = ResolvedClaims::default();
        for (def, fetched) in applicable.into_iter().zip(asked) {
            let policy = match &def.source {
                ClaimSource::Hook(h) => h.on_failure,
                _ => FailurePolicy::Omit,
            };
            let value = match (&def.source, fetched) {
                (ClaimSource::Constant(v), _) => Ok(Some(v.clone())),
                (ClaimSource::UserMetadata(f), _) => Ok(user.metadata.get(f).cloned()),
                (ClaimSource::TenantMetadata(f), _) => Ok(tenant.metadata.get(f).cloned()),
                (ClaimSource::Hook(_), Some(Ok(v))) => Ok(Some(v)),
                (ClaimSource::Hook(_), Some(Err(e))) => Err(e),
                (ClaimSource::Hook(_), None) => Err("not asked".to_owned()),
            };
            let value = value.and_then(|v| match v {
                Some(v) => self
                    .limits
                    .check_value(&v)
                    .map(|()| Some(v))
                    .map_err(|e: ClaimError| e.to_string()),
                None => Ok(None),
            });
            match (value, policy) {
                (Ok(Some(v)), _) => {
                    if policy == FailurePolicy::Refuse {
                        out.required.insert(def.name.as_str().to_owned());
                    }
                    out.values.insert(def.name.as_str().to_owned(), v);
                }
                (Ok(None), _) => {}
                (Err(reason), FailurePolicy::Omit) => {
                    warn!(claim = def.name.as_str(), %reason, "custom claim omitted");
                }
                (Err(reason), FailurePolicy::Refuse) => {
                    warn!(claim = def.name.as_str(), %reason, "custom claim unavailable: no token issued");
                    return Err(ResolveError::Refused(ClaimsUnavailable {
                        claim: def.name.as_str().to_owned(),
                        reason,
                    }));
                }
            }
        }
        Ok(out)
    }

    async fn ancestors(&self, tenant: TenantId) -> Result<Vec<TenantId>, ResolveError> {
        let mut uow = self
            .ports
            .store
            .begin()
            .await
            .map_err(ResolveError::Store)?;
        let ancestors = uow.ancestors(tenant).await.map_err(ResolveError::Store)?;
        uow.commit().await.map_err(ResolveError::Store)?;
        Ok(ancestors)
    }
}
