//! Typed configuration: defaults, then an optional TOML file, then `IAM_*` environment variables
//! (nested keys joined with `__`, e.g. `IAM_DATABASE__URL`), validated before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::Deserialize;

/// Everything the service can be told.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub grpc: GrpcSettings,
    pub validation: ValidationSettings,
    pub mfa: MfaSettings,
    pub throttle: ThrottleSettings,
    pub mail: MailSettings,
    pub flows: FlowSettings,
    /// The product's name: new passwords may not be built from it.
    pub product_name: String,
    /// The externally visible base URL; the default token issuer.
    pub public_base_url: String,
    pub tokens: TokenSettings,
    /// PostgreSQL; without it the service runs on the in-memory store.
    pub database: Option<DatabaseSettings>,
    /// Base64 of 32 random bytes; seals signing keys and other secrets at rest. Required with a
    /// database. Generate one with `openssl rand -base64 32`.
    pub master_key: Option<SecretString>,
    pub password_hashing: HashSettings,
    pub keys: KeySettings,
    pub log: LogSettings,
    /// Other modules' permissions, registered into the catalogue at start-up.
    pub permissions: Vec<PermissionSetting>,
    pub claims: ClaimSettings,
}

/// Size limits on custom claims.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimSettings {
    /// Largest serialised value of one claim.
    pub max_claim_bytes: usize,
    /// Largest signed access token, custom claims included.
    pub max_token_bytes: usize,
}

impl Default for ClaimSettings {
    fn default() -> Self {
        let limits = iam_domain::claims::ClaimLimits::default();
        Self {
            max_claim_bytes: limits.per_claim_bytes,
            max_token_bytes: limits.per_token_bytes,
        }
    }
}

/// A module's permission named in configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionSetting {
    /// Namespaced, outside `iam.` (e.g. `billing.invoices.read`).
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// The REST listener.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    /// Proxies (addresses or CIDRs) whose `X-Forwarded-For` names the client; applies to gRPC's
    /// `x-forwarded-for` too. Everyone else's is ignored.
    pub trusted_proxies: Vec<String>,
}

/// The gRPC listener (API gateway and data layer).
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSettings {
    pub addr: SocketAddr,
    /// Credentials that IamService callers present as `authorization: Bearer …`; without any,
    /// IamService refuses every call.
    pub service_tokens: Vec<SecretString>,
    /// Mutual TLS; plaintext without it (for a listener on a private network or loopback).
    pub tls: Option<TlsSettings>,
}

/// Server certificate and, for mutual TLS, the CA that client certificates must chain to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, every client must present a certificate signed by this CA.
    pub client_ca_file: Option<PathBuf>,
}

/// Outgoing mail.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// The sender, e.g. `IAM <no-reply@example.com>`.
    pub from: String,
    /// SMTP relay; without it, messages are written to `directory` (development).
    pub smtp: Option<SmtpSettings>,
    /// Where the development mailer writes `.eml` files.
    pub directory: PathBuf,
    /// How often the outbox worker looks for due messages.
    pub poll_interval_ms: u64,
    /// The first retry's delay after a failed delivery; each further one doubles (up to 1 h).
    pub retry_base_ms: u64,
}

/// An SMTP relay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    /// `starttls` (default), `tls`, or `none` (loopback relays only).
    #[serde(default = "default_security")]
    pub security: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    #[serde(default = "default_smtp_timeout")]
    pub timeout_ms: u64,
}

fn default_security() -> String {
    "starttls".into()
}

fn default_smtp_timeout() -> u64 {
    10_000
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            from: "IAM <no-reply@localhost>".into(),
            smtp: None,
            directory: PathBuf::from("mail"),
            poll_interval_ms: 1000,
            retry_base_ms: 5000,
        }
    }
}

/// Emailed flows.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowSettings {
    pub verify_ttl_secs: i64,
    pub reset_ttl_secs: i64,
    pub invite_ttl_secs: i64,
    /// Unverified addresses may not sign in.
    pub require_verified_email: bool,
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            verify_ttl_secs: 24 * 3600,
            reset_ttl_secs: 3600,
            invite_ttl_secs: 7 * 24 * 3600,
            require_verified_email: false,
        }
    }
}

/// One throttling rule: failures tolerated per window.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSettings {
    pub threshold: u32,
    pub window_secs: i64,
}

