//! Registration, sign-in, refresh, sign-out and bearer authentication.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Duration;
use iam_domain::mfa::{MFA_CHALLENGE_SECS, MFA_MAX_ATTEMPTS};
use iam_domain::tenant::SELECTION_SECS;
use iam_domain::token::Grant;
use iam_domain::{
    AccessClaims, DisplayName, Email, Membership, MfaChallenge, MfaToken, Password, RecoveryCode,
    RefreshToken, RoleName, Session, SessionId, Tenant, TenantId, TenantName, TenantSelection,
    TenantStatus, TokenPolicy, User, UserId,
};
use iam_domain::{MailId, Weakness};
use iam_ports::{
    BoxError, HashError, NewRefreshToken, Refreshed, RevocationEvent, SignError, Standing,
    StoreError, UnitOfWork, random,
};
use tracing::{info, warn};

use crate::{Composer, Ports, Scope, Throttle, ThrottleError, TokenValidator};

/// Why an authentication use case failed. Transports map each variant to one stable answer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Unknown email, wrong password or an account that may not sign in: one answer for all.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The credentials were right but the user does not belong to the requested tenant.
    #[error("not a member of the requested tenant")]
    NotAMember,
    /// The tenant is blocked.
    #[error("tenant is blocked")]
    TenantBlocked,
    /// A new password is on a blocklist or built from the user's context.
    #[error("weak password: {0}")]
    WeakPassword(Weakness),
    /// Too many recent failures from this client (and account); retry after this many seconds.
    #[error("too many failed attempts")]
    Throttled(i64),
    /// The MFA token is unknown, expired, spent, or out of attempts.
    #[error("invalid mfa token")]
    InvalidMfaToken,
    /// The second-factor code is wrong, used already, or not the user's.
    #[error("invalid mfa code")]
    InvalidMfaCode,
    /// The tenant-selection token is unknown, expired or spent.
    #[error("invalid selection token")]
    InvalidSelection,
    /// The refresh token is unknown, spent, expired or revoked (OAuth `invalid_grant`).
    #[error("invalid grant")]
    InvalidGrant,
    /// The bearer token cannot be used.
    #[error("unauthenticated: {0}")]
    Unauthenticated(Unauthenticated),
    /// Password hashing is at capacity; retry shortly.
    #[error("overloaded")]
    Overloaded,
    /// The store cannot be reached.
    #[error("service unavailable")]
    Unavailable(#[source] StoreError),
    /// A custom claim that refuses issuance without it could not be had (its hook failed, or
    /// the token would be too large); retry later.
    #[error("custom claims unavailable")]
    ClaimsUnavailable(#[source] crate::ClaimsUnavailable),
    /// A bug or broken dependency.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

/// Why a bearer token was refused; machine-readable for ValidateToken and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("malformed")]
    Malformed,
    #[error("bad_signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("invalid_claims")]
    InvalidClaims,
    #[error("revoked")]
    Revoked,
    #[error("user_disabled")]
    UserDisabled,
    #[error("tenant_blocked")]
    TenantBlocked,
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::Unavailable(e),
            StoreError::Conflict(_) | StoreError::Unexpected(_) => Self::Internal(Box::new(e)),
        }
    }
}

impl From<ThrottleError> for AuthError {
    fn from(e: ThrottleError) -> Self {
        match e {
            ThrottleError::Throttled(secs) => Self::Throttled(secs),
            ThrottleError::Store(s) => Self::from(s),
        }
    }
}

impl From<HashError> for AuthError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => Self::Overloaded,
            HashError::Unexpected(source) => Self::Internal(source),
        }
    }
}

impl From<SignError> for AuthError {
    fn from(e: SignError) -> Self {
        Self::Internal(Box::new(e))
    }
}

/// A new account and its first tenant.
#[derive(Debug)]
pub struct RegisterCommand {
    pub email: Email,
    pub password: Password,
    pub name: DisplayName,
    /// Name of the tenant the user will own; defaults to the user's name.
    pub tenant_name: Option<TenantName>,
}

