//! Emailed flows: address verification, password reset and invitations, with their messages
//! written to the outbox in the same unit of work as their tokens.

use std::sync::Arc;

use chrono::Duration;
use iam_domain::mfa::MfaToken;
use iam_domain::{
    DisplayName, Email, LinkKind, LinkToken, MailId, MailMessage, Membership, Password, RoleName,
    TenantId, Timestamp, User, UserId,
};
use iam_ports::{RevocationEvent, StoreError, UnitOfWork, random};
use tracing::info;

use crate::authz::{
    Actor, AdminError, Auditor, Caller, Operation, authorize, may_grant, tenant_roles,
};
use crate::{AuthError, AuthService, Ports, RevocationView};

/// Lifetimes, links and wording of emailed flows.
#[derive(Debug, Clone)]
pub struct FlowPolicy {
    /// Links are built from this, never from a request's Host or forwarded headers.
    pub public_base_url: String,
    pub product: String,
    pub verify_ttl: Duration,
    pub reset_ttl: Duration,
    pub invite_ttl: Duration,
}

/// Why a flow failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The link is unknown, used, expired or superseded.
    #[error("the link is invalid or expired")]
    InvalidLink,
    /// The caller may not invite into this tenant.
    #[error("only owners and admins may invite")]
    NotAllowed,
    /// A new account needs these to accept an invitation.
    #[error("a name and a password are needed to create the account")]
    DetailsRequired,
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl From<StoreError> for FlowError {
    fn from(e: StoreError) -> Self {
        Self::Auth(AuthError::from(e))
    }
}

/// The outcome of accepting an invitation.
#[derive(Debug, Clone, Copy)]
pub struct Joined {
    pub user: UserId,
    pub tenant: TenantId,
    /// Whether the invitation created the account.
    pub created: bool,
}

/// Builds messages. Plain text and HTML, the product's name and the public base URL.
#[derive(Debug, Clone)]
pub struct Composer {
    policy: FlowPolicy,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Composer {
    /// A composer for the policy's product and base URL.
    pub fn new(policy: FlowPolicy) -> Self {
        Self { policy }
    }

    fn link(&self, path: &str, token: &MfaToken) -> String {
        format!(
            "{}/{path}?token={}",
            self.policy.public_base_url.trim_end_matches('/'),
            token.expose()
        )
    }

    fn message(
        &self,
        id: MailId,
        to: &Email,
        now: Timestamp,
        subject: String,
        lines: &[String],
        link: Option<&str>,
    ) -> MailMessage {
        let mut text = lines.join("\n\n");
        let mut html: String = lines
            .iter()
            .map(|l| format!("<p>{}</p>", escape(l)))
            .collect();
        if let Some(link) = link {
            text.push_str(&format!("\n\n{link}\n"));
            html.push_str(&format!("<p><a href=\"{0}\">{0}</a></p>", escape(link)));
        }
        MailMessage {
            id,
            to: to.clone(),
            subject,
            text,
            html: format!("<!doctype html><html><body>{html}</body></html>"),
            created_at: now,
        }
    }

    fn verify(&self, id: MailId, to: &Email, now: Timestamp, token: &MfaToken) -> MailMessage {
        let p = &self.policy.product;
        self.message(
            id,
            to,
            now,
            format!("Confirm your email address for {p}"),
            &[format!(
                "Open this link within {} hours to confirm that {to} is yours.",
                self.policy.verify_ttl.num_hours()
            )],
            Some(&self.link("verify-email", token)),
        )
    }

    fn reset(&self, id: MailId, to: &Email, now: Timestamp, token: &MfaToken) -> MailMessage {
        let p = &self.policy.product;
        self.message(
            id,
            to,
            now,
            format!("Reset your {p} password"),
            &[
                format!(
                    "Someone asked to reset the password of {to}. Open this link within {} minutes to choose a new one; it ends every signed-in session.",
                    self.policy.reset_ttl.num_minutes()
                ),
                "If it was not you, ignore this message: nothing changes.".to_owned(),
            ],
            Some(&self.link("reset-password", token)),
        )
    }

    fn invite(
        &self,
        id: MailId,
        to: &Email,
        now: Timestamp,
        token: &MfaToken,
        tenant: &str,
    ) -> MailMessage {
        let p = &self.policy.product;
        self.message(
            id,
            to,
            now,
            format!("You are invited to {tenant} on {p}"),
            &[format!(
                "You are invited to join {tenant}. Open this link within {} days to accept.",
                self.policy.invite_ttl.num_days()
            )],
            Some(&self.link("accept-invite", token)),
        )
    }

    /// The notice an existing account gets when someone tries to register its address.
    pub fn account_exists(&self, id: MailId, to: &Email, now: Timestamp) -> MailMessage {
        let p = &self.policy.product;
        let reset = format!(
            "{}/reset-password",
            self.policy.public_base_url.trim_end_matches('/')
        );
        self.message(
            id,
            to,
            now,
            format!("Someone tried to register your address on {p}"),
            &[
                format!("An account for {to} exists already, so nothing was created."),
                "If you forgot your password, you can reset it here:".to_owned(),
            ],
            Some(&reset),
        )
    }
}

/// Verification, reset and invitation flows.
pub struct Flows {
    throttle: Arc<crate::Throttle>,
    ports: Ports,
    auth: Arc<AuthService>,
    view: Arc<RevocationView>,
    composer: Composer,
    policy: FlowPolicy,
}

impl Flows {
    /// Builds the flows.
    pub fn new(
        ports: Ports,
        auth: Arc<AuthService>,
        view: Arc<RevocationView>,
        policy: FlowPolicy,
    ) -> Self {
        Self {
            throttle: auth.throttle().clone(),
            composer: Composer::new(policy.clone()),
            ports,
            auth,
            view,
            policy,
        }
    }

