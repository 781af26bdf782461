//! [`Client`]: makes a deployment's calls, holding them to its origins and
//! limits (the guarantees are in the crate's documentation).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::{CallLimits, Origin, IDEMPOTENCY_HEADER};

/// An HTTP method a guest may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl Method {
    fn as_http(self) -> ureq::http::Method {
        use ureq::http::Method as M;
        match self {
            Method::Get => M::GET,
            Method::Head => M::HEAD,
            Method::Post => M::POST,
            Method::Put => M::PUT,
            Method::Patch => M::PATCH,
            Method::Delete => M::DELETE,
        }
    }
}

/// A request a guest makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// An absolute URL of a declared origin.
    pub url: String,
    /// Header names and values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body; empty sends none.
    pub body: Vec<u8>,
}

/// What the service answered: any status, `3xx` included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, at most `CallLimits::max_response_bytes`.
    pub body: Vec<u8>,
}

/// Why a call has no response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The destination is not allowed: undeclared origin, non-public
    /// address, or the batch's call budget is spent. Nothing was sent.
    #[error("refused: {0}")]
    Refused(String),
    /// The request cannot be sent as given (a header, the URL). Nothing was sent.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No whole response within this many milliseconds.
    #[error("no response within {0} ms")]
    Timeout(u64),
    /// The response body is larger than this many bytes.
    #[error("the response body is larger than {0} bytes")]
    TooLarge(u64),
    /// The connection or the exchange failed.
    #[error("{0}")]
    Failed(String),
}

/// Makes the calls of one deployment. Cheap to share between its
/// instances: connections to each origin are pooled.
#[derive(Debug)]
pub struct Client {
    origins: Vec<Origin>,
    limits: CallLimits,
    agent: ureq::Agent,
}

/// The resolver error of a public name that resolves only to non-public
/// addresses.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{host}` resolves only to non-public addresses ({addresses}); to call a private \
     service, declare it by its address (http://ADDRESS:PORT) or as localhost"
)]
struct NotPublic {
    host: String,
    addresses: String,
}

/// The system resolver, keeping only public addresses for names other than
/// `localhost` (addresses written in the URL are not resolved and pass).
#[derive(Debug, Default)]
struct PublicOnly(DefaultResolver);

impl Resolver for PublicOnly {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let resolved = self.0.resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or_default();
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok();
        if literal || host.eq_ignore_ascii_case("localhost") {
            return Ok(resolved);
        }
        let mut public = self.empty();
        for a in resolved.iter().filter(|a| is_public(a.ip())) {
            public.push(*a);
        }
        if public.is_empty() {
            let addresses: Vec<String> = resolved.iter().map(|a| a.ip().to_string()).collect();
            return Err(ureq::Error::Other(Box::new(NotPublic {
                host: host.to_string(),
                addresses: addresses.join(", "),
            })));
        }
        Ok(public)
    }
}

/// Whether `ip` is an address of the public Internet: not loopback,
/// private, link-local, shared (100.64/10), unspecified, multicast,
/// broadcast or documentation.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [first, second, ..] = a.octets();
            !(a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || a.is_documentation()
                || first == 0
                || (first == 100 && second & 0xc0 == 64))
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                !(a.is_loopback()
                    || a.is_unspecified()
                    || a.is_multicast()
                    || a.is_unique_local()
                    || a.is_unicast_link_local())
            }
        },
    }
}