/// Brute-force throttling.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleSettings {
    /// Failed sign-ins for one account from one address.
    pub login_pair: RuleSettings,
    /// Failed sign-ins from one address.
    pub login_address: RuleSettings,
    /// Failed sign-ins for one account from all addresses before a security event is logged.
    pub account_alert: RuleSettings,
    /// Wrong second factors from one address.
    pub second_factor: RuleSettings,
    /// Rejected refresh tokens from one address.
    pub refresh: RuleSettings,
    /// Registrations from one address.
    pub register: RuleSettings,
    /// Step-up proofs by one signed-in user.
    pub step_up: RuleSettings,
    /// Second-factor attempts for one user from anywhere.
    pub second_factor_user: RuleSettings,
    /// Emailed-link requests for one address.
    pub link_email: RuleSettings,
    /// Emailed-link requests from one client address.
    pub link_address: RuleSettings,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        let d = iam_application::ThrottlePolicy::default();
        let r = |rule: iam_domain::throttle::Rule| RuleSettings {
            threshold: rule.threshold,
            window_secs: rule.window.num_seconds(),
        };
        Self {
            login_pair: r(d.login_pair),
            login_address: r(d.login_address),
            account_alert: r(d.account_alert),
            second_factor: r(d.second_factor),
            refresh: r(d.refresh),
            register: r(d.register),
            step_up: r(d.step_up),
            second_factor_user: r(d.second_factor_user),
            link_email: r(d.link_email),
            link_address: r(d.link_address),
        }
    }
}

impl ThrottleSettings {
    /// The policy these settings describe.
    pub fn policy(&self) -> iam_application::ThrottlePolicy {
        let rule = |r: RuleSettings| iam_domain::throttle::Rule {
            threshold: r.threshold,
            window: chrono::Duration::seconds(r.window_secs),
        };
        iam_application::ThrottlePolicy {
            login_pair: rule(self.login_pair),
            login_address: rule(self.login_address),
            account_alert: rule(self.account_alert),
            second_factor: rule(self.second_factor),
            refresh: rule(self.refresh),
            register: rule(self.register),
            step_up: rule(self.step_up),
            second_factor_user: rule(self.second_factor_user),
            link_email: rule(self.link_email),
            link_address: rule(self.link_address),
        }
    }
}

/// Multi-factor authentication.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfaSettings {
    /// The product name authenticator apps show beside the account.
    pub issuer: String,
}

impl Default for MfaSettings {
    fn default() -> Self {
        Self {
            issuer: "IAM".into(),
        }
    }
}

/// Access-token validation.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationSettings {
    /// Verified tokens remembered, so repeated validations skip the ECDSA verification.
    pub cache_capacity: u64,
}

/// Token lifetimes and identity.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    /// `iss` of issued tokens; defaults to `public_base_url`.
    pub issuer: Option<String>,
    /// `aud` of issued tokens.
    pub audience: String,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    /// Clock skew tolerated when checking `exp`, `nbf` and `iat`.
    pub leeway_secs: i64,
}

/// The PostgreSQL store.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: usize,
    /// How long a request waits for a pooled connection before answering 503.
    pub acquire_timeout_ms: u64,
    /// Apply pending migrations at start-up (otherwise run `iam migrate`).
    pub migrate_on_start: bool,
}

/// Argon2id parameters and the hashing pool. Only tests should lower the cost parameters.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; defaults to the number of cores.
    pub workers: Option<usize>,
    /// Hashes allowed to wait for a worker; beyond this, sign-ins answer 503 at once.
    pub queue: usize,
}

/// Signing keys.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeySettings {
    /// A PKCS#8 PEM P-256 private key to sign with (in-memory store only); otherwise a key is
    /// generated (and, with a database, persisted sealed).
    pub pem_file: Option<PathBuf>,
    /// How often each instance re-reads the key ring from the database.
    pub reload_interval_secs: u64,
}

/// Logging.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info,iam=debug`; `RUST_LOG` overrides it.
    pub filter: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            grpc: GrpcSettings::default(),
            validation: ValidationSettings::default(),
            mfa: MfaSettings::default(),
            throttle: ThrottleSettings::default(),
            mail: MailSettings::default(),
            flows: FlowSettings::default(),
            product_name: "IAM".into(),
            public_base_url: "http://localhost:8080".into(),
            tokens: TokenSettings::default(),
            database: None,
            master_key: None,
            password_hashing: HashSettings::default(),
            keys: KeySettings::default(),
            log: LogSettings::default(),
            permissions: Vec::new(),
            claims: ClaimSettings::default(),
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            service_tokens: Vec::new(),
            tls: None,
        }
    }
}

