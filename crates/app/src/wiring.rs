//! Start-up: adapters chosen by configuration, services wired over them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use iam_adapters_crypto::{
    AesGcmSealer, Argon2Config, Argon2Hasher, EcdsaSigner, HasherStats, OsRandom, RfcTotp,
    ZxcvbnScreen,
};
use iam_adapters_mail::{DirectoryMailer, SmtpConfig, SmtpMailer, SmtpSecurity};
use iam_adapters_memory::{MemoryKeyStore, MemoryStore, MemoryThrottleStore};
use iam_adapters_postgres::{PgConfig, PostgresStore};
use iam_api_grpc::{GrpcState, ServiceCredentials};
use iam_application::{
    AuthService, ClaimService, Composer, FlowPolicy, Flows, KeyService, MfaService, OutboxPolicy,
    OutboxWorker, Ports, RbacService, RevocationView, TenantService, Throttle, TokenValidator,
    TrustedProxies, UserService,
};
use iam_domain::{KeyId, TokenPolicy};
use iam_ports::{
    Clock, KeyStore, MailQueue, Mailer, RevocationFeed, Rng, SecretSealer, Store, ThrottleStore,
    random,
};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::Settings;

/// The wired service.
pub struct App {
    /// The REST router, ready to serve.
    pub router: axum::Router,
    pub flows: Arc<Flows>,
    /// The outbox, for tests and readiness.
    pub mail: Arc<dyn MailQueue>,
    /// The gRPC services, ready to serve.
    pub grpc: tonic::service::Routes,
    pub auth: Arc<AuthService>,
    pub users: Arc<UserService>,
    pub rbac: Arc<RbacService>,
    pub tenants: Arc<TenantService>,
    pub view: Arc<RevocationView>,
    pub keys: Arc<KeyService>,
    pub store: Arc<dyn Store>,
    /// Argon2 run counters.
    pub hasher_stats: Arc<HasherStats>,
    background: Vec<JoinHandle<()>>,
}

impl Drop for App {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

/// The adapters behind the store ports.
pub struct Stores {
    pub store: Arc<dyn Store>,
    pub mail: Arc<dyn MailQueue>,
    pub throttle: Arc<dyn ThrottleStore>,
    pub keys: Arc<dyn KeyStore>,
    pub feed: Arc<dyn RevocationFeed>,
    pub sealer: Arc<dyn SecretSealer>,
}

/// The store, key store, revocation feed and sealer the configuration asks for.
pub async fn stores(settings: &Settings, rng: &dyn Rng) -> anyhow::Result<Stores> {
    match &settings.database {
        Some(db) => {
            let master = settings
                .master_key
                .as_ref()
                .context("master_key is required with a database")?;
            let sealer = AesGcmSealer::from_base64(master.expose_secret())
                .context("configuration key `master_key`")?;
            if db.migrate_on_start {
                let applied = iam_adapters_postgres::migrate(db.url.expose_secret())
                    .await
                    .context("applying migrations")?;
                info!(applied = applied.len(), "migrations applied");
            } else {
                let pending = iam_adapters_postgres::pending_migrations(db.url.expose_secret())
                    .await
                    .context("connecting to the database (configuration key `database.url`)")?;
                if !pending.is_empty() {
                    bail!(
                        "the database schema is not current ({} migration(s) pending, first {}): \
                         run `iam migrate` or set database.migrate_on_start",
                        pending.len(),
                        pending[0]
                    );
                }
            }
            let store = PostgresStore::connect(&PgConfig {
                url: db.url.expose_secret().to_owned(),
                max_connections: db.max_connections,
                acquire_timeout: Duration::from_millis(db.acquire_timeout_ms),
            })
            .await
            .context("connecting to the database (configuration key `database.url`)")?;
            Ok(Stores {
                mail: Arc::new(store.mail_queue()),
                keys: Arc::new(store.key_store()),
                throttle: Arc::new(store.throttle_store()),
                feed: Arc::new(store.clone()),
                store: Arc::new(store),
                sealer: Arc::new(sealer),
            })
        }
        None => {
            let sealer = match &settings.master_key {
                Some(key) => AesGcmSealer::from_base64(key.expose_secret())
                    .context("configuration key `master_key`")?,
                // Nothing is persisted, so a per-process key loses nothing.
                None => AesGcmSealer::from_bytes(&random::<32>(rng))
                    .context("generating an ephemeral master key")?,
            };
            let store = MemoryStore::new();
            Ok(Stores {
                mail: Arc::new(store.clone()),
                throttle: Arc::new(MemoryThrottleStore::new()),
                feed: Arc::new(store.clone()),
                store: Arc::new(store),
                keys: Arc::new(MemoryKeyStore::new()),
                sealer: Arc::new(sealer),
            })
        }
    }
}

/// The token policy the configuration asks for.
pub fn token_policy(settings: &Settings) -> TokenPolicy {
    let t = &settings.tokens;
    TokenPolicy {
        issuer: settings.issuer().to_owned(),
        audience: t.audience.clone(),
        access_ttl: chrono::Duration::seconds(t.access_ttl_secs),
        refresh_ttl: chrono::Duration::seconds(t.refresh_ttl_secs),
        leeway: chrono::Duration::seconds(t.leeway_secs),
    }
}

/// A key service over the configured key store.
pub fn key_service(
    settings: &Settings,
    keys: Arc<dyn KeyStore>,
    sealer: Arc<dyn SecretSealer>,
    signer: Arc<EcdsaSigner>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn Rng>,
) -> KeyService {
    let policy = token_policy(settings);
    KeyService::new(
        keys,
        sealer,
        signer,
        clock,
        rng,
        policy.access_ttl + policy.leeway,
    )
}

/// Builds the whole service from settings, with the given clock.
pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    let rng: Arc<dyn Rng> = Arc::new(OsRandom);
    let Stores {
        store,
        keys: key_store,
        feed,
        sealer,
        throttle: throttle_store,
        mail: mail_queue,
    } = stores(settings, &*rng).await?;
    if settings.database.is_none() {
        warn!(
            "no database configured: running on the in-memory store; nothing persists across \
             restarts (set IAM_DATABASE__URL to use PostgreSQL)"
        );
    }

