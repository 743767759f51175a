//! Starting the service for a test.

use std::sync::Arc;

use base64::Engine as _;
use futures::FutureExt as _;
use iam_adapters_crypto::ManualClock;
use iam_adapters_postgres::testing::TestDatabase;
use iam_app::settings::{DatabaseSettings, GrpcSettings, HashSettings, MailSettings, SmtpSettings};
use iam_app::{App, Settings};
use reqwest::{Response, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};

pub const PASSWORD: &str = "correct horse battery staple";
/// The service credential test instances accept for IamService.
pub const SERVICE_TOKEN: &str = "test-service-credential-0123456789abcdef";

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Postgres,
}

/// A running service.
pub struct TestApp {
    pub base: String,
    /// `http://127.0.0.1:port` of the gRPC listener.
    pub grpc: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub app: App,
    pub db: Option<Arc<TestDatabase>>,
    pub master_key: String,
    server: tokio::task::JoinHandle<()>,
    grpc_server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
        self.grpc_server.abort();
    }
}

/// Settings for tests: cheap Argon2 (configuration is the only way to get it), a fresh master key.
pub fn test_settings(db: Option<&TestDatabase>, master_key: &str) -> Settings {
    Settings {
        password_hashing: HashSettings {
            memory_kib: 256,
            iterations: 1,
            parallelism: 1,
            workers: Some(2),
            queue: 64,
        },
        database: db.map(|db| DatabaseSettings {
            url: SecretString::from(db.url.clone()),
            max_connections: 8,
            acquire_timeout_ms: 3000,
            migrate_on_start: false,
        }),
        master_key: Some(SecretString::from(master_key.to_owned())),
        grpc: GrpcSettings {
            service_tokens: vec![SecretString::from(SERVICE_TOKEN.to_owned())],
            ..GrpcSettings::default()
        },
        mail: MailSettings {
            directory: std::env::temp_dir().join(format!("iam-test-mail-{}", uuid::Uuid::new_v4())),
            poll_interval_ms: 20,
            retry_base_ms: 100,
            ..MailSettings::default()
        },
        ..Settings::default()
    }
}

pub fn new_master_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand_bytes())
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, chunk) in uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::new_v4().as_bytes())
        .enumerate()
    {
        b[i] = *chunk;
    }
    b
}

pub async fn spawn(backend: Backend) -> TestApp {
    let db = match backend {
        Backend::Memory => None,
        Backend::Postgres => Some(Arc::new(TestDatabase::new().await)),
    };
    let key = new_master_key();
    let settings = test_settings(db.as_deref(), &key);
    spawn_with(settings, db, key).await
}

/// A second instance on the first one's database, with the same master key.
pub async fn spawn_second(first: &TestApp) -> TestApp {
    let db = first.db.clone().expect("a database-backed instance");
    spawn_with(
        test_settings(Some(&db), &first.master_key),
        Some(db.clone()),
        first.master_key.clone(),
    )
    .await
}

/// Starts a service with the given settings (e.g. a second instance on the same database).
pub async fn spawn_with(
    settings: Settings,
    db: Option<Arc<TestDatabase>>,
    master_key: String,
) -> TestApp {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = iam_app::build(&settings, clock.clone())
        .await
        .expect("service starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = app.router.clone();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let grpc_addr = grpc_listener.local_addr().expect("addr");
    let tls = iam_app::wiring::grpc_tls(&settings).expect("tls settings");
    let grpc_server = tokio::spawn(
        iam_app::wiring::serve_grpc(app.grpc.clone(), grpc_listener, tls, std::future::pending())
            .map(|r| r.expect("grpc serves")),
    );
    TestApp {
        base: format!("http://{addr}"),
        grpc: format!("http://{grpc_addr}"),
        grpc_server,
        http: reqwest::Client::new(),
        clock,
        app,
        db,
        master_key,
        server,
    }
}

impl TestApp {
    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_bearer(&self, path: &str, token: &str) -> Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request")
    }

    pub async fn register(&self, email: &str) {
        let r = self
            .post(
                "/auth/register",
                json!({ "email": email, "password": PASSWORD, "name": "Ada Lovelace" }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }

    /// Signs in and returns the access token.
    pub async fn token(&self, email: &str) -> String {
        self.login(email).await["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    /// Signs in and returns the token response.
    pub async fn login(&self, email: &str) -> Value {
        let r = self
            .post(
                "/auth/login",
                json!({ "email": email, "password": PASSWORD }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.expect("json")
    }
}

/// Status and problem body of an error answer, checking its media type.
pub async fn problem(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(ct, "application/problem+json", "status {status}");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:iam:problem:"))
    );
    (status, body)
}

/// gRPC clients for a running instance.
pub mod rpc {
    pub use iam_api_grpc::pb;
    use pb::auth_service_client::AuthServiceClient;
    use pb::iam_service_client::IamServiceClient;
    use pb::tenant_hierarchy_service_client::TenantHierarchyServiceClient;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;

    use super::{SERVICE_TOKEN, TestApp};

    pub async fn channel(app: &TestApp) -> Channel {
        Channel::from_shared(app.grpc.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    pub async fn auth(app: &TestApp) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(channel(app).await)
    }

    pub async fn tenants(app: &TestApp) -> TenantHierarchyServiceClient<WithCredential> {
        TenantHierarchyServiceClient::with_interceptor(
            channel(app).await,
            credential(Some(SERVICE_TOKEN)),
        )
    }

    fn credential(credential: Option<&'static str>) -> Interceptor {
        Box::new(move |mut req: tonic::Request<()>| {
            if let Some(c) = credential {
                req.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {c}").parse().expect("ascii"),
                );
            }
            Ok(req)
        })
    }

    /// A TenantHierarchyService client without the credential.
    pub async fn tenants_without_credential(
        app: &TestApp,
    ) -> TenantHierarchyServiceClient<WithCredential> {
        TenantHierarchyServiceClient::with_interceptor(channel(app).await, credential(None))
    }

    type Interceptor =
        Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
    type WithCredential = InterceptedService<Channel, Interceptor>;

    /// An IamService client presenting `credential` (none when `None`).
    pub async fn iam_with(
        app: &TestApp,
        credential: Option<&'static str>,
    ) -> IamServiceClient<WithCredential> {
        let interceptor: Interceptor = Box::new(move |mut req: tonic::Request<()>| {
            if let Some(c) = credential {
                req.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {c}").parse().expect("ascii"),
                );
            }
            Ok(req)
        });
        IamServiceClient::with_interceptor(channel(app).await, interceptor)
    }

    pub async fn iam(app: &TestApp) -> IamServiceClient<WithCredential> {
        iam_with(app, Some(SERVICE_TOKEN)).await
    }

    /// ValidateToken's answer for `token`.
    pub async fn validate(app: &TestApp, token: &str) -> pb::ValidateTokenResponse {
        auth(app)
            .await
            .validate_token(pb::ValidateTokenRequest {
                token: token.to_owned(),
            })
            .await
            .expect("ValidateToken never fails for a bad token")
            .into_inner()
    }
}

/// Settings that deliver mail to a loopback SMTP server on `port`.
pub fn with_smtp(mut settings: Settings, port: u16) -> Settings {
    settings.mail.smtp = Some(SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: "none".into(),
        username: None,
        password: None,
        timeout_ms: 2000,
    });
    settings
}