    fn mail_id(&self, now: Timestamp) -> MailId {
        MailId(UserId::new_v7(now, random(&*self.ports.rng)).as_uuid())
    }

    /// Stores a link token and queues its message in `uow`.
    async fn send_link(
        &self,
        uow: &mut dyn UnitOfWork,
        token: LinkToken,
        message: MailMessage,
    ) -> Result<(), FlowError> {
        uow.insert_link_token(&token).await?;
        uow.enqueue_mail(&message).await?;
        Ok(())
    }

    fn new_link(
        &self,
        kind: LinkKind,
        email: &Email,
        user: Option<UserId>,
        now: Timestamp,
        ttl: Duration,
    ) -> (MfaToken, LinkToken) {
        let token = MfaToken::from_random(random(&*self.ports.rng));
        let stored = LinkToken {
            hash: token.hash(),
            kind,
            email: email.clone(),
            user,
            tenant: None,
            roles: vec![],
            invited_by: None,
            created_at: now,
            expires_at: now + ttl,
            used_at: None,
        };
        (token, stored)
    }

    /// Admits a link request for `email` from `client`, or refuses it (429). Keyed on the address
    /// as given, so the answer is the same whether or not an account has it.
    pub async fn admit(&self, email: &Email, client: std::net::IpAddr) -> Result<(), FlowError> {
        self.throttle
            .reserve(crate::Scope::LinkAddress(client))
            .await
            .map_err(AuthError::from)?;
        self.throttle
            .reserve(crate::Scope::LinkEmail(email))
            .await
            .map_err(AuthError::from)?;
        Ok(())
    }

    /// The work behind `POST /auth/request-verify-email`, after the answer has gone: queues a
    /// verification link if an unverified account has this address, nothing otherwise.
    pub async fn request_verification(&self, email: &Email) -> Result<(), FlowError> {
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        let Some(record) = uow.user_by_email(email).await? else {
            return Ok(());
        };
        if record.user.email_verified || !record.user.can_sign_in() {
            return Ok(());
        }
        let (token, stored) = self.new_link(
            LinkKind::Verify,
            email,
            Some(record.user.id),
            now,
            self.policy.verify_ttl,
        );
        let message = self.composer.verify(self.mail_id(now), email, now, &token);
        self.send_link(&mut *uow, stored, message).await?;
        uow.commit().await?;
        info!(user.id = %record.user.id, "verification link queued");
        Ok(())
    }

    /// Marks the address verified.
    pub async fn verify_email(&self, token: &str) -> Result<(), FlowError> {
        let token = MfaToken::parse(token).ok_or(FlowError::InvalidLink)?;
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        let link = uow
            .take_link_token(&token.hash(), LinkKind::Verify, now)
            .await?
            .ok_or(FlowError::InvalidLink)?;
        let mut user = match link.user {
            Some(id) => uow.user_by_id(id).await?,
            None => None,
        }
        .filter(|u| u.email == link.email)
        .ok_or(FlowError::InvalidLink)?;
        user.email_verified = true;
        user.updated_at = now;
        uow.update_user(&user).await?;
        uow.commit().await?;
        info!(user.id = %user.id, "email address verified");
        Ok(())
    }

