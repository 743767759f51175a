//! Roles, permissions, authorisation, the audit trail and bootstrap.

use std::collections::BTreeSet;

use iam_application::{
    Actor, AdminError, BootstrapCommand, Bootstrapped, NewRole, NewUser, RoleChanges, UserChanges,
};
use iam_domain::{
    AuditActor, AuditOutcome, DisplayName, Email, Metadata, Password, Permission, PermissionDef,
    RoleName, TenantId, TenantName, UserStatus,
};
use iam_ports::UserFilter;

use crate::support::{CLIENT, Harness, PASSWORD};

fn perms(list: &[&str]) -> BTreeSet<Permission> {
    list.iter()
        .map(|p| Permission::parse(p).expect("permission"))
        .collect()
}

fn role_name(s: &str) -> RoleName {
    RoleName::parse(s).expect("role name")
}

/// A signed-in owner of a fresh tenant, as an actor.
async fn owner(h: &Harness, email: &str) -> (Actor, TenantId) {
    h.register(email).await;
    actor(h, email).await
}

/// Signs `email` in and acts as them, with a request id.
async fn actor(h: &Harness, email: &str) -> (Actor, TenantId) {
    let pair = h.login(email, PASSWORD).await.expect("login");
    let principal = h
        .auth
        .authenticate(&pair.access_token)
        .await
        .expect("principal");
    let tenant = principal.tenant;
    (Actor::user(principal, Some(format!("req-{email}"))), tenant)
}

async fn add_user(h: &Harness, by: &Actor, tenant: TenantId, email: &str, roles: &[&str]) {
    h.users
        .create(
            by,
            tenant,
            NewUser {
                email: Email::parse(email).expect("email"),
                name: DisplayName::parse("Someone Else").expect("name"),
                password: Some(Password::new(PASSWORD).expect("password")),
                roles: roles.iter().map(|r| role_name(r)).collect(),
                metadata: Metadata::default(),
            },
        )
        .await
        .expect("create user");
}

#[tokio::test]
async fn permissions_follow_roles_into_tokens_and_validation() {
    let h = Harness::new().await;
    let (ada, t) = owner(&h, "ada@example.com").await;
    let everything: Vec<String> = PermissionDef::builtin()
        .into_iter()
        .map(|d| d.name.as_str().to_owned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        h.view.permissions(t, &["owner".into()], i64::MAX),
        everything
    );
    assert!(
        h.view
            .permissions(t, &["member".into()], i64::MAX)
            .is_empty()
    );

    let support = h
        .rbac
        .create_role(
            &ada,
            t,
            NewRole {
                name: role_name("support"),
                description: "Helps users".into(),
                permissions: perms(&["iam.users.read"]),
            },
        )
        .await
        .expect("role");
    add_user(&h, &ada, t, "sam@example.com", &["support"]).await;
    let pair = h.login("sam@example.com", PASSWORD).await.expect("login");
    let claims = h
        .auth
        .validator()
        .validate(&pair.access_token)
        .await
        .expect("valid");
    assert_eq!(claims.roles, vec!["support".to_owned()]);
    assert_eq!(
        h.view.permissions(t, &claims.roles, claims.iat),
        vec!["iam.users.read".to_owned()]
    );

    // A change to the role reaches the very same token's permissions at once.
    h.rbac
        .update_role(
            &ada,
            t,
            support.id,
            RoleChanges {
                permissions: Some(perms(&["iam.users.read", "iam.audit.read"])),
                ..RoleChanges::default()
            },
        )
        .await
        .expect("update");
    assert_eq!(
        h.view.permissions(t, &claims.roles, claims.iat),
        vec!["iam.audit.read".to_owned(), "iam.users.read".to_owned()]
    );

    // A rename is carried into the membership, so the next token carries the new name.
    h.rbac
        .update_role(
            &ada,
            t,
            support.id,
            RoleChanges {
                name: Some(role_name("helpdesk")),
                ..RoleChanges::default()
            },
        )
        .await
        .expect("rename");
    let pair = h.login("sam@example.com", PASSWORD).await.expect("login");
    let claims = h
        .auth
        .validator()
        .validate(&pair.access_token)
        .await
        .expect("valid");
    assert_eq!(claims.roles, vec!["helpdesk".to_owned()]);
    assert_eq!(h.view.permissions(t, &claims.roles, claims.iat).len(), 2);

    // Deleted: the role grants nothing and new tokens no longer name it.
    h.rbac
        .delete_role(&ada, t, support.id)
        .await
        .expect("delete");
    assert!(h.view.permissions(t, &claims.roles, claims.iat).is_empty());
    // A new role that takes the old name grants nothing to tokens that meant the old one.
    h.clock.advance(chrono::Duration::seconds(2));
    h.rbac
        .create_role(
            &ada,
            t,
            NewRole {
                name: role_name("helpdesk"),
                description: String::new(),
                permissions: perms(&["iam.audit.read"]),
            },
        )
        .await
        .expect("new role, old name");
    assert!(h.view.permissions(t, &claims.roles, claims.iat).is_empty());
    assert_eq!(
        h.view.permissions(t, &claims.roles, claims.iat + 2),
        vec!["iam.audit.read".to_owned()]
    );
    let pair = h.login("sam@example.com", PASSWORD).await.expect("login");
    let claims = h
        .auth
        .validator()
        .validate(&pair.access_token)
        .await
        .expect("valid");
    assert!(claims.roles.is_empty(), "{:?}", claims.roles);
}

