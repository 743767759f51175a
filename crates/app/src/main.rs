//! `iam`: the IAM service's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use iam_adapters_crypto::SystemClock;
use iam_app::{Settings, settings::LogFormat, wiring};
use secrecy::ExposeSecret;
use tracing::info;

/// Identity and access management service.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file (environment variables `IAM_*` override it).
    #[arg(long, global = true, env = "IAM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves the REST and gRPC APIs.
    Serve,
    /// Applies pending database migrations.
    Migrate,
    /// Manages signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Creates the platform's root tenant and its first owner on an empty installation
    /// (idempotent: does nothing once a root tenant exists).
    Bootstrap {
        /// The first owner's email; an existing account with it becomes the owner.
        #[arg(long)]
        email: String,
        /// A file holding the owner's password (a trailing newline is ignored).
        #[arg(long)]
        password_file: PathBuf,
        /// The owner's display name.
        #[arg(long, default_value = "Platform owner")]
        name: String,
        /// The root tenant's name.
        #[arg(long, default_value = "Platform")]
        tenant_name: String,
    },
    /// Prints the OpenAPI document.
    Openapi,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Makes a new active signing key; the old one keeps verifying until its tokens expire.
    Rotate,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Openapi = cli.command {
        let doc = serde_json::to_string_pretty(&iam_api_rest::openapi())?;
        println!("{doc}");
        return Ok(());
    }
    let settings = Settings::load(cli.config.as_deref())?;
    init_tracing(&settings);
    match cli.command {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            let db = settings
                .database
                .as_ref()
                .context("`iam migrate` needs a database: set IAM_DATABASE__URL")?;
            let applied = iam_adapters_postgres::migrate(db.url.expose_secret()).await?;
            if applied.is_empty() {
                println!("database is up to date");
            }
            for version in applied {
                println!("applied {version}");
            }
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            let kid = wiring::rotate_keys(&settings).await?;
            println!("new active signing key: {kid}");
            Ok(())
        }
        Command::Bootstrap {
            email,
            password_file,
            name,
            tenant_name,
        } => bootstrap(&settings, &email, &password_file, &name, &tenant_name).await,
        Command::Openapi => Ok(()),
    }
}

async fn bootstrap(
    settings: &Settings,
    email: &str,
    password_file: &std::path::Path,
    name: &str,
    tenant_name: &str,
) -> anyhow::Result<()> {
    use iam_application::{BootstrapCommand, Bootstrapped};
    use iam_domain::{DisplayName, Email, Password, TenantName};
    anyhow::ensure!(
        settings.database.is_some(),
        "`iam bootstrap` needs a database (IAM_DATABASE__URL): the in-memory store forgets \
         everything when this command exits"
    );
    let raw = std::fs::read_to_string(password_file)
        .with_context(|| format!("reading --password-file {}", password_file.display()))?;
    let raw = raw.strip_suffix('\n').unwrap_or(&raw);
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    let cmd = BootstrapCommand {
        email: Email::parse(email).context("--email")?,
        password: Password::new(raw).context("--password-file")?,
        name: DisplayName::parse(name).context("--name")?,
        tenant_name: TenantName::parse(tenant_name).context("--tenant-name")?,
    };
    let app = wiring::build(settings, Arc::new(SystemClock)).await?;
    match app.rbac.bootstrap(cmd).await? {
        Bootstrapped::Created { tenant, owner } => {
            println!("created the root tenant {tenant} owned by user {owner}");
        }
        Bootstrapped::AlreadyDone { tenant } => {
            println!("already bootstrapped: the root tenant is {tenant}; nothing changed");
        }
    }
    Ok(())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = wiring::build(&settings, Arc::new(SystemClock)).await?;
    let tls = wiring::grpc_tls(&settings)?;
    let bind = |addr: SocketAddr, key: &'static str| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr} (configuration key `{key}`)"))
    };
    let rest = bind(settings.http.addr, "http.addr").await?;
    let grpc = bind(settings.grpc.addr, "grpc.addr").await?;
    info!(
        rest = %rest.local_addr()?,
        grpc = %grpc.local_addr()?,
        grpc_tls = tls.is_some(),
        store = if settings.database.is_some() { "postgres" } else { "memory" },
        "IAM service listening"
    );
    // One signal stops both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let rest = async {
        axum::serve(
            rest,
            app.router
                .clone()
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(until_stopped(stopped.clone()))
        .await
        .context("REST server failed")
    };
    let grpc = wiring::serve_grpc(app.grpc.clone(), grpc, tls, until_stopped(stopped.clone()));
    tokio::try_join!(rest, grpc)?;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

fn init_tracing(settings: &Settings) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log.filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}
