//! Calls to external services over HTTP (WIT `leat:processor/http`, since
//! 0.1.3), through [`Context::http`](crate::Context::http).
//!
//! Only the origins the deployment declares are reachable
//! (`leat deploy --call https://api.example.com`, `calls = [...]` in a
//! topology); any other call is refused with [`CallError::Refused`].
//!
//! A batch may run more than once (retried after a failure, replayed after
//! a crash), and its calls with it: their effects on the outside world are
//! at-least-once. Each request carries an `Idempotency-Key` header that the
//! host derives from the processor, the event being processed (stream,
//! partition, offset) and the call's rank among that event's calls: the same
//! on every retry and replay, so a service can recognise a request it has
//! already carried out.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bindings::leat::processor::{http as wit, types};
use crate::Error;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A request to a declared external service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    cause: Option<u32>,
}

impl Request {
    /// A request without headers or body.
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            cause: None,
        }
    }

    /// A `GET` of `url`.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new(Method::Get, url)
    }

    /// A `POST` to `url` (add a body with [`Request::body`] or [`Request::json`]).
    pub fn post(url: impl Into<String>) -> Request {
        Request::new(Method::Post, url)
    }

    /// A `PUT` to `url`.
    pub fn put(url: impl Into<String>) -> Request {
        Request::new(Method::Put, url)
    }

    /// A `DELETE` of `url`.
    pub fn delete(url: impl Into<String>) -> Request {
        Request::new(Method::Delete, url)
    }

    /// Adds a header (any but `host`; the host sets `Idempotency-Key`).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sets the body to `value` as JSON, with `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Request, Error> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Makes the call for the event at `index` in the batch (its
    /// `Idempotency-Key` names that event). [`Context`](crate::Context)
    /// sets it to the event being processed when it is not set.
    #[must_use]
    pub fn cause(mut self, index: u32) -> Request {
        self.cause = Some(index);
        self
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The headers, in order.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        find(&self.headers, name)
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// The index of the event the call is made for, if set.
    pub fn cause_index(&self) -> Option<u32> {
        self.cause
    }

    pub(crate) fn set_cause_if_unset(&mut self, index: u32) {
        self.cause.get_or_insert(index);
    }

    pub(crate) fn to_wit(&self) -> wit::Request {
        wit::Request {
            method: match self.method {
                Method::Get => wit::Method::Get,
                Method::Head => wit::Method::Head,
                Method::Post => wit::Method::Post,
                Method::Put => wit::Method::Put,
                Method::Patch => wit::Method::Patch,
                Method::Delete => wit::Method::Delete,
            },
            url: self.url.clone(),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| types::Header {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            body: self.body.clone(),
            cause: self.cause,
        }
    }
}

fn find<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// What a service answered (any status: redirects are not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Response {
    /// A response, for tests ([`TestHost::with_response`](crate::testing::TestHost::with_response)).
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header (for tests).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        find(&self.headers, name)
    }

    /// The headers (names lowercase), in order.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body)
            .map_err(|e| Error::new(format!("the response body is not UTF-8: {e}")))
    }

    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::new(format!("the response body is not the expected JSON: {e}")))
    }

    /// The response if its status is 2xx, else an error naming the status
    /// and the start of the body.
    pub fn error_for_status(self) -> Result<Response, Error> {
        if self.is_success() {
            return Ok(self);
        }
        let start: String = String::from_utf8_lossy(&self.body)
            .chars()
            .take(200)
            .collect();
        Err(Error::new(format!(
            "the service answered {}: {start}",
            self.status
        )))
    }

    pub(crate) fn from_wit(r: wit::Response) -> Response {
        Response {
            status: r.status,
            headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
            body: r.body,
        }
    }
}

/// Why a call has no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Not allowed (an undeclared origin, a private address, the batch's
    /// number of calls spent). Nothing was sent.
    Refused(String),
    /// The request is malformed (URL, header). Nothing was sent.
    Invalid(String),
    /// No whole response within this many milliseconds.
    Timeout(u64),
    /// The response body is larger than this many bytes.
    TooLarge(u64),
    /// The connection or the exchange failed.
    Failed(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Refused(m) => write!(f, "call refused: {m}"),
            CallError::Invalid(m) => write!(f, "invalid request: {m}"),
            CallError::Timeout(ms) => write!(f, "no response within {ms} ms"),
            CallError::TooLarge(n) => write!(f, "the response is larger than {n} bytes"),
            CallError::Failed(m) => write!(f, "call failed: {m}"),
        }
    }
}

impl std::error::Error for CallError {}

impl CallError {
    pub(crate) fn from_wit(e: wit::CallError) -> CallError {
        match e {
            wit::CallError::Refused(m) => CallError::Refused(m),
            wit::CallError::Invalid(m) => CallError::Invalid(m),
            wit::CallError::Timeout(ms) => CallError::Timeout(ms),
            wit::CallError::TooLarge(n) => CallError::TooLarge(n),
            wit::CallError::Failed(m) => CallError::Failed(m),
        }
    }
}

/// Calls made on behalf of the event being processed: from
/// [`Context::http`](crate::Context::http).
pub struct Http<'c, 'h> {
    pub(crate) ctx: &'c mut crate::Context<'h>,
}

impl Http<'_, '_> {
    /// Makes `request` and waits for its response.
    pub fn send(&mut self, request: Request) -> Result<Response, CallError> {
        self.ctx.send_http(request)
    }

    /// Makes the requests concurrently (as many at once as the deployment
    /// allows) and answers in their order.
    pub fn send_all(&mut self, requests: Vec<Request>) -> Vec<Result<Response, CallError>> {
        self.ctx.send_all_http(requests)
    }

    /// `GET url`.
    pub fn get(&mut self, url: impl Into<String>) -> Result<Response, CallError> {
        self.send(Request::get(url))
    }

    /// `GET url`, expecting a 2xx answer with a JSON body of type `T`.
    pub fn get_json<T: DeserializeOwned>(&mut self, url: impl Into<String>) -> Result<T, Error> {
        self.get(url)?.error_for_status()?.json()
    }

    /// `POST url` with `body` as JSON, expecting a 2xx answer with a JSON
    /// body of type `T`.
    pub fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &mut self,
        url: impl Into<String>,
        body: &B,
    ) -> Result<T, Error> {
        self.send(Request::post(url).json(body)?)?
            .error_for_status()?
            .json()
    }
}