/// The outcome of a first factor.
#[derive(Debug)]
pub enum SignIn {
    /// Signed in.
    Tokens(TokenPair),
    /// The user has a second factor: present it with this token within `expires_in` seconds.
    MfaRequired {
        mfa_token: MfaToken,
        expires_in: i64,
    },
    /// The user belongs to several tenants and named none: pick one with this token
    /// (`select_tenant`) within `expires_in` seconds.
    TenantSelection {
        selection_token: MfaToken,
        tenants: Vec<TenantChoice>,
        expires_in: i64,
    },
}

/// One of a user's memberships, as offered for selection and listed by `GET /auth/tenants`.
#[derive(Debug, Clone)]
pub struct TenantChoice {
    pub tenant: Tenant,
    pub roles: Vec<RoleName>,
    /// Blocked, itself or through an ancestor: no tokens can be had there.
    pub blocked: bool,
}

/// A second factor presented to finish a sign-in.
pub enum SecondFactor {
    /// A 6-digit code from the authenticator app.
    Totp(String),
    /// One of the user's recovery codes.
    Recovery(RecoveryCode),
}

impl std::fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Totp(_) => f.write_str("Totp(<redacted>)"),
            Self::Recovery(code) => write!(f, "Recovery({code:?})"),
        }
    }
}

/// What a successful sign-in or refresh hands to the client.
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: RefreshToken,
    pub refresh_expires_in: i64,
    pub tenant: TenantId,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token)
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// The verified caller behind a bearer token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: UserId,
    pub tenant: TenantId,
    pub session: SessionId,
    pub roles: Vec<String>,
    pub claims: AccessClaims,
}

/// What `GET /auth/me` shows.
#[derive(Debug, Clone)]
pub struct Me {
    pub user: User,
    pub tenant: Tenant,
    pub roles: Vec<String>,
}

/// Registration, sign-in, token refresh, sign-out and bearer authentication.
pub struct AuthService {
    ports: Ports,
    policy: TokenPolicy,
    validator: Arc<TokenValidator>,
    throttle: Arc<Throttle>,
    /// The product's name, which new passwords must not be built from.
    product: String,
    /// Writes the "account exists" notice; without it, none is sent.
    composer: Option<Composer>,
    /// Unverified addresses may not sign in (they get the generic answer).
    require_verified_email: bool,
    /// Custom claims injected into every token; none without it.
    claims: Option<Arc<crate::ClaimService>>,
}

impl AuthService {
    /// Builds the service.
    pub fn new(
        ports: Ports,
        policy: TokenPolicy,
        validator: Arc<TokenValidator>,
        throttle: Arc<Throttle>,
        product: String,
    ) -> Self {
        Self {
            ports,
            policy,
            validator,
            throttle,
            product,
            composer: None,
            require_verified_email: false,
            claims: None,
        }
    }

    /// Injects registered custom claims into every token issued.
    pub fn with_claims(mut self, claims: Arc<crate::ClaimService>) -> Self {
        self.claims = Some(claims);
        self
    }

    /// The custom claims of a token for `user` in `tenant`.
    async fn custom_claims(
        &self,
        user: &User,
        tenant: &Tenant,
    ) -> Result<crate::ResolvedClaims, AuthError> {
        match &self.claims {
            Some(c) => c.resolve(user, tenant).await.map_err(|e| match e {
                crate::claims::ResolveError::Refused(r) => AuthError::ClaimsUnavailable(r),
                crate::claims::ResolveError::Store(s) => AuthError::from(s),
            }),
            None => Ok(crate::ResolvedClaims::default()),
        }
    }

    /// Sends notices through the outbox, and optionally refuses unverified addresses.
    pub fn with_mail(mut self, composer: Composer, require_verified_email: bool) -> Self {
        self.composer = Some(composer);
        self.require_verified_email = require_verified_email;
        self
    }

