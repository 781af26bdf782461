//! The HTTP layer: an axum [`Router`] of the API's routes, served on each
//! connection by hyper's HTTP/1.1 builder; a middleware for the Host and
//! token checks, the request counters and the log line; extractors that
//! answer bad paths, queries and bodies with the API's JSON errors.
//! Handlers run the host's blocking calls on tokio's blocking pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::net::TcpStream;

use leat_api as api;
use leat_control::Control as Host;

use leat_api::MAX_BODY_BYTES;

use crate::error::ApiError;

/// The longest a read may wait for new events.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting read looks again, at most: a wait holds no thread,
/// only a timer, between looks.
const MAX_POLL: Duration = Duration::from_millis(50);

pub(crate) struct ServerState {
    pub host: Arc<Host>,
    /// The host's metrics and the counters below, for `/metrics`.
    pub registry: Arc<Registry>,
    pub requests: Counter,
    pub unauthorized: Counter,
    pub token: String,
    pub open_reads: bool,
    pub allowed_hosts: Vec<String>,
}

type Shared = State<Arc<ServerState>>;

/// The API's routes (see the table in the crate's documentation), behind
/// the checks of [`guard`]. Any other path or method: 404.
pub(crate) fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/streams", get(streams).post(create_stream))
        .route("/v1/streams/{name}", get(stream).delete(delete_stream))
        .route("/v1/streams/{name}/events", get(read).post(produce))
        .route("/v1/streams/{name}/positions", get(positions))
        .route("/v1/streams/{name}/search", get(search))
        .route("/v1/streams/{name}/schema", get(schema).put(set_schema))
        .route("/v1/streams/{name}/schema/check", post(check_schema))
        .route("/v1/streams/{name}/schema/history", get(schema_history))
        .route(
            "/v1/streams/{name}/schema/compatibility",
            put(set_compatibility),
        )
        .route("/v1/groups/{group}/offsets", post(commit_offset))
        .route("/v1/queues/{group}", get(queue_status).put(queue_configure))
        .route("/v1/queues/{group}/{action}", post(queue_action))
        .route("/v1/topologies", get(topologies).post(apply_topology))
        .route("/v1/topologies/{name}", get(topology))
        .route("/v1/components", post(upload))
        .route("/v1/processors", get(processors).post(deploy))
        .route("/v1/processors/{name}", get(processor).delete(undeploy))
        .route("/v1/processors/{name}/{action}", post(change))
        .route("/v1/processors/{name}/state", get(processor_state))
        // The web console's files.
        .merge(crate::console::routes())
        // Confluent's Schema Registry API, for its clients and serializers.
        .merge(crate::confluent::routes().with_state(state.host.clone()))
        .fallback(no_route)
        .method_not_allowed_fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

pub(crate) async fn serve_connection(router: Router, stream: TcpStream) {
    let conn = hyper::server::conn::http1::Builder::new()
        // A client may shut its side down once its request is sent (`nc -N`
        // does): answer it all the same (the fuzz target sends that way).
        .half_close(true)
        .max_buf_size(1 << 20)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
    if let Err(e) = conn.await {
        tracing::debug!("connection ended: {e}");
    }
}

/// Whether the request's `Host` names this server: an IP address, or
/// `localhost`, or one of `allowed` (with any port). A browser page of
/// another site that points its name at this server sends that name: refused.
fn host_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/1.0 without a Host header: no browser sends that.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn authorized(token: &str, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return false;
    };
    let Some(given) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return false;
    };
    let expected = token.as_bytes();
    // Compare in constant time for equal lengths.
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The Host check, then the token (but for `/v1/health`, and for reads
/// with `open_reads`), around every request, routed or not; counts it and
/// logs one line.
async fn guard(State(state): Shared, req: Request, next: Next) -> Response {
    state.requests.inc();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let reading = method == Method::GET || method == Method::HEAD;
    let open =
        path == "/v1/health" || reading && (state.open_reads || crate::console::is_asset(&path));
    let response = if !host_allowed(&state.allowed_hosts, req.headers()) {
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "this server does not answer to that Host name: use its IP address or \
             localhost, or start it with --allow-host NAME",
        )
        .into_response()
    } else if !open && !authorized(&state.token, req.headers()) {
        state.unauthorized.inc();
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: pass the server's token with --token or LEAT_TOKEN \
             (header `Authorization: Bearer TOKEN`; `leat serve --open-reads` answers reads without it)",
        )
        .into_response()
    } else {
        next.run(req).await
    };
    tracing::info!(
        "{method} {path} -> {} in {:?}",
        response.status().as_u16(),
        started.elapsed()
    );
    response
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