#[tokio::test]
async fn callers_need_the_permission_and_stay_in_their_tenant() {
    let h = Harness::new().await;
    let (ada, t) = owner(&h, "ada@example.com").await;
    let (bob, other) = owner(&h, "bob@example.com").await;
    add_user(&h, &ada, t, "mia@example.com", &[]).await;
    let (mia, _) = actor(&h, "mia@example.com").await;

    // A member holds nothing.
    let r = h
        .users
        .list(&mia, t, &UserFilter::default(), None, 10)
        .await;
    assert!(
        matches!(r, Err(AdminError::Forbidden("iam.users.read"))),
        "{r:?}"
    );
    let r = h.rbac.list_roles(&mia, t).await;
    assert!(matches!(r, Err(AdminError::Forbidden("iam.roles.read"))));

    // Another tenant's resources are not found, even for its peer owner.
    let r = h
        .users
        .list(&bob, t, &UserFilter::default(), None, 10)
        .await;
    assert!(matches!(r, Err(AdminError::TenantNotFound)), "{r:?}");
    let ada_id = ada.user_id().expect("user");
    let r = h.users.get(&bob, other, ada_id).await;
    assert!(matches!(r, Err(AdminError::NotFound)), "{r:?}");

    // Granting the permission through a role works at once (read now, not from the token).
    let reader = h
        .rbac
        .create_role(
            &ada,
            t,
            NewRole {
                name: role_name("reader"),
                description: String::new(),
                permissions: perms(&["iam.users.read"]),
            },
        )
        .await
        .expect("role");
    let mia_id = mia.user_id().expect("user");
    h.rbac
        .assign(&ada, t, mia_id, reader.id)
        .await
        .expect("assign");
    let page = h
        .users
        .list(&mia, t, &UserFilter::default(), None, 10)
        .await
        .expect("list");
    assert_eq!(page.users.len(), 2);
    // Still not a writer.
    let r = h
        .users
        .update(&mia, t, ada_id, UserChanges::default())
        .await;
    assert!(matches!(r, Err(AdminError::Forbidden("iam.users.write"))));

    // And taking it away stops it at once, though Mia's token still names the role.
    h.rbac
        .unassign(&ada, t, mia_id, reader.id)
        .await
        .expect("unassign");
    let r = h
        .users
        .list(&mia, t, &UserFilter::default(), None, 10)
        .await;
    assert!(matches!(r, Err(AdminError::Forbidden(_))));
}