    /// The throttle in force.
    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.throttle
    }

    /// Refuses a new password that is common, predictable, or built from the account's own
    /// details or the product's name.
    pub fn screen(&self, password: &Password, email: &Email, name: &str) -> Result<(), AuthError> {
        let context = [
            email.local_part(),
            email.as_str(),
            name,
            self.product.as_str(),
        ];
        match self.ports.screen.weakness(password, &context) {
            Some(w) => Err(AuthError::WeakPassword(w)),
            None => Ok(()),
        }
    }

    /// The validator behind [`AuthService::authenticate`] (and gRPC ValidateToken).
    pub fn validator(&self) -> &Arc<TokenValidator> {
        &self.validator
    }

    /// The token policy in force.
    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// Creates the account, a tenant it owns and the owner membership; does nothing for an email
    /// that is taken. Both paths hash the password, so they cost the same and answer alike.
    pub async fn register(&self, cmd: RegisterCommand, client: IpAddr) -> Result<(), AuthError> {
        // Judged on the request alone, so the answer says nothing about existing accounts.
        self.screen(&cmd.password, &cmd.email, cmd.name.as_str())?;
        // Every registration costs an Argon2 hash, so each counts, success or not.
        self.throttle.reserve(Scope::Register(client)).await?;
        let hash = self.ports.hasher.hash(&cmd.password).await?;
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        if uow.user_by_email(&cmd.email).await?.is_some() {
            // The address's owner hears of it; the caller learns nothing.
            if let Some(composer) = &self.composer {
                let id = MailId(UserId::new_v7(now, random(&*self.ports.rng)).as_uuid());
                uow.enqueue_mail(&composer.account_exists(id, &cmd.email, now))
                    .await?;
                uow.commit().await?;
            } else {
                uow.rollback().await?;
            }
            info!("registration for an existing email ignored; its owner is told");
            return Ok(());
        }
        let user = User::new(
            UserId::new_v7(now, random(&*self.ports.rng)),
            cmd.email,
            cmd.name,
            now,
        );
        let tenant_name = match cmd.tenant_name {
            Some(name) => name,
            None => TenantName::parse(user.name.as_str())
                .map_err(|e| AuthError::Internal(Box::new(e)))?,
        };
        let tenant = Tenant::new_top_level(
            TenantId::new_v7(now, random(&*self.ports.rng)),
            tenant_name,
            user.id,
            now,
        );
        match uow.insert_user(&user, Some(&hash)).await {
            Ok(()) => {}
            // Lost a race with a concurrent registration of the same email: same answer.
            Err(StoreError::Conflict(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        uow.insert_tenant(&tenant).await?;
        uow.insert_membership(&Membership {
            tenant: tenant.id,
            user: user.id,
            roles: vec![RoleName::owner()],
            created_at: now,
        })
        .await?;
        uow.commit().await?;
        info!(user.id = %user.id, tenant.id = %tenant.id, "account registered");
        Ok(())
    }

    /// Signs in with email and password. Every path performs exactly one Argon2 verification.
    pub async fn login(
        &self,
        email: &Email,
        password: &Password,
        tenant: Option<TenantId>,
        client: IpAddr,
    ) -> Result<SignIn, AuthError> {
        // Before any store or Argon2 work, and keyed by the email as typed: a throttled answer
        // is the same for existing and unknown accounts, and costs nothing.
        self.throttle.check(&[Scope::LoginAddress(client)]).await?;
        self.throttle
            .reserve(Scope::LoginPair(email, client))
            .await?;
        let mut uow = self.ports.store.begin().await?;
        let record = uow.user_by_email(email).await?;
        uow.commit().await?;

        let hasher = &self.ports.hasher;
        let (user, verified) = match record {
            Some(rec) => {
                let hash = rec.password_hash.as_ref().unwrap_or(hasher.decoy());
                let ok = hasher.verify(password, hash).await?;
                (Some(rec.user), ok && rec.password_hash.is_some())
            }
            None => {
                hasher.verify(password, hasher.decoy()).await?;
                (None, false)
            }
        };
        let usable =
            |u: &User| u.can_sign_in() && (u.email_verified || !self.require_verified_email);
        let user = match user {
            Some(user) if verified && usable(&user) => user,
            _ => {
                // The pair counted this attempt when it was reserved.
                self.throttle
                    .failed(&[Scope::LoginAddress(client), Scope::Account(email)])
                    .await?;
                return Err(AuthError::InvalidCredentials);
            }
        };
        self.throttle
            .succeeded(Scope::LoginPair(email, client))
            .await?;
        self.first_factor_passed(user, tenant, vec!["pwd".into()])
            .await
    }

    /// The one way from a passed first factor (password today; providers and SSO later) to
    /// tokens: a user with an active second factor gets a challenge instead, so no path can
    /// skip it.
    async fn first_factor_passed(
        &self,
        user: User,
        tenant: Option<TenantId>,
        amr: Vec<String>,
    ) -> Result<SignIn, AuthError> {
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        if tenant.is_none() {
            let memberships = uow.memberships_of(user.id).await?;
            if memberships.len() > 1 {
                // Which tenant is the user's to say: no tokens for a guessed one.
                let tenants = self.choices(&mut *uow, memberships).await?;
                let token = MfaToken::from_random(random(&*self.ports.rng));
                uow.insert_selection(&TenantSelection {
                    token_hash: token.hash(),
                    user: user.id,
                    amr,
                    expires_at: now + Duration::seconds(SELECTION_SECS),
                })
                .await?;
                uow.commit().await?;
                info!(user.id = %user.id, "first factor passed; tenant selection required");
                return Ok(SignIn::TenantSelection {
                    selection_token: token,
                    tenants,
                    expires_in: SELECTION_SECS,
                });
            }
        }
        let membership = pick_membership(&mut *uow, user.id, tenant).await?;
        let tenant = self.usable_tenant(&mut *uow, membership.tenant).await?;
        if uow.mfa(user.id).await?.is_some_and(|e| e.is_active()) {
            let token = MfaToken::from_random(random(&*self.ports.rng));
            uow.insert_mfa_challenge(&MfaChallenge {
                token_hash: token.hash(),
                user: user.id,
                tenant: membership.tenant,
                amr,
                expires_at: now + Duration::seconds(MFA_CHALLENGE_SECS),
                attempts: 0,
            })
            .await?;
            uow.commit().await?;
            info!(user.id = %user.id, "first factor passed; second factor required");
            return Ok(SignIn::MfaRequired {
                mfa_token: token,
                expires_in: MFA_CHALLENGE_SECS,
            });
        }
        uow.commit().await?;
        // Hooks are slow work: asked with no unit of work open.
        let claims = self.custom_claims(&user, &tenant).await?;
        let mut uow = self.ports.store.begin().await?;
        let pair = self
            .start_session(&mut *uow, &user, &membership, amr, claims)
            .await?;
        uow.commit().await?;
        info!(user.id = %user.id, tenant.id = %membership.tenant, "signed in");
        Ok(SignIn::Tokens(pair))
    }

    /// Memberships as choices, oldest first.
    async fn choices(
        &self,
        uow: &mut dyn UnitOfWork,
        memberships: Vec<Membership>,
    ) -> Result<Vec<TenantChoice>, AuthError> {
        let mut out = Vec::with_capacity(memberships.len());
        for m in memberships {
            let (Some(tenant), blocked) = standing_of(&mut *uow, m.tenant).await? else {
                continue;
            };
            if tenant.is_live() {
                out.push(TenantChoice {
                    blocked,
                    tenant,
                    roles: m.roles,
                });
            }
        }
        Ok(out)
    }

    /// Finishes a sign-in that needed a tenant chosen: the selection token is spent, then the
    /// sign-in goes on as if the tenant had been named (a second factor may still be due).
    pub async fn select_tenant(
        &self,
        selection_token: &str,
        tenant: TenantId,
    ) -> Result<SignIn, AuthError> {
        let token = MfaToken::parse(selection_token).ok_or(AuthError::InvalidSelection)?;
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        let selection = uow
            .take_selection(&token.hash(), now)
            .await?
            .ok_or(AuthError::InvalidSelection)?;
        let user = uow
            .user_by_id(selection.user)
            .await?
            .filter(User::can_sign_in)
            .ok_or(AuthError::InvalidCredentials)?;
        uow.commit().await?;
        self.first_factor_passed(user, Some(tenant), selection.amr)
            .await
    }

    /// The signed-in user's memberships.
    pub async fn tenants(&self, principal: &Principal) -> Result<Vec<TenantChoice>, AuthError> {
        let mut uow = self.ports.store.begin().await?;
        let memberships = uow.memberships_of(principal.user).await?;
        let choices = self.choices(&mut *uow, memberships).await?;
        uow.commit().await?;
        Ok(choices)
    }

    /// New tokens, in a new session (refresh family) of their own, for another tenant of the
    /// signed-in user; the current session is left as it is. The authentication methods carry
    /// over: the user proved them for this sign-in.
    pub async fn switch_tenant(
        &self,
        principal: &Principal,
        tenant: TenantId,
    ) -> Result<TokenPair, AuthError> {
        let mut uow = self.ports.store.begin().await?;
        let user = uow
            .user_by_id(principal.user)
            .await?
            .filter(User::can_sign_in)
            .ok_or(AuthError::Unauthenticated(Unauthenticated::UserDisabled))?;
        let membership = uow
            .membership(user.id, tenant)
            .await?
            .ok_or(AuthError::NotAMember)?;
        let target = self.usable_tenant(&mut *uow, tenant).await?;
        uow.commit().await?;
        let claims = self.custom_claims(&user, &target).await?;
        let mut uow = self.ports.store.begin().await?;
        let pair = self
            .start_session(
                &mut *uow,
                &user,
                &membership,
                principal.claims.amr.clone(),
                claims,
            )
            .await?;
        uow.commit().await?;
        info!(user.id = %user.id, from = %principal.tenant, to = %tenant, "switched tenant");
        Ok(pair)
    }

    /// The tenant, unless it is blocked, itself or through an ancestor (read from the store,
    /// like the refresh function's check, not from the view that may lag it).
    async fn usable_tenant(
        &self,
        uow: &mut dyn UnitOfWork,
        id: TenantId,
    ) -> Result<Tenant, AuthError> {
        match standing_of(uow, id).await? {
            (None, _) => Err(AuthError::Internal("membership of a missing tenant".into())),
            (Some(_), true) => Err(AuthError::TenantBlocked),
            (Some(tenant), false) => Ok(tenant),
        }
    }

    /// The second step of a sign-in: a TOTP code or a recovery code for an MFA challenge.
    /// Each try spends one of the challenge's attempts, right or wrong.
    pub async fn complete_mfa(
        &self,
        mfa_token: &str,
        factor: SecondFactor,
        client: IpAddr,
    ) -> Result<TokenPair, AuthError> {
        self.throttle.check(&[Scope::SecondFactor(client)]).await?;
        let outcome = self.second_factor(mfa_token, factor).await;
        if matches!(
            outcome,
            Err(AuthError::InvalidMfaToken | AuthError::InvalidMfaCode)
        ) {
            self.throttle.failed(&[Scope::SecondFactor(client)]).await?;
        }
        outcome
    }

    async fn second_factor(
        &self,
        mfa_token: &str,
        factor: SecondFactor,
    ) -> Result<TokenPair, AuthError> {
        let token = MfaToken::parse(mfa_token).ok_or(AuthError::InvalidMfaToken)?;
        let hash = token.hash();
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        let challenge = uow
            .take_mfa_attempt(&hash, now, MFA_MAX_ATTEMPTS)
            .await?
            .ok_or(AuthError::InvalidMfaToken)?;
        uow.commit().await?;
        // Challenges are cheap for whoever has the password; this caps their guesses in all.
        self.throttle
            .reserve(Scope::SecondFactorUser(challenge.user))
            .await?;

        let mfa = crate::mfa::Checker::new(&self.ports);
        let mut uow = self.ports.store.begin().await?;
        let method = match &factor {
            SecondFactor::Totp(code) => {
                if !mfa.totp(&mut *uow, challenge.user, code, now).await? {
                    return Err(AuthError::InvalidMfaCode);
                }
                "otp"
            }
            SecondFactor::Recovery(code) => {
                // The Argon2 check must not hold the unit; the spend below is atomic anyway.
                uow.commit().await?;
                let verified = mfa.recovery(challenge.user, code).await?;
                uow = self.ports.store.begin().await?;
                if !verified
                    || !uow
                        .use_recovery_code(challenge.user, code.lookup(), now)
                        .await?
                {
                    return Err(AuthError::InvalidMfaCode);
                }
                "rcv"
            }
        };
        if !uow.consume_mfa_challenge(&hash).await? {
            return Err(AuthError::InvalidMfaToken);
        }
        let user = uow
            .user_by_id(challenge.user)
            .await?
            .filter(User::can_sign_in)
            .ok_or(AuthError::InvalidCredentials)?;
        let membership = uow
            .membership(user.id, challenge.tenant)
            .await?
            .ok_or(AuthError::NotAMember)?;
        let tenant = self.usable_tenant(&mut *uow, membership.tenant).await?;
        let mut amr = challenge.amr.clone();
        amr.extend([method.to_owned(), "mfa".to_owned()]);
        // The challenge is spent; hooks are then asked with no unit of work open.
        uow.commit().await?;
        let claims = self.custom_claims(&user, &tenant).await?;
        let mut uow = self.ports.store.begin().await?;
        let pair = self
            .start_session(&mut *uow, &user, &membership, amr, claims)
            .await?;
        uow.commit().await?;
        self.throttle
            .succeeded(Scope::SecondFactorUser(user.id))
            .await?;
        info!(user.id = %user.id, method, "second factor passed; signed in");
        Ok(pair)
    }

    /// Creates a session with its first refresh token and signs the first access token.
    async fn start_session(
        &self,
        uow: &mut dyn UnitOfWork,
        user: &User,
        membership: &Membership,
        amr: Vec<String>,
        claims: crate::ResolvedClaims,
    ) -> Result<TokenPair, AuthError> {
        let now = self.ports.clock.now();
        let session = Session {
            id: SessionId::new_v7(now, random(&*self.ports.rng)),
            user: user.id,
            tenant: membership.tenant,
            amr,
            auth_time: now,
            created_at: now,
            revoked_at: None,
        };
        let refresh = RefreshToken::from_random(random(&*self.ports.rng));
        uow.insert_session(&session, &self.new_refresh(&refresh, now))
            .await?;
        self.issue(&session, membership.roles.clone(), refresh, claims)
    }

    fn new_refresh(&self, token: &RefreshToken, now: iam_domain::Timestamp) -> NewRefreshToken {
        NewRefreshToken {
            hash: token.hash(),
            issued_at: now,
            expires_at: now + self.policy.refresh_ttl,
        }
    }

    fn issue(
        &self,
        session: &Session,
        roles: Vec<RoleName>,
        refresh: RefreshToken,
        custom: crate::ResolvedClaims,
    ) -> Result<TokenPair, AuthError> {
        let now = self.ports.clock.now();
        let grant = Grant {
            user: session.user,
            tenant: session.tenant,
            roles,
            session: session.id,
            amr: session.amr.clone(),
        };
        let jti = uuid::Builder::from_random_bytes(random(&*self.ports.rng)).into_uuid();
        let mut claims = self.policy.access_claims(&grant, now, jti);
        let access_token = self.sign_fitting(&mut claims, custom)?;
        Ok(TokenPair {
            access_token,
            expires_in: self.policy.access_ttl.num_seconds(),
            refresh_token: refresh,
            refresh_expires_in: self.policy.refresh_ttl.num_seconds(),
            tenant: session.tenant,
        })
    }

    /// Signs `claims` with the custom claims that fit: the largest omittable ones are dropped
    /// until the signed token fits the size limit, and `claims.extra` ends as what was signed.
    /// Refused only if claims that refuse issuance without them cannot fit (a token too large
    /// without any custom claims is issued as it is: the limit is about what modules add).
    fn sign_fitting(
        &self,
        claims: &mut AccessClaims,
        custom: crate::ResolvedClaims,
    ) -> Result<String, AuthError> {
        let limit = self
            .claims
            .as_ref()
            .map_or(usize::MAX, |c| c.limits().per_token_bytes);
        claims.extra = custom.values;
        loop {
            let token = self.ports.signer.sign(claims)?;
            if token.len() <= limit || claims.extra.is_empty() {
                return Ok(token);
            }
            let droppable = claims
                .extra
                .iter()
                .filter(|(k, _)| !custom.required.contains(*k))
                .max_by_key(|(_, v)| v.to_string().len())
                .map(|(k, _)| k.clone());
            match droppable {
                Some(largest) => {
                    warn!(claim = %largest, limit, "custom claim omitted: the token would be too large");
                    claims.extra.remove(&largest);
                }
                None => {
                    return Err(AuthError::ClaimsUnavailable(crate::ClaimsUnavailable {
                        claim: custom
                            .required
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(","),
                        reason: format!(
                            "the claims that refuse issuance without them exceed the \
                             {limit}-byte token limit (claims.max_token_bytes)"
                        ),
                    }));
                }
            }
        }
    }

    /// Rotates a refresh token: the presented one is spent and a new pair is issued for the same
    /// session and tenant. A spent token revokes its whole family.
    pub async fn refresh(&self, presented: &str, client: IpAddr) -> Result<TokenPair, AuthError> {
        // No I/O: only this instance's memory of addresses it found throttled.
        self.throttle.check_local(Scope::Refresh(client))?;
        let outcome = self.rotate(presented).await;
        if matches!(outcome, Err(AuthError::InvalidGrant)) {
            // Only failures are counted, so a valid refresh, the hot path, costs no throttle
            // I/O; 256-bit tokens are not guessable anyway, this keeps a client presenting
            // garbage from costing store lookups without limit (the local check above).
            self.throttle.reserve(Scope::Refresh(client)).await?;
        }
        outcome
    }

    async fn rotate(&self, presented: &str) -> Result<TokenPair, AuthError> {
        let Some(presented) = RefreshToken::parse(presented) else {
            return Err(AuthError::InvalidGrant);
        };
        // A hook that refuses issuance when it fails is asked before the token is spent, so
        // that its failure leaves the client's refresh token good for a retry.
        let early = match &self.claims {
            Some(c) if c.has_refusing_hooks() => self.claims_before_refresh(&presented).await?,
            _ => None,
        };
        let now = self.ports.clock.now();
        let next = RefreshToken::from_random(random(&*self.ports.rng));
        // One atomic store call: the spent token, the next one and the session's standing.
        let standing = match self
            .ports
            .store
            .refresh_session(&presented.hash(), &self.new_refresh(&next, now))
            .await?
        {
            Refreshed::Rotated(standing) => standing,
            Refreshed::Reused(sid) => {
                warn!(session.id = %sid, "refresh token reused: session family revoked");
                self.revoked(sid).await;
                return Err(AuthError::InvalidGrant);
            }
            Refreshed::Expired | Refreshed::Unknown => return Err(AuthError::InvalidGrant),
            Refreshed::Blocked => return Err(AuthError::TenantBlocked),
        };
        let Standing {
            session,
            user,
            membership,
            tenant,
        } = *standing;
        // The store refused a blocked tenant (itself or above) already, from the tables; the
        // view may lag by a moment after an unblock and must not end the session then.
        let allowed = user.as_ref().is_some_and(User::can_sign_in)
            && tenant
                .as_ref()
                .is_some_and(|t| t.status == TenantStatus::Active);
        let (Some(membership), Some(user), Some(tenant)) =
            (membership.filter(|_| allowed), user, tenant)
        else {
            // The user lost the right to this session: end it rather than leave it half alive.
            let mut uow = self.ports.store.begin().await?;
            uow.revoke_session(session.id, now).await?;
            uow.commit().await?;
            self.revoked(session.id).await;
            return Err(AuthError::InvalidGrant);
        };
        let claims = match early {
            Some((sid, claims)) if sid == session.id => claims,
            _ => self.custom_claims(&user, &tenant).await?,
        };
        // The rotation is committed: if signing fails now, the client's retry of the spent
        // token counts as reuse and ends the session, which then needs a new sign-in anyway.
        self.issue(&session, membership.roles, next, claims)
    }

    /// The custom claims for the session a refresh token belongs to, read before rotating;
    /// `None` if the token names no session with a user and tenant (rotation then refuses it).
    async fn claims_before_refresh(
        &self,
        presented: &RefreshToken,
    ) -> Result<Option<(SessionId, crate::ResolvedClaims)>, AuthError> {
        let mut uow = self.ports.store.begin().await?;
        let Some(session) = uow.session_of_refresh(&presented.hash()).await? else {
            uow.rollback().await?;
            return Ok(None);
        };
        let user = uow.user_by_id(session.user).await?;
        let tenant = uow.tenant(session.tenant).await?;
        let membership = uow.membership(session.user, session.tenant).await?;
        uow.rollback().await?;
        let (Some(user), Some(tenant), Some(membership)) = (user, tenant, membership) else {
            return Ok(None);
        };
        let custom = self.custom_claims(&user, &tenant).await?;
        // Whether they fit is known now too: a refusal after the rotation would cost the session.
        let grant = Grant {
            user: session.user,
            tenant: session.tenant,
            roles: membership.roles,
            session: session.id,
            amr: session.amr.clone(),
        };
        let mut probe = self.policy.access_claims(
            &grant,
            self.ports.clock.now(),
            uuid::Uuid::from_u128(u128::MAX),
        );
        let required = custom.required.clone();
        self.sign_fitting(&mut probe, custom)?;
        let fitted = crate::ResolvedClaims {
            values: probe.extra,
            required,
        };
        Ok(Some((session.id, fitted)))
    }

    /// Ends the caller's session: its refresh family is revoked and its access tokens stop
    /// authenticating.
    pub async fn logout(&self, principal: &Principal) -> Result<(), AuthError> {
        let mut uow = self.ports.store.begin().await?;
        uow.revoke_session(principal.session, self.ports.clock.now())
            .await?;
        uow.commit().await?;
        self.revoked(principal.session).await;
        info!(user.id = %principal.user, session.id = %principal.session, "signed out");
        Ok(())
    }

    /// Makes this instance honour a revocation it committed at once (others hear the feed).
    async fn revoked(&self, session: SessionId) {
        // A session event never needs the store, so this cannot fail.
        let _ = self
            .validator
            .view()
            .apply(RevocationEvent::SessionRevoked(session))
            .await;
    }

    /// Verifies a bearer access token: signature, time window, issuer, audience, and that its
    /// session, user and tenant are still in good standing (from the revocation view).
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, AuthError> {
        let claims = self
            .validator
            .validate(bearer)
            .await
            .map_err(AuthError::Unauthenticated)?;
        Ok(Principal {
            user: claims.sub,
            tenant: claims.tenant_id,
            session: claims.sid,
            roles: claims.roles.clone(),
            claims: (*claims).clone(),
        })
    }

    /// The signed-in user, their current tenant and roles.
    pub async fn me(&self, principal: &Principal) -> Result<Me, AuthError> {
        let mut uow = self.ports.store.begin().await?;
        let user = uow.user_by_id(principal.user).await?;
        let tenant = uow.tenant(principal.tenant).await?;
        uow.commit().await?;
        match (user, tenant) {
            (Some(user), Some(tenant)) => Ok(Me {
                user,
                tenant,
                roles: principal.roles.clone(),
            }),
            _ => Err(AuthError::Unauthenticated(Unauthenticated::Revoked)),
        }
    }
}

/// A tenant (`None` if unknown) and whether it is blocked or deleted, itself or through an
/// ancestor: one lookup of its lineage.
async fn standing_of(
    uow: &mut dyn UnitOfWork,
    id: TenantId,
) -> Result<(Option<Tenant>, bool), AuthError> {
    let lineage = uow.lineage(id).await?;
    let blocked = lineage.iter().any(|t| t.status != TenantStatus::Active);
    Ok((lineage.into_iter().next(), blocked))
}

/// The membership a sign-in lands in: the requested tenant, or the oldest membership.
async fn pick_membership(
    uow: &mut dyn UnitOfWork,
    user: UserId,
    requested: Option<TenantId>,
) -> Result<Membership, AuthError> {
    match requested {
        Some(tenant) => uow
            .membership(user, tenant)
            .await?
            .ok_or(AuthError::NotAMember),
        None => uow
            .memberships_of(user)
            .await?
            .into_iter()
            .next()
            .ok_or(AuthError::NotAMember),
    }
}
