//! A wired application on the in-memory store, with a frozen clock.

use std::sync::Arc;

use chrono::{Duration, TimeZone};
use iam_adapters_crypto::{
    AesGcmSealer, Argon2Config, Argon2Hasher, EcdsaSigner, HasherStats, ManualClock, OsRandom,
    RfcTotp, ZxcvbnScreen,
};
use iam_adapters_memory::{MemoryKeyStore, MemoryStore, MemoryThrottleStore};
use iam_application::{
    AuthService, KeyService, MfaService, Ports, RbacService, RegisterCommand, RevocationView,
    SignIn, TenantService, Throttle, ThrottlePolicy, TokenValidator, UserService,
};
use iam_domain::{DisplayName, Email, Password, TokenPolicy};

pub const PASSWORD: &str = "correct horse battery staple";

/// The address test sign-ins come from.
pub const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Cheap parameters: these tests are about flows, not cost.
const FAST: Argon2Config = Argon2Config {
    memory_kib: 64,
    iterations: 1,
    parallelism: 1,
};

pub struct Harness {
    pub auth: AuthService,
    pub mfa: MfaService,
    pub users: UserService,
    pub rbac: RbacService,
    pub tenants: TenantService,
    pub view: Arc<RevocationView>,
    pub keys: Arc<KeyService>,
    pub store: MemoryStore,
    pub key_store: Arc<MemoryKeyStore>,
    pub clock: Arc<ManualClock>,
    pub stats: Arc<HasherStats>,
    pub hasher: Arc<Argon2Hasher>,
}

pub fn policy() -> TokenPolicy {
    TokenPolicy {
        issuer: "https://iam.test".into(),
        audience: "platform".into(),
        access_ttl: Duration::minutes(15),
        refresh_ttl: Duration::days(7),
        leeway: Duration::seconds(30),
    }
}

pub fn start() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 30, 12, 0, 0)
        .single()
        .expect("valid time")
}

impl Harness {
    pub async fn new() -> Self {
        Self::sharing_keys(
            Arc::new(MemoryKeyStore::new()),
            Arc::new(ManualClock::new(start())),
        )
        .await
    }

    /// A second "instance" over the same key store and clock, as two servers on one database.
    pub async fn sharing_keys(key_store: Arc<MemoryKeyStore>, clock: Arc<ManualClock>) -> Self {
        let hasher = Arc::new(Argon2Hasher::new(FAST, 2, 8).expect("hasher"));
        let stats = hasher.stats();
        let signer = Arc::new(EcdsaSigner::new());
        let keys = Arc::new(KeyService::new(
            key_store.clone(),
            Arc::new(AesGcmSealer::from_bytes(&[42; 32]).expect("sealer")),
            signer.clone(),
            clock.clone(),
            Arc::new(OsRandom),
            policy().access_ttl + policy().leeway,
        ));
        keys.load_or_create().await.expect("keys");
        let store = MemoryStore::new();
        let view = Arc::new(RevocationView::new(
            Arc::new(store.clone()),
            clock.clone(),
            policy().access_ttl + policy().leeway,
        ));
        let validator = Arc::new(TokenValidator::new(
            signer.clone(),
            keys.clone(),
            policy(),
            clock.clone(),
            view.clone(),
            1000,
        ));
        let ports = Ports {
            store: Arc::new(store.clone()),
            hasher: hasher.clone(),
            signer: signer.clone(),
            clock: clock.clone(),
            rng: Arc::new(OsRandom),
            totp: Arc::new(RfcTotp),
            screen: Arc::new(ZxcvbnScreen),
            sealer: Arc::new(AesGcmSealer::from_bytes(&[7; 32]).expect("sealer")),
        };
        let throttle = Arc::new(Throttle::new(
            Arc::new(MemoryThrottleStore::new()),
            clock.clone(),
            ThrottlePolicy::default(),
        ));
        let auth = AuthService::new(
            ports.clone(),
            policy(),
            validator,
            throttle.clone(),
            "IAM Test".into(),
        );
        let mfa = MfaService::new(
            ports.clone(),
            view.clone(),
            throttle.clone(),
            "IAM Test".into(),
        );
        let users = UserService::new(ports.clone(), view.clone(), "IAM Test".into());
        let rbac = RbacService::new(ports.clone(), view.clone());
        let tenants = TenantService::new(ports, view.clone());
        Self {
            auth,
            mfa,
            users,
            rbac,
            tenants,
            view,
            keys,
            store,
            key_store,
            clock,
            stats,
            hasher,
        }
    }

    pub async fn register(&self, email: &str) {
        self.auth
            .register(
                RegisterCommand {
                    email: Email::parse(email).expect("email"),
                    password: Password::new(PASSWORD).expect("password"),
                    name: DisplayName::parse("Ada Lovelace").expect("name"),
                    tenant_name: None,
                },
                CLIENT,
            )
            .await
            .expect("register");
    }

    pub async fn login(
        &self,
        email: &str,
        password: &str,
    ) -> Result<iam_application::TokenPair, iam_application::AuthError> {
        self.sign_in(email, password).await.map(tokens)
    }

    /// The first factor's outcome, tokens or a challenge.
    pub async fn sign_in(
        &self,
        email: &str,
        password: &str,
    ) -> Result<SignIn, iam_application::AuthError> {
        self.auth
            .login(
                &Email::parse(email).expect("email"),
                &Password::presented(password).expect("password"),
                None,
                CLIENT,
            )
            .await
    }
}

/// The tokens of a sign-in that needed no second factor.
pub fn tokens(outcome: SignIn) -> iam_application::TokenPair {
    match outcome {
        SignIn::Tokens(pair) => pair,
        SignIn::MfaRequired { .. } => panic!("unexpected second-factor challenge"),
        SignIn::TenantSelection { .. } => panic!("unexpected tenant selection"),
    }
}