impl Client {
    /// A client for `origins`, held to `limits` (checked by the caller with
    /// [`CallLimits::validate`]).
    pub fn new(origins: Vec<Origin>, limits: CallLimits) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent("leat")
            .build();
        let agent =
            ureq::Agent::with_parts(config, DefaultConnector::default(), PublicOnly::default());
        Client {
            origins,
            limits,
            agent,
        }
    }

    /// The limits the calls are held to.
    pub fn limits(&self) -> &CallLimits {
        &self.limits
    }

    /// The declared origins.
    pub fn origins(&self) -> &[Origin] {
        &self.origins
    }

    /// The declared origin of `url`, or why it may not be called.
    pub fn check(&self, url: &str) -> Result<Origin, CallError> {
        let origin = Origin::of_url(url).map_err(|e| CallError::Invalid(e.to_string()))?;
        if self.origins.contains(&origin) {
            return Ok(origin);
        }
        Err(undeclared(&origin, &self.origins))
    }

    /// Makes `request` with `key` as its `Idempotency-Key`, within the
    /// deployment's timeout and never past `deadline`.
    pub fn send(
        &self,
        request: &Request,
        key: &str,
        deadline: Instant,
    ) -> Result<Response, CallError> {
        let origin = self.check(&request.url)?;
        let limit = Duration::from_millis(self.limits.timeout_ms);
        let timeout = limit.min(deadline.saturating_duration_since(Instant::now()));
        if timeout.is_zero() {
            return Err(CallError::Timeout(0));
        }
        let mut builder = ureq::http::Request::builder()
            .method(request.method.as_http())
            .uri(&request.url);
        for (name, value) in &request.headers {
            if name.eq_ignore_ascii_case("host") {
                return Err(CallError::Invalid(
                    "the Host header is set by the host, from the URL".into(),
                ));
            }
            if name.eq_ignore_ascii_case(IDEMPOTENCY_HEADER) {
                continue;
            }
            builder = builder.header(name.as_str(), value.as_slice());
        }
        builder = builder.header(IDEMPOTENCY_HEADER, key);
        // No body at all (not an empty one) when there is none: a GET then
        // carries no `content-length: 0`.
        let sent = if request.body.is_empty() {
            builder.body(()).map(|r| self.run(r, timeout))
        } else {
            builder
                .body(request.body.as_slice())
                .map(|r| self.run(r, timeout))
        };
        let timeout_ms = timeout.as_millis() as u64;
        let response = sent
            .map_err(|e| CallError::Invalid(e.to_string()))?
            .map_err(|e| failure(e, &origin, timeout_ms, self.limits.max_response_bytes))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect();
        let body = response
            .into_body()
            .with_config()
            .limit(self.limits.max_response_bytes)
            .read_to_vec()
            .map_err(|e| failure(e, &origin, timeout_ms, self.limits.max_response_bytes))?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }

    fn run(
        &self,
        request: ureq::http::Request<impl ureq::AsSendBody>,
        timeout: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(timeout))
            .build();
        self.agent.run(request)
    }

    /// Makes `requests` (each with its key), up to `concurrency` at a time,
    /// and answers in their order, each with how long it took. Once the
    /// bodies received reach `max_total_bytes`, the requests not yet sent
    /// are refused.
    pub fn send_all(
        &self,
        requests: &[(Request, String)],
        deadline: Instant,
        max_total_bytes: u64,
    ) -> Vec<(Result<Response, CallError>, Duration)> {
        let workers = (self.limits.concurrency as usize).clamp(1, requests.len().max(1));
        let next = AtomicUsize::new(0);
        let received = AtomicU64::new(0);
        type Slot = Mutex<Option<(Result<Response, CallError>, Duration)>>;
        let answers: Vec<Slot> = requests.iter().map(|_| Mutex::new(None)).collect();
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((request, key)) = requests.get(i) else {
                break;
            };
            let started = Instant::now();
            let answer = if received.load(Ordering::Relaxed) >= max_total_bytes {
                Err(CallError::Refused(format!(
                    "the responses of this send-all reached {max_total_bytes} bytes: \
                     send fewer requests at a time"
                )))
            } else {
                let answer = self.send(request, key, deadline);
                if let Ok(r) = &answer {
                    received.fetch_add(r.body.len() as u64, Ordering::Relaxed);
                }
                answer
            };
            // Each slot is written once, by the thread that took its index.
            *answers[i].lock().unwrap_or_else(|p| p.into_inner()) =
                Some((answer, started.elapsed()));
        };
        if workers == 1 {
            work();
        } else {
            std::thread::scope(|scope| {
                for _ in 0..workers {
                    scope.spawn(work);
                }
            });
        }
        answers
            .into_iter()
            .map(|slot| {
                slot.into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    // Every index below `requests.len()` was taken by a thread
                    // and answered before the scope ended.
                    .unwrap_or_else(|| {
                        (
                            Err(CallError::Failed("the call was not made".into())),
                            Duration::ZERO,
                        )
                    })
            })
            .collect()
    }
}

