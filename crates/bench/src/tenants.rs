//! TenantHierarchyService (IsDescendant, GetTenantStatus) under load on a seeded tenant tree,
//! beside a reference server built from the same proto and client that answers a constant (the
//! transport's ceiling), measured in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use iam_api_grpc::pb;
use iam_api_grpc::pb::tenant_hierarchy_service_client::TenantHierarchyServiceClient;
use iam_api_grpc::pb::tenant_hierarchy_service_server::{
    TenantHierarchyService, TenantHierarchyServiceServer,
};
use iam_domain::{Email, Tenant, TenantId, TenantName, TenantStatus, User, UserId, UserStatus};
use iam_ports::{Clock as _, Store};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use secrecy::SecretString;
use tokio::runtime::Runtime;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Children of every tenant that has any.
const FAN_OUT: usize = 10;
/// Levels below the root in which every tenant has children; below them only every other one
/// does, so the tree is wide at the top and deeper in half of its subtrees.
const FULL_LEVELS: usize = 3;
/// Tenants inserted per unit of work while seeding.
const BATCH: usize = 500;
/// Tenants blocked at each of depths 2 and 3.
const BLOCKED_PER_LEVEL: usize = 8;
/// Requests generated per RPC; callers cycle through them.
const WORKLOAD: usize = 65_536;
/// Answers checked one by one before the load runs (every answer under load is checked too).
const SAMPLE: usize = 500;

/// Options of `iam-bench tenants`.
#[derive(clap::Args)]
pub struct Options {
    /// Seconds each measurement lasts (after a warm-up of a third of that).
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Rounds of reference and service runs, interleaved; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the client spreads its calls over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Tenants in the seeded tree.
    #[arg(long, default_value_t = 10_000)]
    tenants: usize,
    /// Run the service on this PostgreSQL database (migrated at start; the bench's user and
    /// tenants stay in it, so use a scratch database) instead of the in-memory store.
    #[arg(long)]
    database_url: Option<String>,
    /// The service's database pool size (with --database-url).
    #[arg(long, default_value_t = 8)]
    max_connections: usize,
    /// Seed of the tree's blocked tenants and of the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads of the servers' runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
}

/// The seeded tree, as the bench knows it.
struct Tree {
    ids: Vec<TenantId>,
    parent: Vec<Option<usize>>,
    depth: Vec<usize>,
    /// Tenant indices by depth.
    levels: Vec<Vec<usize>>,
    /// Blocked by its own status.
    own_blocked: Vec<bool>,
    /// The nearest blocked tenant: itself or an ancestor.
    blocked_by: Vec<Option<usize>>,
}