    let h = &settings.password_hashing;
    if settings.weak_hashing() {
        warn!(
            memory_kib = h.memory_kib,
            iterations = h.iterations,
            parallelism = h.parallelism,
            "password hashing parameters are below the production standard (m=65536, t=1, p=4)"
        );
    }
    let workers = h
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let hasher = Argon2Hasher::new(
        Argon2Config {
            memory_kib: h.memory_kib,
            iterations: h.iterations,
            parallelism: h.parallelism,
        },
        workers,
        h.queue,
    )
    .context("configuration key `password_hashing`")?;
    let hasher_stats = hasher.stats();

    let signer = Arc::new(EcdsaSigner::new());
    let keys = Arc::new(key_service(
        settings,
        key_store,
        sealer.clone(),
        signer.clone(),
        clock.clone(),
        rng.clone(),
    ));
    match &settings.keys.pem_file {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| {
                format!(
                    "configuration key `keys.pem_file`: reading {}",
                    path.display()
                )
            })?;
            let kid = pem_kid(&pem)?;
            keys.import(kid, pem)
                .await
                .context("configuration key `keys.pem_file`: not a usable P-256 private key")?;
        }
        None => keys
            .load_or_create()
            .await
            .context("loading signing keys")?,
    }

    let policy = token_policy(settings);
    let view = Arc::new(RevocationView::new(
        feed,
        clock.clone(),
        policy.access_ttl + policy.leeway,
    ));
    // Before serving: a restarted instance must already know every live revocation.
    view.refresh().await.context("loading revocations")?;
    let validator = Arc::new(TokenValidator::new(
        signer.clone(),
        keys.clone(),
        policy.clone(),
        clock.clone(),
        view.clone(),
        settings.validation.cache_capacity,
    ));
    let ports_clock = clock.clone();
    let ports = Ports {
        store: store.clone(),
        hasher: Arc::new(hasher),
        signer,
        clock,
        rng,
        totp: Arc::new(RfcTotp),
        sealer,
        screen: Arc::new(ZxcvbnScreen),
    };
    let throttle = Arc::new(Throttle::new(
        throttle_store.clone(),
        ports_clock.clone(),
        settings.throttle.policy(),
    ));
    let flow_policy = FlowPolicy {
        public_base_url: settings.public_base_url.clone(),
        product: settings.product_name.clone(),
        verify_ttl: chrono::Duration::seconds(settings.flows.verify_ttl_secs),
        reset_ttl: chrono::Duration::seconds(settings.flows.reset_ttl_secs),
        invite_ttl: chrono::Duration::seconds(settings.flows.invite_ttl_secs),
    };
    let claims = Arc::new(ClaimService::new(
        ports.clone(),
        view.clone(),
        Arc::new(
            iam_adapters_http::HttpClaimFetcher::new()
                .context("building the HTTP client for claim hooks")?,
        ),
        iam_domain::claims::ClaimLimits {
            per_claim_bytes: settings.claims.max_claim_bytes,
            per_token_bytes: settings.claims.max_token_bytes,
        },
    ));
    let auth = Arc::new(
        AuthService::new(
            ports.clone(),
            policy,
            validator,
            throttle.clone(),
            settings.product_name.clone(),
        )
        .with_mail(
            Composer::new(flow_policy.clone()),
            settings.flows.require_verified_email,
        )
        .with_claims(claims.clone()),
    );
    let flows = Arc::new(Flows::new(
        ports.clone(),
        auth.clone(),
        view.clone(),
        flow_policy,
    ));
    let mfa = Arc::new(MfaService::new(
        ports.clone(),
        view.clone(),
        throttle,
        settings.mfa.issuer.clone(),
    ));
    let users = Arc::new(UserService::new(
        ports.clone(),
        view.clone(),
        settings.product_name.clone(),
    ));
    let rbac = Arc::new(RbacService::new(ports.clone(), view.clone()));
    let configured: Vec<iam_domain::PermissionDef> = settings
        .permissions
        .iter()
        .map(|p| {
            Ok(iam_domain::PermissionDef {
                name: iam_domain::Permission::parse_external(&p.name)?,
                description: p.description.trim().to_owned(),
                builtin: false,
            })
        })
        .collect::<Result<_, iam_domain::PermissionError>>()
        .context("configuration key `permissions`")?;
    rbac.register_configured(&configured)
        .await
        .context("registering the configured permissions")?;
    let tenants = Arc::new(TenantService::new(ports, view.clone()));

    let mut background = Vec::new();
    {
        // Other instances' revocations arrive through the feed; after a failure, start over.
        let view = view.clone();
        background.push(tokio::spawn(async move {
            loop {
                if let Err(e) = view.follow().await {
                    warn!(error = %e, "revocation feed failed; retrying in 1 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    if settings.database.is_some() {
        // Another instance (or `iam keys rotate`) may change the ring; pick that up.
        let keys = keys.clone();
        let every = Duration::from_secs(settings.keys.reload_interval_secs);
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = keys.reload().await {
                    warn!(error = %e, "periodic signing-key reload failed");
                }
            }
        }));
    }

    {
        // Unanswered sign-in challenges expire after five minutes, and throttle counters drain;
        // sweep both now and then.
        let store = store.clone();
        let clock = ports_clock.clone();
        let throttle_store = throttle_store.clone();
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(300));
            loop {
                tick.tick().await;
                let swept = async {
                    let mut uow = store.begin().await?;
                    let n = uow.purge_mfa_challenges(clock.now()).await?;
                    uow.commit().await?;
                    // Counters idle this long have drained to nothing under any sane rule.
                    let idle = throttle_store
                        .purge(clock.now() - chrono::Duration::days(1))
                        .await?;
                    Ok::<u64, iam_ports::StoreError>(n + idle)
                };
                match swept.await {
                    Ok(0) => {}
                    Ok(n) => info!(
                        purged = n,
                        "expired sign-in challenges and idle counters purged"
                    ),
                    Err(e) => warn!(error = %e, "purging expired challenges and counters failed"),
                }
            }
        }));
    }

    let trusted_proxies = Arc::new(
        TrustedProxies::parse(&settings.http.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("configuration key `http.trusted_proxies`: {e}"))?,
    );
    {
        // The outbox worker: what a unit of work queued is delivered after its commit.
        // Delivery retries are operational timing, so they run on the wall clock even where
        // the service's clock is frozen (tests).
        let worker = OutboxWorker::new(
            mail_queue.clone(),
            mailer(settings)?,
            Arc::new(iam_adapters_crypto::SystemClock),
            OutboxPolicy {
                base_backoff: chrono::Duration::milliseconds(
                    i64::try_from(settings.mail.retry_base_ms).unwrap_or(5000),
                ),
                ..OutboxPolicy::default()
            },
        );
        let every = Duration::from_millis(settings.mail.poll_interval_ms);
        background.push(tokio::spawn(async move {
            loop {
                match worker.run_once().await {
                    // A full batch: there may be more right away.
                    Ok(n) if n > 0 => continue,
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "the outbox could not be read"),
                }
                tokio::time::sleep(every).await;
            }
        }));
    }

    let router = iam_api_rest::router(iam_api_rest::AppState {
        flows: flows.clone(),
        auth: auth.clone(),
        mfa: mfa.clone(),
        users: users.clone(),
        tenants: tenants.clone(),
        rbac: rbac.clone(),
        claims: claims.clone(),
        keys: keys.clone(),
        store: store.clone(),
        trusted_proxies: trusted_proxies.clone(),
    });
    let grpc = iam_api_grpc::routes(GrpcState {
        auth: auth.clone(),
        users: users.clone(),
        rbac: rbac.clone(),
        tenants: tenants.clone(),
        credentials: ServiceCredentials::new(
            settings
                .grpc
                .service_tokens
                .iter()
                .map(ExposeSecret::expose_secret),
        ),
        trusted_proxies,
    })
    .await?;
    Ok(App {
        router,
        flows,
        mail: mail_queue,
        grpc,
        auth,
        users,
        rbac,
        tenants,
        view,
        keys,
        store,
        hasher_stats,
        background,
    })
}