// ---- extractors whose rejections are the API's JSON errors

/// Path parameters, percent-decoded.
struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Params(v)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// The query string's parameters.
struct QueryParams<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(QueryParams(v)),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
    )
}

/// The request body, whole, at most [`MAX_BODY_BYTES`] ([`DefaultBodyLimit`]);
/// a larger declared length is refused before any of it is read.
struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
            Err(e) => Err(ApiError::bad_request(format!(
                "cannot read the request body: {}",
                e.body_text()
            ))),
        }
    }
}

/// A JSON body, whatever its `Content-Type`.
struct JsonBody<T>(T);

/// Parses a JSON body with `serde_json` alone; only a body that fails is
/// parsed again by axum's `Json`, whose error names the failing field's path.
/// That path tracking cost about a third of the server's CPU in `leat
/// produce` (BENCHMARKS.md, issue 19), for an error that most bodies never
/// have.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    match Json::<T>::from_bytes(bytes) {
        Ok(Json(v)) => Ok(v),
        // "Failed to parse the request body as JSON: ..." and the like.
        Err(e) => Err(ApiError::bad_request(e.body_text())),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Body(bytes) = Body::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

// ---- handlers

/// Runs a blocking host call on the blocking pool.
async fn blocking<T: Send + 'static>(
    state: &Arc<ServerState>,
    f: impl FnOnce(&Host) -> Result<T, leat_control::ControlError> + Send + 'static,
) -> Result<T, ApiError> {
    let host = state.host.clone();
    Ok(tokio::task::spawn_blocking(move || f(&host))
        .await
        .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))??)
}

type Answer<T> = Result<Json<T>, ApiError>;

async fn health(State(state): Shared) -> Answer<serde_json::Value> {
    blocking(&state, |h| h.log().health()).await?;
    Ok(Json(serde_json::json!({"status": "ok"})))
}

/// The registry in the Prometheus text format; encoding it reads the log
/// and the processors, so it runs on the blocking pool.
async fn metrics(State(state): Shared) -> Result<Response, ApiError> {
    let registry = state.registry.clone();
    let text = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).map(|()| text)
    })
    .await
    .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
    .map_err(|_| ApiError::internal("cannot read the metrics: see the server's log"))?;
    Ok(([(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], text).into_response())
}

async fn status(State(state): Shared) -> Answer<api::StatusView> {
    Ok(Json(blocking(&state, |h| h.status()).await?))
}

// ---- streams

async fn streams(State(state): Shared) -> Answer<Vec<api::StreamView>> {
    Ok(Json(blocking(&state, |h| h.log().streams()).await?))
}