impl Default for ValidationSettings {
    fn default() -> Self {
        Self {
            cache_capacity: 100_000,
        }
    }
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: "platform".into(),
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 7 * 24 * 3600,
            leeway_secs: 30,
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from(String::new()),
            max_connections: 16,
            acquire_timeout_ms: 3000,
            migrate_on_start: false,
        }
    }
}

impl Default for HashSettings {
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 1,
            parallelism: 4,
            workers: None,
            queue: 64,
        }
    }
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            pem_file: None,
            reload_interval_secs: 60,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".into(),
        }
    }
}

/// A configuration mistake, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration could not be read: {0}")]
    Read(#[from] Box<figment::Error>),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key,
        problem: problem.into(),
    }
}

impl Settings {
    /// Loads defaults, then `file` if given, then the environment; then validates.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                return Err(invalid(
                    "--config",
                    format!("file {} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed("IAM_")
            .split("__")
            // Variables for the tooling around the service, not for the service itself.
            .filter(|k| {
                let k = k.as_str().to_ascii_lowercase();
                k != "config" && !k.starts_with("test_")
            });
        let settings: Self = figment.merge(env).extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        use secrecy::ExposeSecret;
        let t = &self.tokens;
        if !(60..=24 * 3600).contains(&t.access_ttl_secs) {
            return Err(invalid(
                "tokens.access_ttl_secs",
                "must be between 60 and 86400",
            ));
        }
        if t.refresh_ttl_secs <= t.access_ttl_secs {
            return Err(invalid(
                "tokens.refresh_ttl_secs",
                "must exceed tokens.access_ttl_secs",
            ));
        }
        if !(0..=300).contains(&t.leeway_secs) {
            return Err(invalid("tokens.leeway_secs", "must be between 0 and 300"));
        }
        if t.audience.trim().is_empty() {
            return Err(invalid("tokens.audience", "must not be empty"));
        }
        if !(self.public_base_url.starts_with("http://")
            || self.public_base_url.starts_with("https://"))
        {
            return Err(invalid(
                "public_base_url",
                "must be an http:// or https:// URL",
            ));
        }
        let h = &self.password_hashing;
        if h.parallelism == 0 || h.iterations == 0 || h.memory_kib < 8 * h.parallelism {
            return Err(invalid(
                "password_hashing",
                "needs iterations ≥ 1, parallelism ≥ 1 and memory_kib ≥ 8 × parallelism",
            ));
        }
        if h.workers == Some(0) {
            return Err(invalid("password_hashing.workers", "must be at least 1"));
        }
        if !(64..=65_536).contains(&self.claims.max_claim_bytes) {
            return Err(invalid(
                "claims.max_claim_bytes",
                "must be between 64 and 65536",
            ));
        }
        if !(1024..=65_536).contains(&self.claims.max_token_bytes)
            || self.claims.max_token_bytes < self.claims.max_claim_bytes
        {
            return Err(invalid(
                "claims.max_token_bytes",
                "must be between 1024 and 65536, and at least claims.max_claim_bytes",
            ));
        }
        for p in &self.permissions {
            iam_domain::Permission::parse_external(&p.name)
                .map_err(|e| invalid("permissions", format!("`{}`: {e}", p.name)))?;
            iam_domain::rbac::parse_description(&p.description)
                .map_err(|e| invalid("permissions", format!("`{}`: {e}", p.name)))?;
        }
        if let Some(db) = &self.database {
            if db.url.expose_secret().is_empty() {
                return Err(invalid(
                    "database.url",
                    "must be set when [database] is configured",
                ));
            }
            if db.max_connections == 0 {
                return Err(invalid("database.max_connections", "must be at least 1"));
            }
            if self.master_key.is_none() {
                return Err(invalid(
                    "master_key",
                    "is required with a database, to seal signing keys at rest (IAM_MASTER_KEY)",
                ));
            }
            if self.keys.pem_file.is_some() {
                return Err(invalid(
                    "keys.pem_file",
                    "is for the in-memory store; with a database, keys live there (iam keys rotate)",
                ));
            }
        }
        if self
            .grpc
            .service_tokens
            .iter()
            .any(|t| t.expose_secret().len() < 32)
        {
            return Err(invalid(
                "grpc.service_tokens",
                "each credential needs at least 32 characters (e.g. `openssl rand -base64 32`)",
            ));
        }
        if self.grpc.addr == self.http.addr {
            return Err(invalid("grpc.addr", "must differ from http.addr"));
        }
        if self.mfa.issuer.trim().is_empty() || self.mfa.issuer.contains(':') {
            return Err(invalid(
                "mfa.issuer",
                "must be non-empty and contain no ':'",
            ));
        }
        if let Err(problem) = iam_application::TrustedProxies::parse(&self.http.trusted_proxies) {
            return Err(invalid("http.trusted_proxies", problem));
        }
        let t = &self.throttle;
        for (key, rule) in [
            ("throttle.login_pair", t.login_pair),
            ("throttle.login_address", t.login_address),
            ("throttle.account_alert", t.account_alert),
            ("throttle.second_factor", t.second_factor),
            ("throttle.refresh", t.refresh),
            ("throttle.register", t.register),
            ("throttle.step_up", t.step_up),
            ("throttle.second_factor_user", t.second_factor_user),
            ("throttle.link_email", t.link_email),
            ("throttle.link_address", t.link_address),
        ] {
            if rule.threshold == 0 || rule.window_secs <= 0 {
                return Err(invalid(key, "threshold and window_secs must be positive"));
            }
        }
        if let Some(smtp) = &self.mail.smtp
            && !matches!(smtp.security.as_str(), "starttls" | "tls" | "none")
        {
            return Err(invalid(
                "mail.smtp.security",
                "must be starttls, tls or none",
            ));
        }
        let f = &self.flows;
        if f.verify_ttl_secs <= 0 || f.reset_ttl_secs <= 0 || f.invite_ttl_secs <= 0 {
            return Err(invalid("flows", "link lifetimes must be positive"));
        }
        if self.mail.poll_interval_ms == 0 || self.mail.retry_base_ms == 0 {
            return Err(invalid(
                "mail",
                "poll_interval_ms and retry_base_ms must be positive",
            ));
        }
        if self.keys.reload_interval_secs == 0 {
            return Err(invalid("keys.reload_interval_secs", "must be at least 1"));
        }
        Ok(())
    }