    /// The work behind `POST /auth/request-reset`, after the answer has gone.
    pub async fn request_reset(&self, email: &Email) -> Result<(), FlowError> {
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        let Some(record) = uow.user_by_email(email).await? else {
            return Ok(());
        };
        if !record.user.can_sign_in() {
            return Ok(());
        }
        let (token, stored) = self.new_link(
            LinkKind::Reset,
            email,
            Some(record.user.id),
            now,
            self.policy.reset_ttl,
        );
        let message = self.composer.reset(self.mail_id(now), email, now, &token);
        self.send_link(&mut *uow, stored, message).await?;
        uow.commit().await?;
        info!(user.id = %record.user.id, "reset link queued");
        Ok(())
    }

    /// Sets a new password from a reset link, ends every session and every pending reset.
    pub async fn reset_password(&self, token: &str, password: Password) -> Result<(), FlowError> {
        let token = MfaToken::parse(token).ok_or(FlowError::InvalidLink)?;
        let now = self.ports.clock.now();
        // Look first (and put it back), so that no Argon2 work is spent on a dead link.
        let mut uow = self.ports.store.begin().await?;
        let link = uow
            .take_link_token(&token.hash(), LinkKind::Reset, now)
            .await?
            .ok_or(FlowError::InvalidLink)?;
        let user = match link.user {
            Some(id) => uow.user_by_id(id).await?,
            None => None,
        }
        .filter(|u| u.email == link.email && u.can_sign_in())
        .ok_or(FlowError::InvalidLink)?;
        uow.rollback().await?;
        self.auth
            .screen(&password, &user.email, user.name.as_str())?;
        let hash = self
            .ports
            .hasher
            .hash(&password)
            .await
            .map_err(AuthError::from)?;

        let mut uow = self.ports.store.begin().await?;
        if uow
            .take_link_token(&token.hash(), LinkKind::Reset, now)
            .await?
            .is_none()
        {
            return Err(FlowError::InvalidLink);
        }
        uow.set_password(user.id, &hash).await?;
        uow.spend_link_tokens(&user.email, LinkKind::Reset, now)
            .await?;
        let ended = uow.revoke_user_sessions(user.id, None, now).await?;
        uow.commit().await?;
        for session in ended {
            let _ = self
                .view
                .apply(RevocationEvent::SessionRevoked(session))
                .await;
        }
        info!(user.id = %user.id, "password reset; every session ended");
        Ok(())
    }

    /// Checks that the caller may invite into `tenant` (their own, or one below it they
    /// manage) (`iam.invitations.write`), that the roles exist there, and that the caller holds
    /// all they grant. Says nothing of the invitee, so it answers alike whether or not the
    /// address has an account.
    pub async fn may_invite(
        &self,
        actor: &Actor,
        tenant: TenantId,
        roles: &[RoleName],
    ) -> Result<(), AdminError> {
        if !matches!(actor.caller, Caller::User(_)) {
            return Err(AdminError::Forbidden(Operation::Invite.permission()));
        }
        let result = async {
            let mut uow = self.ports.store.begin().await?;
            let held = authorize(&mut *uow, actor, Operation::Invite, tenant).await?;
            let all = tenant_roles(&mut *uow, tenant).await?;
            uow.commit().await?;
            may_grant(&held, &all, roles)
        }
        .await;
        Auditor::new(self.ports.clone())
            .finish(actor, Operation::Invite, tenant, "invitations", result)
            .await
    }

