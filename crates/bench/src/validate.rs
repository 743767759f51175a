//! ValidateToken under load, beside two references built from the same proto and client:
//! a server answering a constant (the transport's ceiling) and a server doing exactly one ES256
//! verification per call (the cost the token cache exists to avoid).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use iam_adapters_crypto::EcdsaSigner;
use iam_api_grpc::pb::auth_service_client::AuthServiceClient;
use iam_api_grpc::pb::auth_service_server::{AuthService, AuthServiceServer};
use iam_api_grpc::pb::{self, RejectionReason};
use iam_domain::{Email, KeyId, Password};
use iam_ports::TokenSigner as _;
use tokio::runtime::Runtime;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Where the set-up's sign-ins come from.
const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Options of `iam-bench validate`.
#[derive(clap::Args)]
pub struct Options {
    /// Seconds each measurement lasts (after a warm-up of a third of that).
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Rounds of reference and service runs, interleaved; medians are reported, since one run on
    /// a shared two-core machine varies by ±15%.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// HTTP/2 connections the client spreads its calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Distinct valid tokens in the pool scenario.
    #[arg(long, default_value_t = 10_000)]
    tokens: usize,
    /// Worker threads of the servers' runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

/// The reference servers, which answer ValidateToken only.
enum Reference {
    /// The transport alone: a constant answer.
    Constant(Box<pb::ValidateTokenResponse>),
    /// One ES256 verification per call: no cache, no revocation checks.
    VerifyOnly(EcdsaSigner),
}

fn not_offered<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("reference server"))
}

#[tonic::async_trait]
impl AuthService for Reference {
    async fn login(
        &self,
        _: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        not_offered()
    }
    async fn refresh(
        &self,
        _: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        not_offered()
    }
    async fn verify_mfa(
        &self,
        _: Request<pb::VerifyMfaRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        not_offered()
    }
    async fn recover(
        &self,
        _: Request<pb::RecoverRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        not_offered()
    }
    async fn validate_token(
        &self,
        request: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        Ok(Response::new(match self {
            Self::Constant(answer) => (**answer).clone(),
            Self::VerifyOnly(signer) => match signer.verify(&request.into_inner().token) {
                Ok(c) => valid_answer(&c),
                Err(_) => pb::ValidateTokenResponse {
                    valid: false,
                    reason: RejectionReason::BadSignature.into(),
                    reason_code: "bad_signature".into(),
                    claims: None,
                },
            },
        }))
    }
}

/// The same answer shape the service gives, so that the references encode as much.
fn valid_answer(c: &iam_domain::AccessClaims) -> pb::ValidateTokenResponse {
    pb::ValidateTokenResponse {
        valid: true,
        reason: RejectionReason::Unspecified.into(),
        reason_code: String::new(),
        claims: Some(pb::Claims {
            sub: c.sub.to_string(),
            tenant_id: c.tenant_id.to_string(),
            roles: c.roles.clone(),
            sid: c.sid.to_string(),
            exp: c.exp,
            iat: c.iat,
            iss: c.iss.clone(),
            aud: vec!["platform".into()],
            jti: c.jti.to_string(),
            amr: c.amr.clone(),
            custom: None,
            // As many as the service resolves for an owner: the whole built-in catalogue.
            permissions: if c.roles.iter().any(|r| r == "owner") {
                iam_domain::rbac::IAM_PERMISSIONS
                    .iter()
                    .map(|(p, _)| (*p).to_owned())
                    .collect()
            } else {
                Vec::new()
            },
        }),
    }
}

/// The tokens each scenario cycles through, with the validity expected of each.
struct Mix {
    name: String,
    tokens: Vec<(String, bool)>,
}

struct Measured {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    /// For paced runs: p99 counted from the actual send rather than the schedule.
    p99_sent_us: u64,
    wrong_answers: u64,
    errors: u64,
}

async fn channels(url: &str, n: usize) -> anyhow::Result<Vec<AuthServiceClient<Channel>>> {
    Ok(crate::harness::connect(url, n)
        .await?
        .into_iter()
        .map(AuthServiceClient::new)
        .collect())
}

