//! What the gRPC load generators share: serving routes on loopback, latency histograms and
//! their merge.

use hdrhistogram::Histogram;

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