    /// The token issuer in force.
    pub fn issuer(&self) -> &str {
        self.tokens
            .issuer
            .as_deref()
            .unwrap_or(&self.public_base_url)
    }

    /// Whether the Argon2 parameters are below the service's standard.
    pub fn weak_hashing(&self) -> bool {
        let h = &self.password_hashing;
        h.memory_kib < 64 * 1024 || h.iterations < 1 || h.parallelism < 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_production_grade() {
        let s = Settings::default();
        s.validate().expect("defaults validate");
        assert!(!s.weak_hashing());
        assert_eq!(s.tokens.access_ttl_secs, 900);
        assert_eq!(s.tokens.refresh_ttl_secs, 604_800);
        assert_eq!(s.issuer(), "http://localhost:8080");
    }

    #[test]
    fn errors_name_the_key() {
        let s = Settings {
            database: Some(DatabaseSettings {
                url: SecretString::from("postgres://x".to_owned()),
                ..DatabaseSettings::default()
            }),
            ..Settings::default()
        };
        let e = s.validate().expect_err("master key missing").to_string();
        assert!(e.contains("`master_key`"), "{e}");

        let mut s = Settings::default();
        s.tokens.access_ttl_secs = 5;
        assert!(
            s.validate()
                .expect_err("ttl")
                .to_string()
                .contains("tokens.access_ttl_secs")
        );
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment's Jail API returns its own error type"
    )]
    fn file_and_environment_layers() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "iam.toml",
                "public_base_url = \"https://id.example.com\"\n[tokens]\naudience = \"api\"\n",
            )?;
            jail.set_env("IAM_TOKENS__ACCESS_TTL_SECS", "600");
            jail.set_env("IAM_TEST_DATABASE_URL", "ignored");
            let s = Settings::load(Some(Path::new("iam.toml"))).expect("loads");
            assert_eq!(s.issuer(), "https://id.example.com");
            assert_eq!(s.tokens.audience, "api");
            assert_eq!(s.tokens.access_ttl_secs, 600);
            jail.set_env("IAM_TOKENS__NOPE", "1");
            let e = Settings::load(None).expect_err("unknown key").to_string();
            assert!(e.contains("nope"), "{e}");
            Ok(())
        });
    }
}