#[tokio::test]
async fn nobody_grants_more_than_they_hold() {
    let h = Harness::new().await;
    let (ada, t) = owner(&h, "ada@example.com").await;
    add_user(&h, &ada, t, "al@example.com", &["admin"]).await;
    let (al, _) = actor(&h, "al@example.com").await;
    let roles = h.rbac.list_roles(&al, t).await.expect("roles");
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["owner", "admin", "member"]);
    let owner_role = roles[0].clone();
    let al_id = al.user_id().expect("id");

    // An admin cannot make themselves (or anyone) an owner, nor lock an owner out.
    let r = h.rbac.assign(&al, t, al_id, owner_role.id).await;
    assert!(matches!(r, Err(AdminError::Escalation)), "{r:?}");
    let ada_id = ada.user_id().expect("id");
    let r = h.users.delete(&al, t, ada_id).await;
    assert!(matches!(r, Err(AdminError::Escalation)), "{r:?}");
    // Nor shape a role beyond their own permissions.
    let r = h
        .rbac
        .create_role(
            &al,
            t,
            NewRole {
                name: role_name("mighty"),
                description: String::new(),
                permissions: perms(&["iam.tenants.manage-descendants"]),
            },
        )
        .await;
    assert!(matches!(r, Err(AdminError::Escalation)), "{r:?}");
    // Unknown permissions are refused outright.
    let r = h
        .rbac
        .create_role(
            &ada,
            t,
            NewRole {
                name: role_name("odd"),
                description: String::new(),
                permissions: perms(&["nobody.registered.this"]),
            },
        )
        .await;
    assert!(matches!(r, Err(AdminError::UnknownPermission(_))), "{r:?}");
    // System roles are fixed; their names are reserved.
    let r = h
        .rbac
        .update_role(&ada, t, owner_role.id, RoleChanges::default())
        .await;
    assert!(matches!(r, Err(AdminError::SystemRole)), "{r:?}");
    let r = h.rbac.delete_role(&ada, t, roles[2].id).await;
    assert!(matches!(r, Err(AdminError::SystemRole)), "{r:?}");
    let r = h
        .rbac
        .create_role(
            &ada,
            t,
            NewRole {
                name: role_name("admin"),
                description: String::new(),
                permissions: BTreeSet::new(),
            },
        )
        .await;
    assert!(matches!(r, Err(AdminError::RoleTaken)), "{r:?}");
}

#[tokio::test]
async fn the_last_owner_keeps_the_owner_role() {
    let h = Harness::new().await;
    let (ada, t) = owner(&h, "ada@example.com").await;
    let owner_role = h.rbac.list_roles(&ada, t).await.expect("roles")[0].clone();
    let ada_id = ada.user_id().expect("id");
    let r = h.rbac.unassign(&ada, t, ada_id, owner_role.id).await;
    assert!(matches!(r, Err(AdminError::LastOwner)), "{r:?}");
    let r = h.users.delete(&ada, t, ada_id).await;
    assert!(matches!(r, Err(AdminError::LastOwner)), "{r:?}");
    let r = h
        .users
        .update(
            &ada,
            t,
            ada_id,
            UserChanges {
                status: Some(UserStatus::Disabled),
                ..UserChanges::default()
            },
        )
        .await;
    assert!(matches!(r, Err(AdminError::LastOwner)), "{r:?}");

    // With a second owner, the first may step down.
    add_user(&h, &ada, t, "olu@example.com", &["owner"]).await;
    let roles = h
        .rbac
        .unassign(&ada, t, ada_id, owner_role.id)
        .await
        .expect("step down");
    assert!(roles.is_empty());
    // Ada now holds nothing here.
    let r = h.rbac.list_roles(&ada, t).await;
    assert!(matches!(r, Err(AdminError::Forbidden(_))));
}

