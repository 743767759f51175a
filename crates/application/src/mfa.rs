//! TOTP enrolment, step-up, disabling, and recovery codes.

use std::sync::Arc;

use iam_domain::mfa::{RECOVERY_CODES, TOTP_SECRET_BYTES, TOTP_SKEW_STEPS, totp_step};
use iam_domain::{
    MfaEnrolment, Password, RecoveryCode, StoredRecoveryCode, Timestamp, TotpSecret, UserId,
};
use iam_ports::{BoxError, RevocationEvent, StoreError, UnitOfWork, random};
use tracing::info;

use crate::{AuthError, Ports, Principal, RevocationView, Scope, Throttle};

/// Why an MFA management use case failed.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error("multi-factor authentication is already enabled")]
    AlreadyEnabled,
    #[error("multi-factor authentication is not enabled")]
    NotEnabled,
    #[error("no enrolment is pending")]
    NoPendingEnrolment,
    #[error("the code is wrong or was used already")]
    InvalidCode,
    /// The step-up proof (current code or password) is missing or wrong.
    #[error("step-up authentication failed")]
    StepUpFailed,
    #[error("too many step-up attempts")]
    Throttled(i64),
    #[error("password hashing is at capacity")]
    Overloaded,
    #[error("service unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl From<StoreError> for MfaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::Unavailable(e),
            StoreError::Conflict(_) | StoreError::Unexpected(_) => Self::Internal(Box::new(e)),
        }
    }
}

impl From<AuthError> for MfaError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Overloaded => Self::Overloaded,
            AuthError::Throttled(secs) => Self::Throttled(secs),
            AuthError::Unavailable(s) => Self::Unavailable(s),
            other => Self::Internal(Box::new(other)),
        }
    }
}

/// Proof of presence for sensitive changes: a current TOTP code or the password.
pub enum StepUp {
    Code(String),
    Password(Password),
}

impl std::fmt::Debug for StepUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Code(_) => "StepUp::Code(<redacted>)",
            Self::Password(_) => "StepUp::Password(<redacted>)",
        })
    }
}

/// A started enrolment: what the authenticator app needs. Shown once; never printed.
pub struct Enrolment {
    pub secret: TotpSecret,
    pub otpauth_uri: String,
    pub qr_svg: String,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrolment(<redacted>)")
    }
}

/// The state of a user's recovery codes (never the codes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySummary {
    pub remaining: usize,
    pub total: usize,
    pub created_at: Option<Timestamp>,
}

/// Second-factor checks shared by sign-in and step-up.
pub(crate) struct Checker<'a> {
    ports: &'a Ports,
}

fn context(user: UserId) -> Vec<u8> {
    format!("totp:{user}").into_bytes()
}

impl<'a> Checker<'a> {
    pub(crate) fn new(ports: &'a Ports) -> Self {
        Self { ports }
    }

    fn secret(&self, enrolment: &MfaEnrolment) -> Result<TotpSecret, AuthError> {
        self.ports
            .sealer
            .open(&enrolment.sealed_secret, &context(enrolment.user))
            .map(TotpSecret::from_bytes)
            .map_err(|e| AuthError::Internal(Box::new(e)))
    }

    /// The time step (±1 around now) whose code `code` is, if any; spends nothing.
    pub(crate) fn totp_step_of(
        &self,
        enrolment: &MfaEnrolment,
        code: &str,
        now: Timestamp,
    ) -> Result<Option<i64>, AuthError> {
        let secret = self.secret(enrolment)?;
        let now_step = totp_step(now);
        // Every candidate step is checked, so timing does not tell which one matched.
        let mut matched = None;
        for step in now_step - TOTP_SKEW_STEPS..=now_step + TOTP_SKEW_STEPS {
            if self.ports.totp.matches(&secret, step, code.trim()) && matched.is_none() {
                matched = Some(step);
            }
        }
        Ok(matched)
    }

    /// Checks a TOTP code (±1 step) and spends its step, inside `uow`; `false` for a wrong or
    /// replayed code. With `pending`, accepts an unconfirmed enrolment too.
    pub(crate) async fn totp_with(
        &self,
        uow: &mut dyn UnitOfWork,
        user: UserId,
        code: &str,
        now: Timestamp,
        pending: bool,
    ) -> Result<bool, AuthError> {
        let Some(enrolment) = uow.mfa(user).await? else {
            return Ok(false);
        };
        if !enrolment.is_active() && !pending {
            return Ok(false);
        }
        match self.totp_step_of(&enrolment, code, now)? {
            Some(step) => Ok(uow.advance_totp_step(user, step).await?),
            None => Ok(false),
        }
    }

