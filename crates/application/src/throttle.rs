//! Brute-force throttling that slows the attacker, never the victim: failures are counted per
//! (account, client address) and per client address, never per account alone, so failures from
//! other addresses cannot stop the rightful user from an address of their own.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Duration;
use iam_domain::Email;
use iam_domain::throttle::Rule;
use iam_ports::{Clock, StoreError, ThrottleStore};
use sha2::{Digest as _, Sha256};
use tracing::warn;

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failed sign-ins for one account from one address.
    pub login_pair: Rule,
    /// Failed sign-ins from one address, whatever the account.
    pub login_address: Rule,
    /// Failed sign-ins for one account from all addresses: past it, a security event is logged
    /// (never a lockout).
    pub account_alert: Rule,
    /// Wrong second factors (TOTP, recovery codes, dead challenges) from one address.
    pub second_factor: Rule,
    /// Rejected refresh tokens from one address.
    pub refresh: Rule,
    /// Registrations from one address (each costs an Argon2 hash, success or not).
    pub register: Rule,
    /// Step-up proofs (code or password) by one signed-in user, right or wrong.
    pub step_up: Rule,
    /// Second-factor attempts for one user, from anywhere: only someone who passed the first
    /// factor can spend these, so this caps TOTP guessing by a password holder.
    pub second_factor_user: Rule,
    /// Emailed-link requests (verification, reset, invitation) for one address.
    pub link_email: Rule,
    /// Emailed-link requests from one client address.
    pub link_address: Rule,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        let rule = |threshold, minutes| Rule {
            threshold,
            window: Duration::minutes(minutes),
        };
        Self {
            login_pair: rule(5, 15),
            login_address: rule(50, 15),
            account_alert: rule(100, 60),
            second_factor: rule(10, 15),
            refresh: rule(30, 15),
            register: rule(20, 60),
            step_up: rule(10, 15),
            second_factor_user: rule(10, 15),
            link_email: rule(3, 60),
            link_address: rule(20, 60),
        }
    }
}

