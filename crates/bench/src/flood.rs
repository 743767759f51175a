//! A wrong-password flood from one address: how much Argon2 work it still costs once throttled,
//! beside the machine's raw Argon2id rate with the service's parameters, measured in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iam_adapters_crypto::{Argon2Config, Argon2Hasher};
use iam_domain::Password;
use iam_ports::PasswordHasher as _;
use serde_json::json;

/// Options of `iam-bench flood`.
#[derive(clap::Args)]
pub struct Options {
    /// Seconds the flood lasts.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// The machine's Argon2id rate with production parameters on `workers` threads.
async fn raw_argon2_rate(workers: usize, seconds: u64) -> anyhow::Result<f64> {
    let hasher = Arc::new(Argon2Hasher::new(
        Argon2Config::PRODUCTION,
        workers,
        workers * 4,
    )?);
    let password = Password::new("a reference password")?;
    let hash = hasher.hash(&password).await?;
    let stop = Instant::now() + Duration::from_secs(seconds);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (hasher, password, hash, done) =
            (hasher.clone(), password.clone(), hash.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                if hasher.verify(&password, &hash).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / seconds as f64)
}

/// `iam-bench flood`.
pub fn run(o: &Options) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        println!("reference: raw Argon2id (m=64 MiB, t=1, p=4) on {workers} threads …");
        let raw = raw_argon2_rate(workers, 5).await?;

        let mut settings = iam_app::Settings::default();
        settings.http.trusted_proxies = vec!["127.0.0.1".into()];
        let app = iam_app::wiring::build(&settings, Arc::new(iam_adapters_crypto::SystemClock)).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let router = app.router.clone();
        tokio::spawn(async move {
            axum::serve(listener, router.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
        });
        let http = reqwest::Client::builder().pool_max_idle_per_host(o.concurrency).build()?;
        let password = "victim's own password";
        http.post(format!("{base}/auth/register"))
            .json(&json!({ "email": "victim@example.com", "password": password, "name": "Victim" }))
            .send()
            .await?;

        let stats = app.hasher_stats.clone();
        let before = stats.verifications();
        let start = Instant::now();
        let stop = start + Duration::from_secs(o.seconds);
        let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let mut tasks = Vec::new();
        for _ in 0..o.concurrency {
            let (http, base, counts) = (http.clone(), base.clone(), counts.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < stop {
                    let r = http
                        .post(format!("{base}/auth/login"))
                        .header("x-forwarded-for", "198.51.100.66")
                        .json(&json!({ "email": "victim@example.com", "password": "wrong guess 1234" }))
                        .send()
                        .await;
                    let slot = match r.map(|r| r.status().as_u16()) {
                        Ok(401) => 0,
                        Ok(429) => 1,
                        Ok(503) => 2,
                        _ => 3,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // Midway, the victim signs in from an address of their own.
        tokio::time::sleep(Duration::from_secs(o.seconds / 2)).await;
        let victim_start = Instant::now();
        let victim = http
            .post(format!("{base}/auth/login"))
            .header("x-forwarded-for", "203.0.113.7")
            .json(&json!({ "email": "victim@example.com", "password": password }))
            .send()
            .await?
            .status();
        let victim_took = victim_start.elapsed();
        for t in tasks {
            t.await?;
        }
        let elapsed = start.elapsed().as_secs_f64();
        let spent = stats.verifications() - before;
        let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        println!(
            "\nflood: {} wrong-password sign-ins from one address, {} in flight, {:.1} s",
            total, o.concurrency, elapsed
        );
        println!(
            "  answers: {} × 401, {} × 429 (throttled), {} × 503, {} other",
            counts[0].load(Ordering::Relaxed),
            counts[1].load(Ordering::Relaxed),
            counts[2].load(Ordering::Relaxed),
            counts[3].load(Ordering::Relaxed)
        );
        println!("  requests/s: {:.0}", total as f64 / elapsed);
        println!(
            "  Argon2 work during the flood: {} verifications ({:.2}/s) against a raw rate of {:.1}/s: {:.2}% of capacity",
            spent,
            spent as f64 / elapsed,
            raw,
            100.0 * spent as f64 / elapsed / raw
        );
        println!(
            "  the victim, from another address during the flood: {} in {} ms",
            victim.as_u16(),
            victim_took.as_millis()
        );
        anyhow::ensure!(victim.is_success(), "the victim could not sign in during the flood");
        anyhow::Ok(())
    })
}