    /// The work behind `POST /auth/invite`, after the answer has gone: an invitation link to
    /// `tenant` (which [`Flows::may_invite`] checked), whether or not the address has an account.
    pub async fn invite(
        &self,
        actor: &Actor,
        tenant: TenantId,
        email: &Email,
        roles: Vec<RoleName>,
    ) -> Result<(), FlowError> {
        let Caller::User(inviter) = &actor.caller else {
            return Err(FlowError::NotAllowed);
        };
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        let tenant = uow
            .tenant(tenant)
            .await?
            .filter(iam_domain::Tenant::is_live)
            .ok_or(FlowError::NotAllowed)?;
        let existing = uow.user_by_email(email).await?.map(|r| r.user.id);
        let (token, mut stored) = self.new_link(
            LinkKind::Invite,
            email,
            existing,
            now,
            self.policy.invite_ttl,
        );
        stored.tenant = Some(tenant.id);
        stored.roles = if roles.is_empty() {
            vec![RoleName::member()]
        } else {
            roles
        };
        stored.invited_by = Some(inviter.user);
        let message =
            self.composer
                .invite(self.mail_id(now), email, now, &token, tenant.name.as_str());
        self.send_link(&mut *uow, stored, message).await?;
        Auditor::new(self.ports.clone())
            .success(
                &mut *uow,
                actor,
                Operation::Invite,
                tenant.id,
                "invitations",
            )
            .await
            .map_err(|e| FlowError::Auth(AuthError::Internal(Box::new(e))))?;
        uow.commit().await?;
        info!(tenant.id = %tenant.id, "invitation queued");
        Ok(())
    }

    /// Accepts an invitation: an existing account gains the membership; otherwise a new one is
    /// made with the given name and password (its address is verified by the link itself).
    pub async fn accept_invite(
        &self,
        token: &str,
        details: Option<(DisplayName, Password)>,
    ) -> Result<Joined, FlowError> {
        let token = MfaToken::parse(token).ok_or(FlowError::InvalidLink)?;
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        let link = uow
            .take_link_token(&token.hash(), LinkKind::Invite, now)
            .await?
            .ok_or(FlowError::InvalidLink)?;
        let tenant = link.tenant.ok_or(FlowError::InvalidLink)?;
        // An invitation into a tenant deleted since is void.
        if !uow.tenant(tenant).await?.is_some_and(|t| t.is_live()) {
            return Err(FlowError::InvalidLink);
        }
        let existing = uow.user_by_email(&link.email).await?;
        let hash = match (&existing, &details) {
            (Some(_), _) => None,
            (None, None) => return Err(FlowError::DetailsRequired),
            (None, Some((name, password))) => {
                // Hashing must not hold the unit; the link is taken again afterwards.
                uow.rollback().await?;
                self.auth.screen(password, &link.email, name.as_str())?;
                let hash = self
                    .ports
                    .hasher
                    .hash(password)
                    .await
                    .map_err(AuthError::from)?;
                uow = self.ports.store.begin().await?;
                if uow
                    .take_link_token(&token.hash(), LinkKind::Invite, now)
                    .await?
                    .is_none()
                {
                    return Err(FlowError::InvalidLink);
                }
                Some(hash)
            }
        };
        let (user, created) = match (existing, hash, details) {
            (Some(record), _, _) => (record.user.id, false),
            (None, Some(hash), Some((name, _))) => {
                let mut user = User::new(
                    UserId::new_v7(now, random(&*self.ports.rng)),
                    link.email.clone(),
                    name,
                    now,
                );
                user.email_verified = true;
                match uow.insert_user(&user, Some(&hash)).await {
                    Ok(()) => {}
                    // Registered meanwhile: the membership goes to that account instead.
                    Err(StoreError::Conflict("email")) => return Err(FlowError::InvalidLink),
                    Err(e) => return Err(e.into()),
                }
                (user.id, true)
            }
            _ => return Err(FlowError::DetailsRequired),
        };
        if uow.membership(user, tenant).await?.is_none() {
            // Only roles that still bear the name they had when the invitation was sent: a
            // role deleted or renamed since, or a newer one that took its name, is not granted.
            let current = tenant_roles(&mut *uow, tenant)
                .await
                .map_err(|e| FlowError::Auth(AuthError::Internal(Box::new(e))))?;
            let roles = link
                .roles
                .iter()
                .filter(|name| {
                    current
                        .iter()
                        .any(|r| &r.name == *name && r.named_at <= link.created_at)
                })
                .cloned()
                .collect();
            uow.insert_membership(&Membership {
                tenant,
                user,
                roles,
                created_at: now,
            })
            .await?;
        }
        uow.commit().await?;
        info!(user.id = %user, tenant.id = %tenant, created, "invitation accepted");
        Ok(Joined {
            user,
            tenant,
            created,
        })
    }
}