impl Tree {
    /// Levels filled in order: every tenant of the first [`FULL_LEVELS`] levels gets
    /// [`FAN_OUT`] children, below that every other tenant does, until there are `n`.
    fn shape(n: usize) -> Self {
        let mut parent = vec![None];
        let mut depth = vec![0];
        let mut levels = vec![vec![0]];
        while parent.len() < n {
            let d = levels.len() - 1;
            let step = if d < FULL_LEVELS { 1 } else { 2 };
            let mut next = Vec::new();
            'fill: for &p in levels[d].iter().step_by(step) {
                for _ in 0..FAN_OUT {
                    if parent.len() == n {
                        break 'fill;
                    }
                    next.push(parent.len());
                    parent.push(Some(p));
                    depth.push(d + 1);
                }
            }
            levels.push(next);
        }
        let ids = (0..parent.len())
            .map(|_| TenantId::from_uuid(uuid::Uuid::now_v7()))
            .collect();
        Self {
            ids,
            own_blocked: vec![false; parent.len()],
            blocked_by: vec![None; parent.len()],
            parent,
            depth,
            levels,
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Marks `BLOCKED_PER_LEVEL` random tenants of depths 2 and 3 blocked (fewer, higher up, in
    /// a small tree) and works out everyone's effective status.
    fn block(&mut self, rng: &mut StdRng) -> Vec<usize> {
        let mut chosen = Vec::new();
        for d in [2, 3] {
            let Some(level) = self.levels.get(d).or_else(|| self.levels.get(1)) else {
                break;
            };
            for _ in 0..BLOCKED_PER_LEVEL.min(level.len() / 4) {
                let t = level[rng.random_range(0..level.len())];
                if !self.own_blocked[t] {
                    self.own_blocked[t] = true;
                    chosen.push(t);
                }
            }
        }
        // Parents come before children, so one pass in index order suffices.
        for t in 0..self.len() {
            self.blocked_by[t] = if self.own_blocked[t] {
                Some(t)
            } else {
                self.parent[t].and_then(|p| self.blocked_by[p])
            };
        }
        chosen
    }

    fn is_descendant(&self, ancestor: usize, descendant: usize) -> bool {
        let mut at = self.parent[descendant];
        while let Some(p) = at {
            if p == ancestor {
                return true;
            }
            at = self.parent[p];
        }
        false
    }

    fn describe(&self) -> String {
        let mut lines = vec![format!(
            "tenant tree: {} tenants, depth {}, {FAN_OUT} children per parent (all parents at \
             depths < {FULL_LEVELS}, every other tenant below)",
            self.len(),
            self.levels.len() - 1
        )];
        for (d, level) in self.levels.iter().enumerate() {
            let parents = self.levels.get(d + 1).map_or(0, |next| {
                let mut ps: Vec<_> = next.iter().filter_map(|&c| self.parent[c]).collect();
                ps.dedup();
                ps.len()
            });
            lines.push(format!(
                "  depth {d}: {:>6} tenants, {:>5} of them with children",
                level.len(),
                parents
            ));
        }
        let blocked = self.own_blocked.iter().filter(|b| **b).count();
        let effective = self.blocked_by.iter().filter(|b| b.is_some()).count();
        lines.push(format!(
            "  blocked: {blocked} tenants at depths {:?}; {effective} tenants ({:.1}%) effectively \
             blocked",
            {
                let mut ds: Vec<_> = (0..self.len())
                    .filter(|&t| self.own_blocked[t])
                    .map(|t| self.depth[t])
                    .collect();
                ds.sort_unstable();
                ds.dedup();
                ds
            },
            effective as f64 * 100.0 / self.len() as f64
        ));
        lines.join("\n")
    }
}

/// The requests callers cycle through, with the answers the tree says are right.
struct Workload {
    descendant: Vec<(pb::IsDescendantRequest, bool)>,
    status: Vec<(pb::GetTenantStatusRequest, pb::GetTenantStatusResponse)>,
}

fn wire(blocked: bool) -> i32 {
    if blocked {
        pb::TenantStatus::Blocked.into()
    } else {
        pb::TenantStatus::Active.into()
    }
}

impl Workload {
    /// Half true pairs (an ancestor from the tenant's own chain); of the false half, half are a
    /// true pair reversed and half a random unrelated tenant.
    fn new(tree: &Tree, rng: &mut StdRng) -> Self {
        let n = tree.len();
        let pair = |a: usize, d: usize| pb::IsDescendantRequest {
            ancestor_id: tree.ids[a].to_string(),
            descendant_id: tree.ids[d].to_string(),
        };
        let true_pair = |rng: &mut StdRng| {
            let d = rng.random_range(1..n);
            let mut a = d;
            for _ in 0..rng.random_range(1..=tree.depth[d]) {
                a = tree.parent[a].unwrap_or(a);
            }
            (a, d)
        };
        let mut descendant = Vec::with_capacity(WORKLOAD);
        while n > 1 && descendant.len() < WORKLOAD {
            let (a, d) = match rng.random_range(0..4) {
                0 | 1 => true_pair(rng),
                2 => {
                    let (a, d) = true_pair(rng);
                    (d, a)
                }
                _ => (rng.random_range(0..n), rng.random_range(0..n)),
            };
            descendant.push((pair(a, d), tree.is_descendant(a, d)));
        }
        let status = (0..WORKLOAD)
            .map(|_| {
                let t = rng.random_range(0..n);
                (
                    pb::GetTenantStatusRequest {
                        tenant_id: tree.ids[t].to_string(),
                    },
                    pb::GetTenantStatusResponse {
                        status: wire(tree.blocked_by[t].is_some()),
                        own_status: wire(tree.own_blocked[t]),
                        blocked_by: tree.blocked_by[t]
                            .map(|b| tree.ids[b].to_string())
                            .unwrap_or_default(),
                    },
                )
            })
            .collect();
        Self { descendant, status }
    }
}

/// Inserts the owner and the tree through the store port, [`BATCH`] tenants per unit of work,
/// then blocks the chosen tenants in one more.
async fn seed(store: &dyn Store, tree: &Tree, blocked: &[usize]) -> anyhow::Result<()> {
    let now = iam_adapters_crypto::SystemClock.now();
    let owner = User {
        id: UserId::from_uuid(uuid::Uuid::now_v7()),
        email: Email::parse(&format!(
            "tenants-bench-{}@example.com",
            uuid::Uuid::new_v4().simple()
        ))?,
        name: iam_domain::DisplayName::parse("Tenants bench")?,
        status: UserStatus::Active,
        email_verified: true,
        metadata: iam_domain::Metadata::default(),
        created_at: now,
        updated_at: now,
    };
    let mut uow = store.begin().await?;
    uow.insert_user(&owner, None).await?;
    uow.commit().await?;
    for batch in (0..tree.len()).collect::<Vec<_>>().chunks(BATCH) {
        let mut uow = store.begin().await?;
        for &t in batch {
            uow.insert_tenant(&Tenant {
                id: tree.ids[t],
                name: TenantName::parse(&format!("bench tenant {t}"))?,
                parent: tree.parent[t].map(|p| tree.ids[p]),
                owner: owner.id,
                status: TenantStatus::Active,
                metadata: iam_domain::Metadata::default(),
                created_at: now,
                updated_at: now,
            })
            .await
            .with_context(|| format!("inserting tenant {t}"))?;
        }
        uow.commit().await?;
    }
    let mut uow = store.begin().await?;
    for &t in blocked {
        anyhow::ensure!(
            uow.set_tenant_status(tree.ids[t], TenantStatus::Blocked, now)
                .await?,
            "tenant {t} vanished"
        );
    }
    uow.commit().await?;
    Ok(())
}

/// The reference server: constant answers, no store, no credential check.
struct Constant {
    descendant: pb::IsDescendantResponse,
    status: pb::GetTenantStatusResponse,
}

#[tonic::async_trait]
impl TenantHierarchyService for Constant {
    async fn is_descendant(
        &self,
        _: Request<pb::IsDescendantRequest>,
    ) -> Result<Response<pb::IsDescendantResponse>, Status> {
        Ok(Response::new(self.descendant))
    }

    async fn get_tenant_status(
        &self,
        _: Request<pb::GetTenantStatusRequest>,
    ) -> Result<Response<pb::GetTenantStatusResponse>, Status> {
        Ok(Response::new(self.status.clone()))
    }
}

type Client = TenantHierarchyServiceClient<Channel>;

async fn channels(url: &str, n: usize) -> anyhow::Result<Vec<Client>> {
    Ok(crate::harness::connect(url, n)
        .await?
        .into_iter()
        .map(TenantHierarchyServiceClient::new)
        .collect())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rpc {
    IsDescendant,
    GetTenantStatus,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Self::IsDescendant => "IsDescendant",
            Self::GetTenantStatus => "GetTenantStatus",
        }
    }
}

/// The call's request, with the service credential.
fn with_credential<T>(message: T, credential: &MetadataValue<Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", credential.clone());
    request
}

/// Makes call `i` of the workload; whether its answer was the tree's.
async fn call(
    client: &mut Client,
    rpc: Rpc,
    work: &Workload,
    i: usize,
    credential: &MetadataValue<Ascii>,
) -> Result<bool, Status> {
    match rpc {
        Rpc::IsDescendant => {
            let (request, expected) = &work.descendant[i % work.descendant.len()];
            let answer = client
                .is_descendant(with_credential(request.clone(), credential))
                .await?;
            Ok(answer.get_ref().is_descendant == *expected)
        }
        Rpc::GetTenantStatus => {
            let (request, expected) = &work.status[i % work.status.len()];
            let answer = client
                .get_tenant_status(with_credential(request.clone(), credential))
                .await?;
            let a = answer.get_ref();
            Ok(a.status == expected.status
                && a.own_status == expected.own_status
                && a.blocked_by == expected.blocked_by)
        }
    }
}

struct Measured {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    wrong_answers: u64,
    errors: u64,
}

/// Runs `concurrency` callers, each sending its next call when its last is answered (closed
/// loop), for a warm-up plus `seconds`. Answers are checked against the tree when `check`.
async fn drive(
    clients: &[Client],
    rpc: Rpc,
    work: &Arc<Workload>,
    credential: &MetadataValue<Ascii>,
    check: bool,
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
        let (work, credential) = (work.clone(), credential.clone());
        let (wrong, errors) = (wrong.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = crate::harness::latencies();
            let mut i = worker.wrapping_mul(7919);
            loop {
                let sent = Instant::now();
                if sent >= stop {
                    break;
                }
                let answer = call(&mut client, rpc, &work, i, &credential).await;
                i = i.wrapping_add(1);
                let took = sent.elapsed();
                if sent < measure_from {
                    continue;
                }
                match answer {
                    Ok(right) if right || !check => {}
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
        wrong_answers: wrong.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// The run with the median throughput.
fn median(runs: Vec<Measured>) -> Measured {
    crate::harness::median(runs, |m| m.rps)
}

/// `iam-bench tenants`.
pub fn run(o: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(o.tenants >= 2, "--tenants must be at least 2");
    anyhow::ensure!(
        o.rounds >= 1 && o.concurrency >= 1 && o.connections >= 1 && o.duration >= 1,
        "--rounds, --concurrency, --connections and --duration must be at least 1"
    );
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.server_threads)
        .enable_all()
        .build()?;
    let clients: Runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .enable_all()
        .build()?;

    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut tree = Tree::shape(o.tenants);
    let blocked = tree.block(&mut rng);
    let work = Arc::new(Workload::new(&tree, &mut rng));
    let credential_secret = format!("tenants-bench-{}", uuid::Uuid::new_v4().simple());
    let credential: MetadataValue<Ascii> = format!("Bearer {credential_secret}")
        .parse()
        .context("credential metadata")?;

    let store_name = if o.database_url.is_some() {
        "PostgreSQL"
    } else {
        "in-memory store"
    };
    println!("{}", tree.describe());
    println!(
        "setting up: the service ({store_name}), seeding {} tenants in units of {BATCH}, the \
         constant-answer reference …",
        tree.len()
    );
    let (app, service, reference) = servers.block_on(async {
        let mut settings = iam_app::Settings::default();
        // Nothing here signs in; hashing cost is not what this measures.
        settings.password_hashing.memory_kib = 1024;
        settings.password_hashing.parallelism = 1;
        settings.grpc.service_tokens = vec![SecretString::from(credential_secret.clone())];
        if let Some(url) = &o.database_url {
            use base64::Engine as _;
            settings.database = Some(iam_app::settings::DatabaseSettings {
                url: SecretString::from(url.clone()),
                max_connections: o.max_connections,
                migrate_on_start: true,
                ..Default::default()
            });
            settings.master_key = Some(SecretString::from(
                base64::engine::general_purpose::STANDARD
                    .encode(uuid::Uuid::new_v4().as_bytes().repeat(2)),
            ));
        }
        settings.validate()?;
        let app =
            iam_app::wiring::build(&settings, Arc::new(iam_adapters_crypto::SystemClock)).await?;
        let began = Instant::now();
        seed(&*app.store, &tree, &blocked).await?;
        println!("seeded in {:.1} s", began.elapsed().as_secs_f64());
        let service = crate::harness::serve_on_loopback(app.grpc.clone()).await?;
        // The constant answers are the commonest real ones: true, and an active tenant.
        let reference = crate::harness::serve_on_loopback(tonic::service::Routes::new(
            TenantHierarchyServiceServer::new(Constant {
                descendant: pb::IsDescendantResponse {
                    is_descendant: true,
                },
                status: pb::GetTenantStatusResponse {
                    status: wire(false),
                    own_status: wire(false),
                    blocked_by: String::new(),
                },
            }),
        ))
        .await?;
        anyhow::Ok((app, service, reference))
    })?;

    // A sample checked call by call before any load.
    clients.block_on(async {
        let mut client = channels(&service, 1).await?.remove(0);
        for rpc in [Rpc::IsDescendant, Rpc::GetTenantStatus] {
            let mut wrong = 0;
            for k in 0..SAMPLE {
                let i = k.wrapping_mul(104_729);
                if !call(&mut client, rpc, &work, i, &credential)
                    .await
                    .with_context(|| format!("{} call {i}", rpc.name()))?
                {
                    wrong += 1;
                }
            }
            anyhow::ensure!(
                wrong == 0,
                "{wrong} of {SAMPLE} {} answers disagree with the tree",
                rpc.name()
            );
        }
        let trues = work.descendant.iter().filter(|(_, t)| *t).count();
        let blocked = work
            .status
            .iter()
            .filter(|(_, s)| s.status == wire(true))
            .count();
        println!(
            "sample of {SAMPLE} answers per RPC agrees with the tree; mix: IsDescendant {:.1}% \
             true, GetTenantStatus {:.1}% effectively blocked",
            trues as f64 * 100.0 / work.descendant.len() as f64,
            blocked as f64 * 100.0 / work.status.len() as f64
        );
        anyhow::Ok(())
    })?;

    println!(
        "\nTenantHierarchyService over gRPC on loopback: {} server threads, {} client threads, {} \
         HTTP/2 connections, {} calls in flight, {} s per run (+{} s warm-up)\n",
        o.server_threads,
        o.client_threads,
        o.connections,
        o.concurrency,
        o.duration,
        o.duration.div_ceil(3)
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
    let run = |url: &str, rpc: Rpc, check: bool| -> anyhow::Result<Measured> {
        let c = clients.block_on(channels(url, o.connections))?;
        Ok(clients.block_on(drive(
            &c,
            rpc,
            &work,
            &credential,
            check,
            o.concurrency,
            o.duration,
        )))
    };

    let rpcs = [Rpc::IsDescendant, Rpc::GetTenantStatus];
    let mut references: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    let mut measured: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    // Every service run counts, not only the medians.
    let mut bad = 0;
    for round in 1..=o.rounds {
        println!("round {round} of {}", o.rounds);
        for (k, rpc) in rpcs.into_iter().enumerate() {
            let m = run(&reference, rpc, false)?;
            report(&format!("  reference: {}, constant answer", rpc.name()), &m);
            references[k].push(m);
            let m = run(&service, rpc, true)?;
            report(&format!("  {}", rpc.name()), &m);
            bad += m.wrong_answers + m.errors;
            measured[k].push(m);
        }
    }

    println!("\nmedians of {} rounds ({store_name})", o.rounds);
    println!(
        "{:<52} {:>10} {:>8} {:>8} {:>12}",
        "run", "req/s", "p50 µs", "p99 µs", "of reference"
    );
    for (k, rpc) in rpcs.into_iter().enumerate() {
        let reference = median(std::mem::take(&mut references[k]));
        let service = median(std::mem::take(&mut measured[k]));
        println!(
            "{:<52} {:>10.0} {:>8} {:>8}",
            format!("reference: {}, constant answer", rpc.name()),
            reference.rps,
            reference.p50_us,
            reference.p99_us
        );
        println!(
            "{:<52} {:>10.0} {:>8} {:>8} {:>11.1}%",
            format!("{} on {} tenants", rpc.name(), tree.len()),
            service.rps,
            service.p50_us,
            service.p99_us,
            service.rps * 100.0 / reference.rps.max(f64::MIN_POSITIVE)
        );
    }
    drop(app);
    anyhow::ensure!(
        bad == 0,
        "{bad} service calls were answered wrongly or failed"
    );
    Ok(())
}