async fn create_stream(
    State(state): Shared,
    JsonBody(body): JsonBody<api::CreateStream>,
) -> Result<(StatusCode, Json<api::StreamView>), ApiError> {
    let created = blocking(&state, move |h| h.log().create_stream(body)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn stream(State(state): Shared, Params(name): Params<String>) -> Answer<api::StreamView> {
    Ok(Json(
        blocking(&state, move |h| h.log().stream(&name)).await?,
    ))
}

async fn delete_stream(State(state): Shared, Params(name): Params<String>) -> Answer<api::Done> {
    Ok(Json(
        blocking(&state, move |h| h.delete_stream(&name)).await?,
    ))
}

/// `POST /v1/streams/NAME/events`: a JSON [`api::Produce`], or, with
/// `Content-Type: text/plain`, one value per line (see
/// [`leat_control::Log::produce_lines`]), which needs no JSON on either
/// side.
async fn produce(
    State(state): Shared,
    Params(name): Params<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Answer<api::Produced> {
    let text = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let produced = if text {
        blocking(&state, move |h| h.log().produce_lines(&name, body)).await?
    } else {
        let req: api::Produce = parse_json(&body)?;
        blocking(&state, move |h| h.log().produce(&name, req)).await?
    };
    Ok(Json(produced))
}

/// `GET /v1/streams/NAME/schema[/history]`'s query.
#[derive(Deserialize)]
struct SchemaQuery {
    #[serde(default)]
    key: bool,
    version: Option<String>,
}

async fn schema(
    State(state): Shared,
    Params(name): Params<String>,
    QueryParams(q): QueryParams<SchemaQuery>,
) -> Answer<api::SchemaVersion> {
    let version = match q.version.as_deref() {
        None => api::VersionRef::Latest,
        Some(v) => v.parse().map_err(ApiError::bad_request)?,
    };
    Ok(Json(
        blocking(&state, move |h| h.log().schema(&name, q.key, version)).await?,
    ))
}

async fn schema_history(
    State(state): Shared,
    Params(name): Params<String>,
    QueryParams(q): QueryParams<SchemaQuery>,
) -> Answer<api::SchemaHistory> {
    Ok(Json(
        blocking(&state, move |h| h.log().schema_history(&name, q.key)).await?,
    ))
}

async fn set_schema(
    State(state): Shared,
    Params(name): Params<String>,
    JsonBody(body): JsonBody<api::SetSchema>,
) -> Answer<api::SchemaSet> {
    Ok(Json(
        blocking(&state, move |h| h.log().set_schema(&name, body)).await?,
    ))
}

async fn check_schema(
    State(state): Shared,
    Params(name): Params<String>,
    JsonBody(body): JsonBody<api::SetSchema>,
) -> Answer<api::SchemaCheck> {
    Ok(Json(
        blocking(&state, move |h| h.log().check_schema(&name, body)).await?,
    ))
}

async fn set_compatibility(
    State(state): Shared,
    Params(name): Params<String>,
    JsonBody(body): JsonBody<api::SetCompatibility>,
) -> Answer<api::Done> {
    Ok(Json(
        blocking(&state, move |h| h.log().set_compatibility(&name, body)).await?,
    ))
}

/// `GET /v1/streams/NAME/events`'s query.
#[derive(Deserialize)]
#[serde(default)]
struct ReadQuery {
    partition: u32,
    from: u64,
    max: usize,
    wait_ms: u64,
}

impl Default for ReadQuery {
    fn default() -> Self {
        ReadQuery {
            partition: 0,
            from: 0,
            max: 1000,
            wait_ms: 0,
        }
    }
}

async fn read(
    State(state): Shared,
    Params(name): Params<String>,
    QueryParams(q): QueryParams<ReadQuery>,
) -> Answer<api::ReadView> {
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    Ok(Json(
        read_waiting(&state, name, q.partition, q.from, q.max, wait).await?,
    ))
}

/// Reads up to `max` events from `from`; while there are none, looks again
/// until `wait` has passed. Each look is a short blocking read; between
/// looks the request holds only a timer, so many waiting readers cannot
/// starve the blocking pool that deploys and shutdown need.
async fn read_waiting(
    state: &Arc<ServerState>,
    name: String,
    partition: u32,
    from: u64,
    max: usize,
    wait: Duration,
) -> Result<api::ReadView, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    loop {
        let name = name.clone();
        let read = blocking(state, move |h| h.log().read(&name, partition, from, max)).await?;
        let now = tokio::time::Instant::now();
        if !read.events.is_empty() || now >= deadline {
            return Ok(read);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// `GET /v1/streams/NAME/search`'s query.
#[derive(Deserialize)]
struct SearchQuery {
    key: String,
    #[serde(default = "search_max")]
    max: usize,
}

fn search_max() -> usize {
    50
}

async fn search(
    State(state): Shared,
    Params(name): Params<String>,
    QueryParams(q): QueryParams<SearchQuery>,
) -> Answer<api::SearchView> {
    Ok(Json(
        blocking(&state, move |h| h.log().search(&name, &q.key, q.max)).await?,
    ))
}

/// `GET /v1/streams/NAME/positions`'s query.
#[derive(Deserialize)]
struct PositionsQuery {
    #[serde(default)]
    from: api::Position,
    group: Option<String>,
}

async fn positions(
    State(state): Shared,
    Params(name): Params<String>,
    QueryParams(q): QueryParams<PositionsQuery>,
) -> Answer<api::Positions> {
    Ok(Json(
        blocking(&state, move |h| {
            h.log().positions(&name, q.from, q.group.as_deref())
        })
        .await?,
    ))
}

async fn commit_offset(
    State(state): Shared,
    Params(group): Params<String>,
    JsonBody(body): JsonBody<api::CommitOffset>,
) -> Answer<api::Done> {
    Ok(Json(
        blocking(&state, move |h| h.commit_offset(&group, body)).await?,
    ))
}

// ---- topologies

async fn topologies(State(state): Shared) -> Answer<Vec<String>> {
    Ok(Json(blocking(&state, |h| h.topologies()).await?))
}

async fn apply_topology(
    State(state): Shared,
    JsonBody(body): JsonBody<api::ApplyTopology>,
) -> Answer<api::Applied> {
    Ok(Json(
        blocking(&state, move |h| h.apply_topology(body)).await?,
    ))
}

async fn topology(
    State(state): Shared,
    Params(name): Params<String>,
) -> Answer<api::StoredTopology> {
    Ok(Json(blocking(&state, move |h| h.topology(&name)).await?))
}

// ---- components and processors

async fn upload(
    State(state): Shared,
    Body(bytes): Body,
) -> Result<(StatusCode, Json<api::Uploaded>), ApiError> {
    let uploaded = blocking(&state, move |h| h.upload(&bytes)).await?;
    Ok((StatusCode::CREATED, Json(uploaded)))
}

async fn processors(State(state): Shared) -> Answer<Vec<api::ProcessorView>> {
    Ok(Json(blocking(&state, |h| h.processors()).await?))
}

async fn deploy(
    State(state): Shared,
    JsonBody(body): JsonBody<api::Deploy>,
) -> Result<(StatusCode, Json<api::Deployed>), ApiError> {
    let deployed = blocking(&state, move |h| h.deploy(body)).await?;
    let status = if deployed.action == api::Action::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(deployed)))
}

async fn processor(
    State(state): Shared,
    Params(name): Params<String>,
) -> Answer<api::ProcessorView> {
    Ok(Json(blocking(&state, move |h| h.processor(&name)).await?))
}

async fn undeploy(State(state): Shared, Params(name): Params<String>) -> Answer<api::Done> {
    Ok(Json(blocking(&state, move |h| h.undeploy(&name)).await?))
}

/// `POST /v1/processors/NAME/{scale,pause,resume,reset}`.
async fn change(
    State(state): Shared,
    Params((name, action)): Params<(String, String)>,
    Body(body): Body,
) -> Answer<api::Done> {
    let done = match action.as_str() {
        "scale" => {
            let body: api::Scale = parse_json(&body)?;
            blocking(&state, move |h| h.scale(&name, body.instances)).await?
        }
        "reset" => {
            let body: api::Reset = parse_json(&body)?;
            blocking(&state, move |h| h.reset(&name, body.to)).await?
        }
        "pause" => blocking(&state, move |h| h.pause(&name)).await?,
        "resume" => blocking(&state, move |h| h.resume(&name)).await?,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown processor action `{other}`: use scale, reset, pause or resume"
            )))
        }
    };
    Ok(Json(done))
}

