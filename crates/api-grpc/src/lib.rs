//! The gRPC transport (tonic): `AuthService` (Login, Refresh, ValidateToken), `IamService` (user
//! management) and `TenantHierarchyService`, plus standard health checking and reflection.
//!
//! Invariant: protobuf types never leave this crate; every RPC parses its request into domain
//! types, calls the same application service as REST, and maps errors in [`status`].

mod auth;
mod convert;
mod credential;
pub mod status;
mod tenants;
mod users;

use std::sync::Arc;

use iam_application::{AuthService, RbacService, TenantService, TrustedProxies, UserService};

pub use credential::ServiceCredentials;

/// Generated protobuf and service code for `platform.iam.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("platform.iam.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("iam_descriptor");
}

/// What the gRPC services share.
#[derive(Clone)]
pub struct GrpcState {
    pub auth: Arc<AuthService>,
    pub users: Arc<UserService>,
    pub rbac: Arc<RbacService>,
    pub tenants: Arc<TenantService>,
    /// Credentials that IamService and TenantHierarchyService require in
    /// `authorization: Bearer …` metadata.
    pub credentials: ServiceCredentials,
    /// Proxies whose `x-forwarded-for` names the client.
    pub trusted_proxies: Arc<TrustedProxies>,
}

/// Why the gRPC routes could not be built.
#[derive(Debug, thiserror::Error)]
#[error("gRPC reflection could not load the descriptor set: {0}")]
pub struct RoutesError(String);

/// Every gRPC service of the IAM, with `grpc.health.v1` and server reflection.
pub async fn routes(state: GrpcState) -> Result<tonic::service::Routes, RoutesError> {
    use pb::auth_service_server::AuthServiceServer;
    use pb::iam_service_server::IamServiceServer;
    use pb::tenant_hierarchy_service_server::TenantHierarchyServiceServer;

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<AuthServiceServer<auth::Auth>>()
        .await;
    reporter
        .set_serving::<IamServiceServer<users::Users>>()
        .await;
    reporter
        .set_serving::<TenantHierarchyServiceServer<tenants::Tenants>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RoutesError(e.to_string()))?;

    let check = state.credentials.clone();
    let hierarchy_check = state.credentials.clone();
    let mut routes = tonic::service::Routes::new(health);
    routes = routes
        .add_service(reflection)
        .add_service(AuthServiceServer::new(auth::Auth::new(
            state.auth.clone(),
            state.trusted_proxies.clone(),
        )))
        .add_service(IamServiceServer::with_interceptor(
            users::Users::new(state.users.clone(), state.rbac.clone(), state.auth.clone()),
            move |req| check.require(req),
        ))
        .add_service(TenantHierarchyServiceServer::with_interceptor(
            tenants::Tenants::new(state.tenants.clone()),
            // Tenant structure and status are for the gateway, not for anyone who can connect.
            move |req| hierarchy_check.require(req),
        ));
    Ok(routes)
}
