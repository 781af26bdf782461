//! `leat serve`: the long-running host with its HTTP/1.1 JSON API.
//!
//! Every call that changes something needs the server's token
//! (`Authorization: Bearer TOKEN`); reads do not. Deployed processors are
//! kept in the data directory (`processors/NAME/spec.json`, with their
//! components in `components/ID.wasm`) and restarted when the server starts.
//! On shutdown every deployment is paused, which commits its in-flight
//! batches, so a restart resumes exactly where it stopped.
//!
//! Routes (bodies are JSON, see [`api`]):
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /v1/health` | `{"status":"ok"}` |
//! | `GET /v1/status` | streams and processors with offsets, lag, rates |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /v1/streams`, `POST /v1/streams` | list, create |
//! | `GET /v1/streams/NAME`, `DELETE /v1/streams/NAME` | describe, delete |
//! | `POST /v1/streams/NAME/events` | append ([`leat_api::Produce`]) |
//! | `GET /v1/streams/NAME/events?partition=P&from=O&max=N&wait_ms=W` | read one partition |
//! | `GET /v1/streams/NAME/positions?from=F&group=G` | start offsets per partition |
//! | `GET /v1/streams/NAME/search?key=K&max=N` | the latest events of a key |
//! | `POST /v1/groups/GROUP/offsets` | commit a consumer group's offset |
//! | `GET /v1/queues/GROUP`, `PUT /v1/queues/GROUP` | a queue group's status; changes to its settings ([`leat_api::QueueSettingsChange`]: what a request leaves out stays) |
//! | `POST /v1/queues/GROUP/acquire` | lock events, long-polling up to `wait_ms` ([`leat_api::QueueAcquire`]) |
//! | `POST /v1/queues/GROUP/{accept,release,reject,renew}` | settle or renew by lock ([`leat_api::QueueLocks`]) |
//! | `POST /v1/queues/GROUP/reset` | move a queue group ([`leat_api::QueueReset`]) |
//! | `POST /v1/components` | upload a component (binary body) |
//! | `GET /v1/processors`, `POST /v1/processors` | list, deploy ([`leat_api::Deploy`]) |
//! | `GET /v1/processors/NAME`, `DELETE /v1/processors/NAME` | status, undeploy |
//! | `POST /v1/processors/NAME/{scale,pause,resume,reset}` | change a deployment |
//! | `GET /v1/topologies`, `POST /v1/topologies` | list, apply ([`leat_api::ApplyTopology`]) |
//! | `GET /v1/topologies/NAME` | a topology's source |
//! | `GET /v1/processors/NAME/state?key=K` or `?prefix=P` (`&partition=I&limit=N`) | committed state |
//! | `GET /`, `GET /console/*` | the web console's files (no token: they hold no data) |

mod confluent;
mod console;
mod error;
mod http;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use leat_control::{Control, ControlMetrics};

/// The largest request body accepted (the API's limit, which clients check too).
pub use leat_api::MAX_BODY_BYTES;

/// How `leat serve` runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The token every call must carry (but `/v1/health`).
    pub token: String,
    /// Whether reads (GET) are answered without the token.
    pub open_reads: bool,
    /// Host names accepted in the `Host` header besides IP addresses and
    /// `localhost`: a page of another site that resolves its name to this
    /// server (DNS rebinding) is refused.
    pub allowed_hosts: Vec<String>,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
}

/// Serves the API of `host` (a [`Control`] opened on the data directory,
/// which has restored its processors) on `listener` until `shutdown`
/// completes, then pauses every deployment (committing in-flight batches)
/// and returns.
///
/// Blocking work runs on tokio's blocking pool, so this must run inside a
/// multi-threaded tokio runtime.
pub async fn serve(
    config: ServerConfig,
    host: Arc<Control>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let requests = Counter::default();
    let unauthorized = Counter::default();
    let mut registry = Registry::default();
    // Counters are registered without `_total`: the encoder adds it.
    registry.register(
        "leat_http_requests",
        "HTTP requests served",
        requests.clone(),
    );
    registry.register(
        "leat_http_unauthorized",
        "Requests refused for a missing or wrong token",
        unauthorized.clone(),
    );
    registry.register_collector(Box::new(ControlMetrics::new(host.clone())));
    let router = http::router(Arc::new(http::ServerState {
        host: host.clone(),
        registry: Arc::new(registry),
        requests,
        unauthorized,
        token: config.token,
        open_reads: config.open_reads,
        allowed_hosts: config.allowed_hosts,
    }));
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let sampler = {
        let host = host.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let host = host.clone();
                let _ = tokio::task::spawn_blocking(move || host.sample()).await;
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        // At the cap, stop accepting: further clients wait in the backlog.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!("connection from {peer}");
                    let router = router.clone();
                    tokio::spawn(async move {
                        http::serve_connection(router, stream).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    sampler.abort();
    drop(listener);
    tracing::info!("shutting down: stopping processors at a batch boundary");
    tokio::task::spawn_blocking(move || host.shutdown())
        .await
        .map_err(std::io::Error::other)?;
    Ok(())
}