// ---- queues

async fn queue_status(
    State(state): Shared,
    Params(group): Params<String>,
) -> Answer<api::QueueStatusView> {
    Ok(Json(
        blocking(&state, move |h| h.log().queue_status(&group)).await?,
    ))
}

async fn queue_configure(
    State(state): Shared,
    Params(group): Params<String>,
    JsonBody(body): JsonBody<api::QueueSettingsChange>,
) -> Answer<api::Done> {
    Ok(Json(
        blocking(&state, move |h| h.log().queue_configure(&group, body)).await?,
    ))
}

/// `acquire`, `reset`, or a [`api::QueueAction`] on locks.
async fn queue_action(
    State(state): Shared,
    Params((group, action)): Params<(String, String)>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    match action.as_str() {
        "acquire" => {
            let body: api::QueueAcquire = parse_json(&body)?;
            Ok(Json(queue_acquire(&state, group, body).await?).into_response())
        }
        "reset" => {
            let body: api::QueueReset = parse_json(&body)?;
            let done = blocking(&state, move |h| h.log().queue_reset(&group, &body)).await?;
            Ok(Json(done).into_response())
        }
        other => {
            let action: api::QueueAction = other.parse().map_err(|_| {
                ApiError::not_found(format!(
                    "unknown queue action `{other}`: use acquire, accept, release, reject, renew or reset"
                ))
            })?;
            let body: api::QueueLocks = parse_json(&body)?;
            let done = blocking(&state, move |h| h.log().queue_act(&group, action, &body)).await?;
            Ok(Json(done).into_response())
        }
    }
}

