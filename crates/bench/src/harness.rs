//! What the gRPC load generators share: serving routes on loopback, client channels, latency
//! histograms and their merge, and the median run.

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tonic::transport::Channel;

/// Serves `routes` on a fresh loopback port exactly as the binary serves gRPC; the base URL.
pub async fn serve_on_loopback(routes: tonic::service::Routes) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(iam_app::wiring::serve_grpc(
        routes,
        listener,
        None,
        std::future::pending(),
    ));
    Ok(format!("http://{addr}"))
}

/// An empty latency histogram in microseconds, 1 µs to 60 s, three significant digits.
pub fn latencies() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// The callers' histograms, merged (a caller that panicked contributes nothing).
pub async fn merged(tasks: Vec<tokio::task::JoinHandle<Histogram<u64>>>) -> Histogram<u64> {
    let mut all = latencies();
    for task in tasks {
        if let Ok(h) = task.await {
            let _ = all.add(h);
        }
    }
    all
}

/// `n` separate HTTP/2 connections to `url`, so that calls spread over them.
pub async fn connect(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            Channel::from_shared(url.to_owned())?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to {url}"))?,
        );
    }
    Ok(out)
}

/// The run of median `rate` out of `runs` (at least one).
pub fn median<T>(mut runs: Vec<T>, rate: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|x, y| rate(x).total_cmp(&rate(y)));
    let mid = runs.len() / 2;
    runs.swap_remove(mid)
}
