//! The HTTP layer: one hyper HTTP/1.1 connection per client, routing, the
//! token check, body limits, and JSON in and out. Handlers run the host's
//! blocking calls on tokio's blocking pool.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::TcpStream;

use leat_api as api;
use leat_control::Control as Host;

use super::{ApiError, MAX_BODY_BYTES};

/// The longest a read may wait for new events.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// How often a waiting read looks again, at most: a wait holds no thread,
/// only a timer, between looks.
const MAX_POLL: Duration = Duration::from_millis(50);

/// The HTTP layer's own counters, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub requests: std::sync::atomic::AtomicU64,
    pub unauthorized: std::sync::atomic::AtomicU64,
}

pub(crate) struct State {
    pub host: Arc<Host>,
    pub metrics: Arc<Metrics>,
    pub token: String,
    pub open_reads: bool,
    pub allowed_hosts: Vec<String>,
}

/// Whether the request's `Host` names this server: an IP address, or
/// `localhost`, or one of `allowed` (with any port). A browser page of
/// another site that points its name at this server sends that name: refused.
fn host_allowed(allowed: &[String], req: &Request<Incoming>) -> bool {
    let Some(host) = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
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

pub(crate) async fn serve_connection(state: Arc<State>, stream: TcpStream) {
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // A client may shut its side down once its request is sent (`nc -N`
        // does): answer it all the same (the fuzz target sends that way).
        .half_close(true)
        .max_buf_size(1 << 20)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!("connection ended: {e}");
    }
}

fn respond(status: u16, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

fn json(status: u16, value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => respond(status, "application/json", Bytes::from(body)),
        Err(e) => error(&ApiError::internal(format!("encoding the answer: {e}"))),
    }
}

fn error(e: &ApiError) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(&api::ErrorBody {
        error: e.message.clone(),
    })
    .unwrap_or_else(|_| b"{\"error\":\"internal error\"}".to_vec());
    respond(e.status, "application/json", Bytes::from(body))
}

/// Runs a blocking host call on the blocking pool.
async fn blocking<T: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&Host) -> Result<T, leat_control::ControlError> + Send + 'static,
) -> Result<T, ApiError> {
    let host = state.host.clone();
    Ok(tokio::task::spawn_blocking(move || f(&host))
        .await
        .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))??)
}

async fn body_bytes(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::new(
            413,
            format!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
        ));
    }
    match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            413,
            format!("the request body is over the limit of {MAX_BODY_BYTES} bytes"),
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

async fn body_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let bytes = body_bytes(req).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON here: {e}")))
}

/// Reads up to `max` events from `from`; while there are none, looks again
/// until `wait` has passed. Each look is a short blocking read; between
/// looks the request holds only a timer, so many waiting readers cannot
/// starve the blocking pool that deploys and shutdown need.
async fn read_waiting(
    state: &Arc<State>,
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

fn authorized(state: &State, req: &Request<Incoming>) -> bool {
    let Some(value) = req.headers().get(hyper::header::AUTHORIZATION) else {
        return false;
    };
    let Some(given) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return false;
    };
    let expected = state.token.as_bytes();
    // Compare in constant time for equal lengths.
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Decodes `%XX` and `+` in a query component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(
            q.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (decode(k), decode(v)),
                    None => (decode(p), String::new()),
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn number<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                ApiError::bad_request(format!("query parameter `{key}`: `{v}` is not a number"))
            }),
        }
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let response = match route(&state, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status == 401 {
                state.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
            }
            error(&e)
        }
    };
    tracing::info!(
        "{method} {path} -> {} in {:?}",
        response.status().as_u16(),
        started.elapsed()
    );
    response
}