/// Runs `concurrency` callers, each sending its next call when its last is answered (closed
/// loop), for a warm-up plus `seconds`.
async fn drive(
    clients: &[AuthServiceClient<Channel>],
    mix: &Arc<Mix>,
    concurrency: usize,
    seconds: u64,
) -> Measured {
    let warmup = Duration::from_secs(seconds.div_ceil(3));
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop = measure_from + Duration::from_secs(seconds);
    let wrong = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut client = clients[worker % clients.len()].clone();
        let mix = mix.clone();
        let (wrong, errors) = (wrong.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = crate::harness::latencies();
            let mut i = worker.wrapping_mul(7919) % mix.tokens.len();
            loop {
                let sent = Instant::now();
                if sent >= stop {
                    break;
                }
                let (token, expected) = &mix.tokens[i];
                i = (i + 1) % mix.tokens.len();
                let answer = client
                    .validate_token(pb::ValidateTokenRequest {
                        token: token.clone(),
                    })
                    .await;
                let took = sent.elapsed();
                if sent < measure_from {
                    continue;
                }
                match answer {
                    Ok(a) if a.get_ref().valid == *expected => {}
                    Ok(_) => {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = hist.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
            }
            hist
        }));
    }
    let all = crate::harness::merged(tasks).await;
    Measured {
        rps: all.len() as f64 / seconds as f64,
        p50_us: all.value_at_quantile(0.50),
        p99_us: all.value_at_quantile(0.99),
        // In a closed loop every call is sent the moment it is scheduled.
        p99_sent_us: all.value_at_quantile(0.99),
        wrong_answers: wrong.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Sends `rate` calls per second, evenly spaced, whatever the answers do (open loop), for a
/// warm-up plus `seconds`. Latency counts from each call's scheduled time, so a stalled server
/// cannot hide its queue. The schedule runs on its own thread: tokio's timers tick in whole
/// milliseconds and would release the calls of each millisecond at once.
/// The pacer's shortest sleep.
const PACER_TICK: Duration = Duration::from_micros(200);

fn paced(
    runtime: &Runtime,
    clients: &[AuthServiceClient<Channel>],
    mix: &Arc<Mix>,
    rate: f64,
    seconds: u64,
) -> Measured {
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(seconds.div_ceil(3));
    let stop = measure_from + Duration::from_secs(seconds);
    let hist = Arc::new(std::sync::Mutex::new(crate::harness::latencies()));
    let sent_hist = Arc::new(std::sync::Mutex::new(crate::harness::latencies()));
    let wrong = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut next = start;
    let mut k = 0usize;
    while next < stop {
        let now = Instant::now();
        while next <= now && next < stop {
            let mut client = clients[k % clients.len()].clone();
            let (token, expected) = mix.tokens[k % mix.tokens.len()].clone();
            let (hist, wrong, errors) = (hist.clone(), wrong.clone(), errors.clone());
            let scheduled = next;
            let sent_hist = sent_hist.clone();
            tasks.push(runtime.spawn(async move {
                let sent = Instant::now();
                let answer = client
                    .validate_token(pb::ValidateTokenRequest { token })
                    .await;
                if scheduled < measure_from {
                    return;
                }
                let took = scheduled.elapsed();
                let from_send = u64::try_from(sent.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                let _ = sent_hist.lock().map(|mut h| h.record(from_send));
                match answer {
                    Ok(a) if a.get_ref().valid == expected => {}
                    Ok(_) => {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
                let _ = hist.lock().map(|mut h| h.record(micros));
            }));
            next += period;
            k += 1;
        }
        // Waking for every call would cost the shared cores more than the calls themselves;
        // a few calls per wake-up are still spread far finer than tokio's 1 ms timer.
        std::thread::sleep(
            next.saturating_duration_since(Instant::now())
                .max(PACER_TICK),
        );
    }
    runtime.block_on(async {
        for task in tasks {
            let _ = task.await;
        }
    });
    let all = hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let from_send = sent_hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    Measured {
        rps: all.len() as f64 / seconds as f64,
        p50_us: all.value_at_quantile(0.50),
        p99_us: all.value_at_quantile(0.99),
        p99_sent_us: from_send.value_at_quantile(0.99),
        wrong_answers: wrong.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// The run with the median throughput.
fn median(runs: Vec<Measured>) -> Measured {
    crate::harness::median(runs, |m| m.rps)
}

fn forge(token: &str, n: usize) -> String {
    // Changes one character well inside the signature: still well-formed, no longer valid.
    let mut chars: Vec<char> = token.chars().collect();
    let at = chars.len() - 5 - (n % 40);
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// `iam-bench validate`.
pub fn run(o: &Options) -> anyhow::Result<()> {
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.server_threads)
        .enable_all()
        .build()?;
    let clients: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .enable_all()
        .build()?;

    // One signing key for the service and the verify reference (which learns the service's kid
    // for that key once the service has started).
    let key = EcdsaSigner::new().generate(KeyId::parse("bench").context("kid")?)?;
    let dir = std::env::temp_dir().join(format!("iam-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let pem_path = dir.join("signing.pem");
    std::fs::write(&pem_path, &key.private_pem)?;

    println!(
        "setting up: the service (in-memory store), two reference servers, {} tokens …",
        o.tokens
    );
    let (urls, mixes) = servers.block_on(async {
        let mut settings = iam_app::Settings::default();
        settings.keys.pem_file = Some(pem_path.clone());
        // Only the set-up signs in; hashing cost is not what this measures.
        settings.password_hashing.memory_kib = 1024;
        settings.password_hashing.parallelism = 1;
        let app =
            iam_app::wiring::build(&settings, Arc::new(iam_adapters_crypto::SystemClock)).await?;
        let kid = app.keys.jwks()["keys"][0]["kid"]
            .as_str()
            .and_then(KeyId::parse)
            .context("the service publishes its key")?;
        let key = iam_ports::KeyMaterial {
            kid: kid.clone(),
            private_pem: key.private_pem.clone(),
        };
        let signer = EcdsaSigner::new();
        signer.install(std::slice::from_ref(&key), &kid)?;
        let email = Email::parse("bench@example.com")?;
        let password = Password::new("bench password, long enough")?;
        app.auth
            .register(
                iam_application_command(email.clone(), password.clone())?,
                LOOPBACK,
            )
            .await?;
        let iam_application::SignIn::Tokens(first) =
            app.auth.login(&email, &password, None, LOOPBACK).await?
        else {
            anyhow::bail!("the bench user has no second factor");
        };
        let mut pool = vec![first.access_token.clone()];
        let mut refresh = first.refresh_token;
        while pool.len() < o.tokens {
            let next = app.auth.refresh(refresh.expose(), LOOPBACK).await?;
            pool.push(next.access_token.clone());
            refresh = next.refresh_token;
        }
        let constant = valid_answer(
            &signer
                .verify(&pool[0])
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let service = crate::harness::serve_on_loopback(app.grpc.clone()).await?;
        let reference_constant = crate::harness::serve_on_loopback(tonic::service::Routes::new(
            AuthServiceServer::new(Reference::Constant(Box::new(constant))),
        ))
        .await?;
        let verify_signer = EcdsaSigner::new();
        verify_signer.install(std::slice::from_ref(&key), &kid)?;
        let reference_verify = crate::harness::serve_on_loopback(tonic::service::Routes::new(
            AuthServiceServer::new(Reference::VerifyOnly(verify_signer)),
        ))
        .await?;
        // The app must outlive set-up: its background tasks serve the revocation view.
        std::mem::forget(app);

        let one = Mix {
            name: "(a) one token, repeated".into(),
            tokens: vec![(pool[0].clone(), true)],
        };
        let distinct = Mix {
            name: format!("(b) {} distinct valid tokens", pool.len()),
            tokens: pool.iter().map(|t| (t.clone(), true)).collect(),
        };
        let mut mixed = Vec::new();
        for (n, t) in pool.iter().enumerate() {
            match n % 4 {
                0 | 1 => mixed.push((t.clone(), true)),
                2 => mixed.push((forge(t, n), false)),
                _ => mixed.push((format!("{}.not-a-token", &t[..20]), false)),
            }
        }
        let mixed = Mix {
            name: "(c) 50% valid, 25% forged, 25% malformed".into(),
            tokens: mixed,
        };
        anyhow::Ok((
            (service, reference_constant, reference_verify),
            (one, distinct, mixed),
        ))
    })?;
    let (service, reference_constant, reference_verify) = urls;
    let (one, distinct, mixed) = (Arc::new(mixes.0), Arc::new(mixes.1), Arc::new(mixes.2));

    println!(
        "ValidateToken over gRPC on loopback: {} server threads, {} client threads, {} HTTP/2 connections, {} calls in flight, {} s per run (+{} s warm-up)\n",
        o.server_threads,
        o.client_threads,
        o.connections,
        o.concurrency,
        o.seconds,
        o.seconds.div_ceil(3)
    );
    println!(
        "{:<52} {:>10} {:>8} {:>8}",
        "run", "req/s", "p50 µs", "p99 µs"
    );
    let report = |name: &str, m: &Measured| {
        println!("{name:<52} {:>10.0} {:>8} {:>8}", m.rps, m.p50_us, m.p99_us);
        if m.wrong_answers + m.errors > 0 {
            println!(
                "    !! {} wrong answers, {} errors",
                m.wrong_answers, m.errors
            );
        }
    };
    let run = |url: &str, mix: &Arc<Mix>, rate: Option<f64>| -> anyhow::Result<Measured> {
        let c = clients.block_on(channels(url, o.connections))?;
        Ok(match rate {
            Some(rate) => paced(&clients, &c, mix, rate, o.seconds),
            None => clients.block_on(drive(&c, mix, o.concurrency, o.seconds)),
        })
    };

    let (mut ceilings, mut verifies, mut ones, mut distincts) = (vec![], vec![], vec![], vec![]);
    for round in 1..=o.rounds {
        println!("round {round} of {}", o.rounds);
        for (label, url, mix, into) in [
            (
                "  reference: constant answer",
                &reference_constant,
                &one,
                &mut ceilings,
            ),
            ("  (a)", &service, &one, &mut ones),
            (
                "  reference: one ES256 verify per call",
                &reference_verify,
                &distinct,
                &mut verifies,
            ),
            ("  (b)", &service, &distinct, &mut distincts),
        ] {
            let m = run(url, mix, None)?;
            report(label, &m);
            into.push(m);
        }
    }
    let (ceiling, a, verify, b) = (
        median(ceilings),
        median(ones),
        median(verifies),
        median(distincts),
    );
    println!("\nmedians of {} rounds", o.rounds);
    report("reference: constant answer (transport ceiling)", &ceiling);
    report("reference: one ES256 verification per call", &verify);
    report(&one.name, &a);
    report(&distinct.name, &b);
    let c = run(&service, &mixed, None)?;
    report(&mixed.name, &c);
    let half = a.rps / 2.0;
    let paced = run(&service, &one, Some(half))?;
    report(
        &format!("(a) paced at half its maximum ({half:.0} req/s)"),
        &paced,
    );
    let paced_ceiling = run(&reference_constant, &one, Some(half))?;
    report(
        "reference: constant answer, paced at the same rate",
        &paced_ceiling,
    );

    println!();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let ra = a.rps / ceiling.rps;
    let rb = b.rps / verify.rps;
    println!(
        "(a) {:>6.1}% of the transport ceiling          goal ≥ 90%: {}",
        ra * 100.0,
        verdict(ra >= 0.9)
    );
    println!(
        "(b) {:>6.1}% of the verify-per-call reference  goal ≥ 90%: {}",
        rb * 100.0,
        verdict(rb >= 0.9)
    );
    println!(
        "p99 at half of (a)'s maximum, from each call's send: {:.2} ms   goal < 2 ms: {}",
        paced.p99_sent_us as f64 / 1000.0,
        verdict(paced.p99_sent_us < 2000)
    );
    println!(
        "    from its scheduled time: {:.2} ms (adds the pacer's own lateness on the shared cores);",
        paced.p99_us as f64 / 1000.0
    );
    println!(
        "    the constant-answer reference at that rate: {:.2} ms from send, {:.2} ms from schedule",
        paced_ceiling.p99_sent_us as f64 / 1000.0,
        paced_ceiling.p99_us as f64 / 1000.0
    );
    let bad: u64 = [&ceiling, &verify, &a, &b, &c, &paced, &paced_ceiling]
        .iter()
        .map(|m| m.wrong_answers + m.errors)
        .sum();
    std::fs::remove_dir_all(&dir)?;
    anyhow::ensure!(bad == 0, "{bad} calls were answered wrongly or failed");
    Ok(())
}

fn iam_application_command(
    email: Email,
    password: Password,
) -> anyhow::Result<iam_application::RegisterCommand> {
    Ok(iam_application::RegisterCommand {
        email,
        password,
        name: iam_domain::DisplayName::parse("Bench")?,
        tenant_name: None,
    })
}