/// A stable kid for a key from a file: the same file gives the same kid on every start.
fn pem_kid(pem: &[u8]) -> anyhow::Result<KeyId> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(pem);
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]);
    match KeyId::parse(&encoded) {
        Some(kid) => Ok(kid),
        None => bail!("derived key id is not valid"),
    }
}

/// `iam keys rotate`: makes a new active key in the database; running instances pick it up on
/// their next reload or when they first see a token it signed.
pub async fn rotate_keys(settings: &Settings) -> anyhow::Result<KeyId> {
    if settings.database.is_none() {
        bail!(
            "`iam keys rotate` needs a database: in-memory keys live only inside a running server \
             (set IAM_DATABASE__URL)"
        );
    }
    let rng: Arc<dyn Rng> = Arc::new(OsRandom);
    let stores = stores(settings, &*rng).await?;
    let keys = key_service(
        settings,
        stores.keys,
        stores.sealer,
        Arc::new(EcdsaSigner::new()),
        Arc::new(iam_adapters_crypto::SystemClock),
        rng,
    );
    keys.load_or_create()
        .await
        .context("loading signing keys")?;
    Ok(keys.rotate().await?)
}

/// The mailer the configuration asks for: SMTP, or the development directory mailer.
fn mailer(settings: &Settings) -> anyhow::Result<Arc<dyn Mailer>> {
    let m = &settings.mail;
    match &m.smtp {
        Some(smtp) => Ok(Arc::new(
            SmtpMailer::new(SmtpConfig {
                host: smtp.host.clone(),
                port: smtp.port,
                security: match smtp.security.as_str() {
                    "none" => SmtpSecurity::None,
                    "tls" => SmtpSecurity::Tls,
                    _ => SmtpSecurity::StartTls,
                },
                username: smtp.username.clone(),
                password: smtp.password.as_ref().map(|p| p.expose_secret().to_owned()),
                from: m.from.clone(),
                timeout: Duration::from_millis(smtp.timeout_ms),
            })
            .context("configuration key `mail.smtp`")?,
        )),
        None => {
            warn!(
                directory = %m.directory.display(),
                "no SMTP relay configured: mail is written to a directory, not sent \
                 (set [mail.smtp] to send it)"
            );
            Ok(Arc::new(
                DirectoryMailer::new(&m.directory, &m.from)
                    .context("configuration key `mail.directory`")?,
            ))
        }
    }
}

/// The gRPC server's TLS set-up, if the configuration asks for TLS.
pub fn grpc_tls(settings: &Settings) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let Some(tls) = &settings.grpc.tls else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, key: &str| {
        std::fs::read(path).with_context(|| {
            format!(
                "configuration key `grpc.tls.{key}`: reading {}",
                path.display()
            )
        })
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
        read(&tls.cert_file, "cert_file")?,
        read(&tls.key_file, "key_file")?,
    ));
    if let Some(ca) = &tls.client_ca_file {
        config = config.client_ca_root(Certificate::from_pem(read(ca, "client_ca_file")?));
    }
    Ok(Some(config))
}

/// Serves the gRPC routes on `listener` until `shutdown` resolves.
pub async fn serve_grpc(
    routes: tonic::service::Routes,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let mut server = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(tls) = tls {
        server = server
            .tls_config(tls)
            .context("configuration key `grpc.tls`: unusable certificate or key")?;
    }
    server
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
        .context("gRPC server failed")
}