/// Acquires; while nothing is available, waits up to `wait_ms` (at most
/// [`MAX_WAIT`]) for the broker's notification of an append or a release,
/// or for the first lock to expire, and acquires again. Between tries the
/// request holds no thread, only the broker's waker and a timer.
async fn queue_acquire(
    state: &Arc<ServerState>,
    group: String,
    body: api::QueueAcquire,
) -> Result<api::QueueAcquired, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(body.wait_ms).min(MAX_WAIT);
    let now_only = api::QueueAcquire { wait_ms: 0, ..body };
    loop {
        let (g, req) = (group.clone(), now_only.clone());
        let got = blocking(state, move |h| h.log().queue_acquire(&g, &req)).await?;
        if !got.events.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(got);
        }
        let (arrival, expiry) = state.host.log().queue_arrival(&group, &now_only.stream)?;
        let until = match expiry {
            Some(e) => deadline.min(tokio::time::Instant::now() + e),
            None => deadline,
        };
        // Timing out is one of the ways the wait ends, not a failure.
        let _ = tokio::time::timeout_at(until, arrival).await;
    }
}

/// `GET /v1/processors/NAME/state`'s query: `key` or `prefix`.
#[derive(Deserialize)]
struct StateParams {
    key: Option<String>,
    prefix: Option<String>,
    partition: Option<u32>,
    limit: Option<usize>,
}

/// A processor's committed state, by key or by key prefix.
async fn processor_state(
    State(state): Shared,
    Params(name): Params<String>,
    QueryParams(q): QueryParams<StateParams>,
) -> Answer<api::StateView> {
    let lookup = match (q.key, q.prefix) {
        (Some(key), None) => api::StateLookup::Key(key),
        (None, Some(prefix)) => api::StateLookup::Prefix(prefix),
        _ => {
            return Err(ApiError::bad_request(
                "give one of `key=KEY` (one entry) or `prefix=PREFIX` (the entries under it)",
            ))
        }
    };
    let query = api::StateQuery {
        lookup,
        partition: q.partition,
        limit: q.limit.unwrap_or(100),
    };
    Ok(Json(
        blocking(&state, move |h| h.log().state(&name, &query)).await?,
    ))
}