/// The refusal of a call to `origin`, which is not among `declared`.
pub fn undeclared(origin: &Origin, declared: &[Origin]) -> CallError {
    let declared: Vec<String> = declared.iter().map(Origin::to_string).collect();
    CallError::Refused(if declared.is_empty() {
        format!(
            "{origin} is not declared: this deployment declares no external service \
             (add --call {origin} to the deployment, or `calls` in its topology)"
        )
    } else {
        format!(
            "{origin} is not declared (declared: {}; add --call {origin} to the \
             deployment, or `calls` in its topology)",
            declared.join(", ")
        )
    })
}

/// What a failed exchange with `origin` means for the guest.
fn failure(e: ureq::Error, origin: &Origin, timeout_ms: u64, max_body: u64) -> CallError {
    match e {
        ureq::Error::Timeout(_) => CallError::Timeout(timeout_ms),
        ureq::Error::BodyExceedsLimit(_) => CallError::TooLarge(max_body),
        ureq::Error::Other(inner) if inner.is::<NotPublic>() => {
            CallError::Refused(inner.to_string())
        }
        ureq::Error::HostNotFound => CallError::Failed(format!("{origin}: the host is not found")),
        ureq::Error::ConnectionFailed => {
            CallError::Failed(format!("{origin}: the connection failed"))
        }
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            CallError::Timeout(timeout_ms)
        }
        other => CallError::Failed(format!("{origin}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn undeclared_origins_are_refused_before_sending() {
        let client = Client::new(
            vec!["http://127.0.0.1:1".parse().unwrap()],
            CallLimits::default(),
        );
        let request = |url: &str| Request {
            method: Method::Get,
            url: url.into(),
            headers: vec![],
            body: vec![],
        };
        let deadline = Instant::now() + Duration::from_secs(1);
        for url in [
            "http://127.0.0.1:2/",
            "https://127.0.0.1:1/",
            "http://localhost:1/",
        ] {
            let e = client.send(&request(url), "k", deadline).unwrap_err();
            assert!(
                matches!(&e, CallError::Refused(m) if m.contains("declared: http://127.0.0.1:1")),
                "{url}: {e}"
            );
        }
        let e = client
            .send(&request("file:///etc/passwd"), "k", deadline)
            .unwrap_err();
        assert!(matches!(e, CallError::Invalid(_)), "{e}");
        // A declared origin with nothing listening: the exchange fails.
        let e = client
            .send(&request("http://127.0.0.1:1/"), "k", deadline)
            .unwrap_err();
        assert!(matches!(e, CallError::Failed(_)), "{e}");
        // A spent deadline: no call at all.
        let e = client
            .send(&request("http://127.0.0.1:1/"), "k", Instant::now())
            .unwrap_err();
        assert_eq!(e, CallError::Timeout(0));
    }

    /// The machine's own host name resolves to a loopback address on most
    /// machines (/etc/hosts): declared by name, it is refused; the same
    /// name as `localhost` or an address would pass.
    #[test]
    fn a_name_resolving_to_private_addresses_is_refused() {
        use std::net::ToSocketAddrs;
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let Ok(origin) = format!("http://{name}:1").parse::<Origin>() else {
            return;
        };
        let resolved: Vec<IpAddr> = (name.as_str(), 1)
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default();
        let client = Client::new(vec![origin], CallLimits::default());
        let request = Request {
            method: Method::Get,
            url: format!("http://{name}:1/"),
            headers: vec![],
            body: vec![],
        };
        let answer = client.send(&request, "k", Instant::now() + Duration::from_secs(2));
        match answer {
            Err(CallError::Refused(m)) => {
                assert!(
                    !resolved.is_empty() && resolved.iter().all(|ip| !is_public(*ip)),
                    "{m}"
                );
                assert!(m.contains("resolves only to non-public addresses"), "{m}");
            }
            other => assert!(
                resolved.is_empty() || resolved.iter().any(|ip| is_public(*ip)),
                "{name} resolves to {resolved:?}, yet: {other:?}"
            ),
        }
    }
}