#[tokio::test]
async fn soft_deleted_users_are_refused_and_restored_intact() {
    let h = Harness::new().await;
    let (ada, t) = owner(&h, "ada@example.com").await;
    add_user(&h, &ada, t, "grace@example.com", &["admin"]).await;
    let grace = h.login("grace@example.com", PASSWORD).await.expect("login");
    let grace_id = h
        .auth
        .authenticate(&grace.access_token)
        .await
        .expect("principal")
        .user;
    let patched = h
        .users
        .update(
            &ada,
            t,
            grace_id,
            UserChanges {
                metadata: Some(serde_json::json!({"plan": "pro", "seats": 3})),
                ..UserChanges::default()
            },
        )
        .await
        .expect("metadata");
    h.users.delete(&ada, t, grace_id).await.expect("delete");
    assert!(h.login("grace@example.com", PASSWORD).await.is_err());
    assert!(
        h.auth
            .refresh(grace.refresh_token.expose(), CLIENT)
            .await
            .is_err()
    );
    assert!(h.auth.authenticate(&grace.access_token).await.is_err());
    // Deleting again is harmless.
    h.users.delete(&ada, t, grace_id).await.expect("again");

    let restored = h.users.restore(&ada, t, grace_id).await.expect("restore");
    assert_eq!(restored.status, UserStatus::Active);
    assert_eq!(restored.metadata, patched.metadata);
    assert_eq!(restored.name, patched.name);
    let again = h.login("grace@example.com", PASSWORD).await.expect("login");
    let p = h
        .auth
        .authenticate(&again.access_token)
        .await
        .expect("valid");
    assert_eq!(p.roles, vec!["admin".to_owned()], "roles kept");
    // The old session stays ended.
    assert!(h.auth.authenticate(&grace.access_token).await.is_err());
    let r = h.users.restore(&ada, t, grace_id).await;
    assert!(matches!(r, Err(AdminError::NotDeleted)), "{r:?}");
}

#[tokio::test]
async fn audit_trail_records_changes_and_refusals() {
    let h = Harness::new().await;
    let (ada, t) = owner(&h, "ada@example.com").await;
    add_user(&h, &ada, t, "mia@example.com", &[]).await;
    let (mia, _) = actor(&h, "mia@example.com").await;
    let mia_id = mia.user_id().expect("id");
    let _ = h.users.delete(&mia, t, mia_id).await;
    // Reads are not audited.
    let _ = h.users.get(&ada, t, mia_id).await.expect("get");

    let page = h
        .rbac
        .audit_events(&ada, t, None, 10)
        .await
        .expect("events");
    let seen: Vec<(&str, AuditOutcome)> = page
        .events
        .iter()
        .map(|e| (e.action.as_str(), e.outcome))
        .collect();
    assert_eq!(
        seen,
        [
            ("users.delete", AuditOutcome::Denied),
            ("users.create", AuditOutcome::Success)
        ]
    );
    let denied = &page.events[0];
    assert_eq!(denied.actor, AuditActor::User(mia_id));
    assert_eq!(denied.target, format!("users/{mia_id}"));
    assert_eq!(denied.request_id.as_deref(), Some("req-mia@example.com"));
    assert_eq!(
        page.events[1].actor,
        AuditActor::User(ada.user_id().expect("id"))
    );
    // Members may not read it.
    let r = h.rbac.audit_events(&mia, t, None, 10).await;
    assert!(matches!(r, Err(AdminError::Forbidden("iam.audit.read"))));
}