    /// Checks the user's password off any unit of work (Argon2 is slow); a user without one
    /// costs a decoy verification.
    pub(crate) async fn password(
        &self,
        user: UserId,
        password: &Password,
    ) -> Result<bool, AuthError> {
        let mut uow = self.ports.store.begin().await?;
        let email = uow.user_by_id(user).await?.map(|u| u.email);
        let hash = match email {
            Some(email) => uow
                .user_by_email(&email)
                .await?
                .and_then(|r| r.password_hash),
            None => None,
        };
        uow.commit().await?;
        let hasher = &self.ports.hasher;
        match hash {
            Some(hash) => Ok(hasher.verify(password, &hash).await?),
            None => {
                hasher.verify(password, hasher.decoy()).await?;
                Ok(false)
            }
        }
    }

    /// Checks an active enrolment's TOTP code.
    pub(crate) async fn totp(
        &self,
        uow: &mut dyn UnitOfWork,
        user: UserId,
        code: &str,
        now: Timestamp,
    ) -> Result<bool, AuthError> {
        self.totp_with(uow, user, code, now, false).await
    }

    /// Checks a recovery code with one Argon2 verification (found by its lookup part, or a decoy
    /// when none matches). Does not spend it: the caller does, atomically.
    pub(crate) async fn recovery(
        &self,
        user: UserId,
        code: &RecoveryCode,
    ) -> Result<bool, AuthError> {
        let mut uow = self.ports.store.begin().await?;
        let stored = uow
            .recovery_codes(user)
            .await?
            .into_iter()
            .find(|c| c.lookup == code.lookup() && c.used_at.is_none());
        uow.commit().await?;
        let presented =
            Password::presented(code.secret()).map_err(|e| AuthError::Internal(Box::new(e)))?;
        let hasher = &self.ports.hasher;
        match stored {
            Some(s) => Ok(hasher.verify(&presented, &s.hash).await?),
            None => {
                hasher.verify(&presented, hasher.decoy()).await?;
                Ok(false)
            }
        }
    }
}

/// Enrolment, confirmation, step-up and recovery-code management for signed-in users.
pub struct MfaService {
    ports: Ports,
    view: Arc<RevocationView>,
    throttle: Arc<Throttle>,
    /// Shown in authenticator apps beside the account.
    issuer: String,
}

impl MfaService {
    /// Builds the service; `issuer` names the product in authenticator apps.
    pub fn new(
        ports: Ports,
        view: Arc<RevocationView>,
        throttle: Arc<Throttle>,
        issuer: String,
    ) -> Self {
        Self {
            ports,
            view,
            throttle,
            issuer,
        }
    }

    /// Starts (or restarts) enrolment with a fresh secret; inactive until confirmed.
    pub async fn enable(&self, principal: &Principal) -> Result<Enrolment, MfaError> {
        let now = self.ports.clock.now();
        let mut uow = self.ports.store.begin().await?;
        if uow
            .mfa(principal.user)
            .await?
            .is_some_and(|e| e.is_active())
        {
            return Err(MfaError::AlreadyEnabled);
        }
        let user = uow
            .user_by_id(principal.user)
            .await?
            .ok_or_else(|| MfaError::Internal("signed-in user is missing".into()))?;
        let secret = TotpSecret::from_bytes(random::<TOTP_SECRET_BYTES>(&*self.ports.rng).to_vec());
        uow.put_mfa(&MfaEnrolment {
            user: user.id,
            sealed_secret: self.ports.sealer.seal(secret.expose(), &context(user.id)),
            created_at: now,
            confirmed_at: None,
            last_used_step: None,
        })
        .await?;
        uow.commit().await?;
        let otpauth_uri =
            self.ports
                .totp
                .provisioning_uri(&secret, &self.issuer, user.email.as_str());
        let qr_svg = self.ports.totp.qr_svg(&otpauth_uri);
        info!(user.id = %user.id, "mfa enrolment started");
        Ok(Enrolment {
            secret,
            otpauth_uri,
            qr_svg,
        })
    }

    /// Confirms a pending enrolment with a current code; returns the recovery codes, shown once.
    pub async fn confirm(
        &self,
        principal: &Principal,
        code: &str,
    ) -> Result<Vec<RecoveryCode>, MfaError> {
        let now = self.ports.clock.now();
        let checker = Checker::new(&self.ports);
        // A cheap check first, so a wrong code costs no Argon2 work.
        let mut uow = self.ports.store.begin().await?;
        let pending = match uow.mfa(principal.user).await? {
            Some(e) if e.is_active() => return Err(MfaError::AlreadyEnabled),
            Some(e) => e,
            None => return Err(MfaError::NoPendingEnrolment),
        };
        uow.commit().await?;
        if checker.totp_step_of(&pending, code, now)?.is_none() {
            return Err(MfaError::InvalidCode);
        }
        let (codes, stored) = self.new_codes(now).await?;
        let mut uow = self.ports.store.begin().await?;
        if !checker
            .totp_with(&mut *uow, principal.user, code, now, true)
            .await?
        {
            return Err(MfaError::InvalidCode);
        }
        let enrolment = uow
            .mfa(principal.user)
            .await?
            .ok_or(MfaError::NoPendingEnrolment)?;
        if enrolment.sealed_secret != pending.sealed_secret {
            // A concurrent `enable` replaced the secret the code was checked against.
            return Err(MfaError::InvalidCode);
        }
        uow.put_mfa(&MfaEnrolment {
            confirmed_at: Some(now),
            ..enrolment
        })
        .await?;
        uow.replace_recovery_codes(principal.user, &stored).await?;
        uow.commit().await?;
        info!(user.id = %principal.user, "mfa enabled");
        Ok(codes)
    }