/// What a counter counts.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    LoginPair(&'a Email, IpAddr),
    LoginAddress(IpAddr),
    Account(&'a Email),
    SecondFactor(IpAddr),
    Refresh(IpAddr),
    Register(IpAddr),
    StepUp(iam_domain::UserId),
    SecondFactorUser(iam_domain::UserId),
    LinkEmail(&'a Email),
    LinkAddress(IpAddr),
}

/// The unit an address is counted in: an IPv4 address, or an IPv6 /64 (one host commonly holds
/// a whole /64, so counting single IPv6 addresses would count nothing).
fn network(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Why an attempt may not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    #[error("too many failed attempts; retry in {0} s")]
    Throttled(i64),
    #[error("throttle store failed")]
    Store(#[from] StoreError),
}

/// Counts failures and refuses attempts past the policy, before any expensive work.
pub struct Throttle {
    store: Arc<dyn ThrottleStore>,
    clock: Arc<dyn Clock>,
    policy: ThrottlePolicy,
    /// Keys this instance found throttled, and until when: a check that costs no I/O, for hot
    /// paths that only count failures.
    local: std::sync::Mutex<std::collections::HashMap<String, iam_domain::Timestamp>>,
}

impl Throttle {
    /// Builds the throttle.
    pub fn new(
        store: Arc<dyn ThrottleStore>,
        clock: Arc<dyn Clock>,
        policy: ThrottlePolicy,
    ) -> Self {
        Self {
            store,
            clock,
            policy,
            local: std::sync::Mutex::default(),
        }
    }

    fn rule(&self, scope: Scope<'_>) -> Rule {
        match scope {
            Scope::LoginPair(..) => self.policy.login_pair,
            Scope::LoginAddress(_) => self.policy.login_address,
            Scope::Account(_) => self.policy.account_alert,
            Scope::SecondFactor(_) => self.policy.second_factor,
            Scope::Refresh(_) => self.policy.refresh,
            Scope::Register(_) => self.policy.register,
            Scope::StepUp(_) => self.policy.step_up,
            Scope::SecondFactorUser(_) => self.policy.second_factor_user,
            Scope::LinkEmail(_) => self.policy.link_email,
            Scope::LinkAddress(_) => self.policy.link_address,
        }
    }

    /// Hashed, so the store holds no emails or addresses of people who never had an account.
    fn key(scope: Scope<'_>) -> String {
        let raw = match scope {
            Scope::LoginPair(email, ip) => format!("login-pair/{email}/{}", network(ip)),
            Scope::LoginAddress(ip) => format!("login-address/{}", network(ip)),
            Scope::Account(email) => format!("account/{email}"),
            Scope::SecondFactor(ip) => format!("second-factor/{}", network(ip)),
            Scope::Refresh(ip) => format!("refresh/{}", network(ip)),
            Scope::Register(ip) => format!("register/{}", network(ip)),
            Scope::StepUp(user) => format!("step-up/{user}"),
            Scope::SecondFactorUser(user) => format!("second-factor-user/{user}"),
            Scope::LinkEmail(email) => format!("link-email/{email}"),
            Scope::LinkAddress(ip) => format!("link-address/{}", network(ip)),
        };
        // Runs on every refresh (the local check): one allocation, not one per byte.
        let mut hex = String::with_capacity(64);
        for b in Sha256::digest(raw.as_bytes()) {
            use std::fmt::Write as _;
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }

    /// Refuses the attempt if any scope is over its limit, with the longest wait. A refused
    /// attempt counts as a failure too (a counter write, no other work), so hammering while
    /// throttled makes the wait grow instead of passing unnoticed.
    pub async fn check(&self, scopes: &[Scope<'_>]) -> Result<(), ThrottleError> {
        let keys: Vec<String> = scopes.iter().map(|s| Self::key(*s)).collect();
        let counters = self.store.counters(&keys).await?;
        let now = self.clock.now();
        let over = scopes
            .iter()
            .zip(counters)
            .any(|(scope, counter)| self.rule(*scope).wait(counter, now).is_some());
        if !over {
            return Ok(());
        }
        let mut wait = chrono::Duration::zero();
        for scope in scopes {
            let rule = self.rule(*scope);
            let counter = self
                .store
                .add_failure(&Self::key(*scope), now, rule.leak_per_sec())
                .await?;
            if let Some(w) = rule.wait(Some(counter), now) {
                wait = wait.max(w);
            }
        }
        Err(ThrottleError::Throttled(wait.num_seconds().max(1)))
    }

    /// Counts this attempt in `scope` before it is checked, atomically, and refuses it if that
    /// takes the scope past its limit. Unlike check-then-count, concurrent attempts cannot all
    /// slip through before the first failure is recorded. Release with [`Throttle::succeeded`].
    pub async fn reserve(&self, scope: Scope<'_>) -> Result<(), ThrottleError> {
        let now = self.clock.now();
        let rule = self.rule(scope);
        let counter = self
            .store
            .add_failure(&Self::key(scope), now, rule.leak_per_sec())
            .await?;
        if counter.score <= f64::from(rule.threshold) + 1e-9 {
            return Ok(());
        }
        let wait = rule
            .wait(Some(counter), now)
            .unwrap_or(chrono::Duration::seconds(1));
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: expired entries go whenever the map grows large.
        if local.len() > 100_000 {
            local.retain(|_, until| *until > now);
        }
        local.insert(Self::key(scope), now + wait);
        Err(ThrottleError::Throttled(wait.num_seconds().max(1)))
    }

    /// Refuses at once, without I/O, a scope this instance recently found throttled.
    pub fn check_local(&self, scope: Scope<'_>) -> Result<(), ThrottleError> {
        let now = self.clock.now();
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        match local.get(&Self::key(scope)) {
            Some(until) if *until > now => Err(ThrottleError::Throttled(
                (*until - now).num_seconds().max(1),
            )),
            _ => Ok(()),
        }
    }

    /// Counts a failure in every scope. The account scope only ever raises an alert.
    pub async fn failed(&self, scopes: &[Scope<'_>]) -> Result<(), ThrottleError> {
        let now = self.clock.now();
        for scope in scopes {
            let rule = self.rule(*scope);
            let counter = self
                .store
                .add_failure(&Self::key(*scope), now, rule.leak_per_sec())
                .await?;
            let threshold = f64::from(rule.threshold);
            if let Scope::Account(email) = scope
                && counter.score >= threshold
                && counter.score - 1.0 < threshold
            {
                warn!(
                    target: "iam::security",
                    security_event = "sign_in_failures_across_addresses",
                    account = %Self::key(Scope::Account(email)),
                    failures = counter.score.round(),
                    "many failed sign-ins for one account from many addresses; not locking it"
                );
            }
        }
        Ok(())
    }

    /// Clears a scope after a success (the pair's own failures no longer count against it).
    pub async fn succeeded(&self, scope: Scope<'_>) -> Result<(), ThrottleError> {
        Ok(self.store.forget(&Self::key(scope)).await?)
    }
}