#[tokio::test]
async fn bootstrap_makes_a_root_tenant_once_and_only_it_registers_permissions() {
    let h = Harness::new().await;
    let cmd = || BootstrapCommand {
        email: Email::parse("root@example.com").expect("email"),
        password: Password::new(PASSWORD).expect("password"),
        name: DisplayName::parse("Root").expect("name"),
        tenant_name: TenantName::parse("Platform").expect("name"),
    };
    let Bootstrapped::Created { tenant, .. } = h.rbac.bootstrap(cmd()).await.expect("bootstrap")
    else {
        panic!("first bootstrap creates");
    };
    assert_eq!(
        h.rbac.bootstrap(cmd()).await.expect("again"),
        Bootstrapped::AlreadyDone { tenant }
    );
    let (root, t) = actor(&h, "root@example.com").await;
    assert_eq!(t, tenant);
    let def = PermissionDef {
        name: Permission::parse_external("billing.invoices.read").expect("p"),
        description: "Read invoices".into(),
        builtin: false,
    };
    h.rbac
        .register_permission(&root, t, def.clone())
        .await
        .expect("register");
    let all = h.rbac.permissions(&root, t).await.expect("catalogue");
    assert!(all.contains(&def));
    // The owner holds the new permission too, in ValidateToken's answer.
    assert!(
        h.view
            .permissions(t, &["owner".into()], i64::MAX)
            .contains(&"billing.invoices.read".to_owned())
    );
    // Another tenant's owner may not register.
    let (ada, other) = owner(&h, "ada@example.com").await;
    let r = h.rbac.register_permission(&ada, other, def).await;
    assert!(matches!(r, Err(AdminError::NotRoot)), "{r:?}");
}

#[tokio::test]
async fn shared_accounts_and_role_grants_at_creation_need_more() {
    let h = Harness::new().await;
    let (ada, t) = owner(&h, "ada@example.com").await;
    let (_bob, other) = owner(&h, "bob@example.com").await;
    add_user(&h, &ada, t, "kim@example.com", &[]).await;
    let (kim, _) = actor(&h, "kim@example.com").await;
    let kim_id = kim.user_id().expect("id");
    // Kim joins Bob's tenant too.
    {
        use iam_ports::Store as _;
        let mut uow = h.store.begin().await.expect("begin");
        uow.insert_membership(&iam_domain::Membership {
            tenant: other,
            user: kim_id,
            roles: vec![role_name("member")],
            created_at: crate::support::start(),
        })
        .await
        .expect("membership");
        uow.commit().await.expect("commit");
    }
    // Ada's tenant may not change an account that is not hers alone.
    let r = h
        .users
        .update(
            &ada,
            t,
            kim_id,
            UserChanges {
                status: Some(UserStatus::Disabled),
                ..UserChanges::default()
            },
        )
        .await;
    assert!(matches!(r, Err(AdminError::SharedUser)), "{r:?}");
    let r = h.users.delete(&ada, t, kim_id).await;
    assert!(matches!(r, Err(AdminError::SharedUser)), "{r:?}");
    // A platform service may.
    h.users
        .update(
            &Actor::service(None),
            t,
            kim_id,
            UserChanges {
                status: Some(UserStatus::Disabled),
                ..UserChanges::default()
            },
        )
        .await
        .expect("service disables");

    // Creating a user with roles is granting them: it needs iam.roles.assign too.
    h.rbac
        .create_role(
            &ada,
            t,
            NewRole {
                name: role_name("hr"),
                description: String::new(),
                permissions: perms(&["iam.users.write"]),
            },
        )
        .await
        .expect("role");
    add_user(&h, &ada, t, "hal@example.com", &["hr"]).await;
    let (hal, _) = actor(&h, "hal@example.com").await;
    add_user(&h, &hal, t, "plain@example.com", &["member"]).await;
    let r = h
        .users
        .create(
            &hal,
            t,
            NewUser {
                email: Email::parse("boss@example.com").expect("email"),
                name: DisplayName::parse("Boss").expect("name"),
                password: None,
                roles: vec![role_name("hr")],
                metadata: Metadata::default(),
            },
        )
        .await;
    assert!(
        matches!(r, Err(AdminError::Forbidden("iam.roles.assign"))),
        "{r:?}"
    );
}