    /// Ten fresh recovery codes and their stored form (hashed off any unit of work).
    async fn new_codes(
        &self,
        now: Timestamp,
    ) -> Result<(Vec<RecoveryCode>, Vec<StoredRecoveryCode>), MfaError> {
        let mut codes: Vec<RecoveryCode> = Vec::with_capacity(RECOVERY_CODES);
        while codes.len() < RECOVERY_CODES {
            let code = RecoveryCode::from_random(random(&*self.ports.rng));
            // Lookup parts must be unique within a set.
            if !codes.iter().any(|c| c.lookup() == code.lookup()) {
                codes.push(code);
            }
        }
        let mut stored = Vec::with_capacity(codes.len());
        for code in &codes {
            let secret =
                Password::presented(code.secret()).map_err(|e| MfaError::Internal(Box::new(e)))?;
            stored.push(StoredRecoveryCode {
                lookup: code.lookup().to_owned(),
                hash: self
                    .ports
                    .hasher
                    .hash(&secret)
                    .await
                    .map_err(AuthError::from)?,
                created_at: now,
                used_at: None,
            });
        }
        Ok((codes, stored))
    }

    /// Checks a step-up proof for an active enrolment and commits the spent code step.
    /// Passwords are checked off any unit of work.
    async fn step_up(&self, user: UserId, proof: &StepUp, now: Timestamp) -> Result<(), MfaError> {
        // Whoever holds a stolen access token must not get unlimited guesses at the code or the
        // password: every proof counts, and a right one clears the count.
        self.throttle
            .reserve(Scope::StepUp(user))
            .await
            .map_err(|e| MfaError::from(AuthError::from(e)))?;
        let checker = Checker::new(&self.ports);
        let ok = match proof {
            StepUp::Password(password) => checker.password(user, password).await?,
            StepUp::Code(code) => {
                let mut uow = self.ports.store.begin().await?;
                let ok = checker.totp(&mut *uow, user, code, now).await?;
                uow.commit().await?;
                ok
            }
        };
        if ok {
            Ok(())
        } else {
            Err(MfaError::StepUpFailed)
        }
    }

    async fn require_active(&self, user: UserId) -> Result<(), MfaError> {
        let mut uow = self.ports.store.begin().await?;
        let active = uow.mfa(user).await?.is_some_and(|e| e.is_active());
        uow.commit().await?;
        if active {
            Ok(())
        } else {
            Err(MfaError::NotEnabled)
        }
    }

    /// Turns MFA off after a step-up, and ends every other session of the user.
    pub async fn disable(&self, principal: &Principal, proof: StepUp) -> Result<(), MfaError> {
        let now = self.ports.clock.now();
        self.require_active(principal.user).await?;
        self.step_up(principal.user, &proof, now).await?;
        let mut uow = self.ports.store.begin().await?;
        uow.delete_mfa(principal.user).await?;
        let ended = uow
            .revoke_user_sessions(principal.user, Some(principal.session), now)
            .await?;
        uow.commit().await?;
        for session in ended {
            // Session events never need the store.
            let _ = self
                .view
                .apply(RevocationEvent::SessionRevoked(session))
                .await;
        }
        info!(user.id = %principal.user, "mfa disabled; other sessions ended");
        Ok(())
    }

    /// How many recovery codes remain, and when the set was made.
    pub async fn recovery_summary(
        &self,
        principal: &Principal,
    ) -> Result<RecoverySummary, MfaError> {
        let mut uow = self.ports.store.begin().await?;
        let codes = uow.recovery_codes(principal.user).await?;
        uow.commit().await?;
        Ok(RecoverySummary {
            remaining: codes.iter().filter(|c| c.used_at.is_none()).count(),
            total: codes.len(),
            created_at: codes.iter().map(|c| c.created_at).min(),
        })
    }

    /// Replaces the recovery codes after a step-up; the old set stops working at once.
    pub async fn regenerate(
        &self,
        principal: &Principal,
        proof: StepUp,
    ) -> Result<Vec<RecoveryCode>, MfaError> {
        let now = self.ports.clock.now();
        self.require_active(principal.user).await?;
        self.step_up(principal.user, &proof, now).await?;
        let (codes, stored) = self.new_codes(now).await?;
        let mut uow = self.ports.store.begin().await?;
        uow.replace_recovery_codes(principal.user, &stored).await?;
        uow.commit().await?;
        info!(user.id = %principal.user, "recovery codes regenerated");
        Ok(codes)
    }
}