async fn route(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    if !host_allowed(&state.allowed_hosts, &req) {
        return Err(ApiError::new(
            421,
            "this server does not answer to that Host name: use its IP address or \
             localhost, or start it with --allow-host NAME",
        ));
    }
    let reading = method == Method::GET || method == Method::HEAD;
    let open = segs == ["v1", "health"] || reading && state.open_reads;
    if !open && !authorized(state, &req) {
        return Err(ApiError::new(
            401,
            "missing or wrong token: pass the server's token with --token or LEAT_TOKEN \
             (header `Authorization: Bearer TOKEN`; `leat serve --open-reads` answers reads without it)",
        ));
    }
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["v1", "health"]) => {
            blocking(state, |h| h.log().health()).await?;
            Ok(json(200, &serde_json::json!({"status": "ok"})))
        }
        (Method::GET, ["metrics"]) => {
            let metrics = state.metrics.clone();
            let text = blocking(state, move |h| {
                h.metrics_text(
                    metrics.requests.load(Ordering::Relaxed),
                    metrics.unauthorized.load(Ordering::Relaxed),
                )
            })
            .await?;
            Ok(respond(200, "text/plain; version=0.0.4", Bytes::from(text)))
        }
        (Method::GET, ["v1", "status"]) => Ok(json(200, &blocking(state, |h| h.status()).await?)),
        // ---- streams
        (Method::GET, ["v1", "streams"]) => {
            Ok(json(200, &blocking(state, |h| h.log().streams()).await?))
        }
        (Method::POST, ["v1", "streams"]) => {
            let body: api::CreateStream = body_json(req).await?;
            Ok(json(
                201,
                &blocking(state, move |h| h.log().create_stream(body)).await?,
            ))
        }
        (Method::GET, ["v1", "streams", name]) => {
            let name = name.to_string();
            Ok(json(
                200,
                &blocking(state, move |h| h.log().stream(&name)).await?,
            ))
        }
        (Method::DELETE, ["v1", "streams", name]) => {
            let name = name.to_string();
            Ok(json(
                200,
                &blocking(state, move |h| h.delete_stream(&name)).await?,
            ))
        }
        (Method::POST, ["v1", "streams", name, "events"]) => {
            let name = name.to_string();
            let body: api::Produce = body_json(req).await?;
            Ok(json(
                200,
                &blocking(state, move |h| h.log().produce(&name, body)).await?,
            ))
        }
        (Method::GET, ["v1", "streams", name, "events"]) => {
            let name = name.to_string();
            let partition = query.number("partition", 0u32)?;
            let from = query.number("from", 0u64)?;
            let max = query.number("max", 1000usize)?;
            let wait = Duration::from_millis(query.number("wait_ms", 0u64)?).min(MAX_WAIT);
            Ok(json(
                200,
                &read_waiting(state, name, partition, from, max, wait).await?,
            ))
        }
        (Method::GET, ["v1", "streams", name, "positions"]) => {
            let name = name.to_string();
            let from: api::Position = query
                .get("from")
                .unwrap_or("beginning")
                .parse()
                .map_err(|e: api::ParseError| ApiError::bad_request(e.to_string()))?;
            let group = query.get("group").map(str::to_string);
            Ok(json(
                200,
                &blocking(state, move |h| {
                    h.log().positions(&name, from, group.as_deref())
                })
                .await?,
            ))
        }
        (Method::POST, ["v1", "groups", group, "offsets"]) => {
            let group = group.to_string();
            let body: api::CommitOffset = body_json(req).await?;
            Ok(json(
                200,
                &blocking(state, move |h| h.commit_offset(&group, body)).await?,
            ))
        }
        // ---- topologies
        (Method::GET, ["v1", "topologies"]) => {
            Ok(json(200, &blocking(state, |h| h.topologies()).await?))
        }
        (Method::POST, ["v1", "topologies"]) => {
            let body: api::ApplyTopology = body_json(req).await?;
            Ok(json(
                200,
                &blocking(state, move |h| h.apply_topology(body)).await?,
            ))
        }
        (Method::GET, ["v1", "topologies", name]) => {
            let name = name.to_string();
            Ok(json(
                200,
                &blocking(state, move |h| h.topology(&name)).await?,
            ))
        }
        // ---- components and processors
        (Method::POST, ["v1", "components"]) => {
            let bytes = body_bytes(req).await?;
            Ok(json(
                201,
                &blocking(state, move |h| h.upload(&bytes)).await?,
            ))
        }
        (Method::GET, ["v1", "processors"]) => {
            Ok(json(200, &blocking(state, |h| h.processors()).await?))
        }
        (Method::POST, ["v1", "processors"]) => {
            let body: api::Deploy = body_json(req).await?;
            let deployed = blocking(state, move |h| h.deploy(body)).await?;
            let status = if deployed.action == api::Action::Created {
                201
            } else {
                200
            };
            Ok(json(status, &deployed))
        }
        (Method::GET, ["v1", "processors", name]) => {
            let name = name.to_string();
            Ok(json(
                200,
                &blocking(state, move |h| h.processor(&name)).await?,
            ))
        }
        (Method::DELETE, ["v1", "processors", name]) => {
            let name = name.to_string();
            Ok(json(
                200,
                &blocking(state, move |h| h.undeploy(&name)).await?,
            ))
        }
        (Method::POST, ["v1", "processors", name, action]) => {
            let name = name.to_string();
            let done = match *action {
                "scale" => {
                    let body: api::Scale = body_json(req).await?;
                    blocking(state, move |h| h.scale(&name, body.instances)).await?
                }
                "reset" => {
                    let body: api::Reset = body_json(req).await?;
                    blocking(state, move |h| h.reset(&name, body.to)).await?
                }
                "pause" => blocking(state, move |h| h.pause(&name)).await?,
                "resume" => blocking(state, move |h| h.resume(&name)).await?,
                other => {
                    return Err(ApiError::not_found(format!(
                        "unknown processor action `{other}`: use scale, reset, pause or resume"
                    )))
                }
            };
            Ok(json(200, &done))
        }
        _ => Err(ApiError::not_found(format!("no route for {method} {path}"))),
    }
}
