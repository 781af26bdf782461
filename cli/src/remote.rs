//! A `leat serve` server, through its HTTP API: one typed method per route,
//! over ureq.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use leat_api as api;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{Backend, ProduceBatch};

/// The largest answer accepted: a read of 1,000 large events.
const MAX_RESPONSE: u64 = 256 << 20;
/// Events sent per append: a request stays far below the server's body limit.
const PRODUCE_BATCH: usize = 5000;

/// A server and the token for its calls.
pub struct Remote {
    /// `http://HOST:PORT`, without a trailing slash.
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A non-2xx answer.
#[derive(Debug)]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: u16,
    /// The server's message.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            401 => write!(f, "the server refused the request (401): {}", self.message),
            s => write!(f, "{} (HTTP {s})", self.message),
        }
    }
}

impl std::error::Error for ApiFailure {}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl Remote {
    /// The server at `server` (`HOST:PORT` or `http://HOST:PORT`).
    pub fn new(server: &str, token: Option<String>) -> Result<Remote> {
        if server.starts_with("https://") {
            bail!(
                "`{server}`: the leat server speaks plain HTTP; use HOST:PORT or http://HOST:PORT"
            );
        }
        let addr = server
            .strip_prefix("http://")
            .unwrap_or(server)
            .trim_end_matches('/');
        if addr.is_empty() || addr.contains('/') {
            bail!("`{server}` is not a server address: use HOST:PORT, e.g. 127.0.0.1:7070");
        }
        let agent = ureq::Agent::config_builder()
            // Errors are answers with a JSON body that says what to do.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(600)))
            .user_agent(concat!("leat/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Remote {
            base: format!("http://{addr}"),
            token,
            agent,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => req.header("Authorization", format!("Bearer {t}")),
            None => req,
        }
    }

    /// Decodes an answer, or turns a failure into [`ApiFailure`].
    fn answer<T: DeserializeOwned>(
        &self,
        answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T> {
        let mut response = answer.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .with_context(|| format!("reading the answer of the server at {}", self.base))?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<api::ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ApiFailure { status, message }.into());
        }
        serde_json::from_slice(&body).context("the server's answer is not the JSON expected")
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the leat server at {}: {e}. Is `leat serve` running there? \
             (the address comes from --server or LEAT_SERVER)",
            self.base
        )
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.answer(self.auth(self.agent.get(self.url(path))).call())
    }

    fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.answer(self.auth(self.agent.post(self.url(path))).send_json(body))
    }

    fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.answer(self.auth(self.agent.delete(self.url(path))).call())
    }

    fn act(&self, name: &str, action: &str, body: &impl Serialize) -> Result<api::Done> {
        self.post(&format!("/v1/processors/{}/{action}", seg(name)), body)
    }
}

impl Backend for Remote {
    fn describe(&self) -> String {
        format!("server {}", self.base)
    }

    fn produce_batch(&self) -> ProduceBatch {
        ProduceBatch {
            events: PRODUCE_BATCH,
            // JSON escapes a byte in at most 6 (`\u001f`): an eighth of the
            // body limit always fits, whatever the lines hold.
            bytes: api::MAX_BODY_BYTES / 8,
        }
    }

    fn create_stream(&self, req: api::CreateStream) -> Result<api::StreamView> {
        self.post("/v1/streams", &req)
    }

    fn streams(&self) -> Result<Vec<api::StreamView>> {
        self.get("/v1/streams")
    }

    fn stream(&self, name: &str) -> Result<api::StreamView> {
        self.get(&format!("/v1/streams/{}", seg(name)))
    }

    fn delete_stream(&self, name: &str) -> Result<api::Done> {
        self.delete(&format!("/v1/streams/{}", seg(name)))
    }

    fn produce(&self, stream: &str, req: api::Produce) -> Result<api::Produced> {
        self.post(&format!("/v1/streams/{}/events", seg(stream)), &req)
    }

    fn produce_text(&self, stream: &str, text: Vec<u8>) -> Result<api::Produced> {
        let url = self.url(&format!("/v1/streams/{}/events", seg(stream)));
        let req = self
            .auth(self.agent.post(url))
            .header("Content-Type", "text/plain; charset=utf-8");
        self.answer(req.send(&text[..]))
    }

    fn set_schema(&self, stream: &str, req: api::SetSchema) -> Result<api::SchemaSet> {
        let url = self.url(&format!("/v1/streams/{}/schema", seg(stream)));
        self.answer(self.auth(self.agent.put(url)).send_json(&req))
    }

    fn check_schema(&self, stream: &str, req: api::SetSchema) -> Result<api::SchemaCheck> {
        self.post(&format!("/v1/streams/{}/schema/check", seg(stream)), &req)
    }

    fn schema(
        &self,
        stream: &str,
        key: bool,
        version: api::VersionRef,
    ) -> Result<api::SchemaVersion> {
        let req = self
            .agent
            .get(self.url(&format!("/v1/streams/{}/schema", seg(stream))))
            .query("key", key.to_string())
            .query("version", version.to_string());
        self.answer(self.auth(req).call())
    }

    fn schema_history(&self, stream: &str, key: bool) -> Result<api::SchemaHistory> {
        let req = self
            .agent
            .get(self.url(&format!("/v1/streams/{}/schema/history", seg(stream))))
            .query("key", key.to_string());
        self.answer(self.auth(req).call())
    }

    fn set_compatibility(&self, stream: &str, req: api::SetCompatibility) -> Result<api::Done> {
        let url = self.url(&format!("/v1/streams/{}/schema/compatibility", seg(stream)));
        self.answer(self.auth(self.agent.put(url)).send_json(&req))
    }

    fn positions(
        &self,
        stream: &str,
        from: api::Position,
        group: Option<&str>,
    ) -> Result<api::Positions> {
        let mut req = self
            .agent
            .get(self.url(&format!("/v1/streams/{}/positions", seg(stream))))
            .query("from", from.to_string());
        if let Some(g) = group {
            req = req.query("group", g);
        }
        self.answer(self.auth(req).call())
    }

    fn read(
        &self,
        stream: &str,
        partition: u32,
        from: u64,
        max: usize,
        wait: Duration,
    ) -> Result<api::ReadView> {
        let req = self
            .agent
            .get(self.url(&format!("/v1/streams/{}/events", seg(stream))))
            .query("partition", partition.to_string())
            .query("from", from.to_string())
            .query("max", max.to_string())
            .query("wait_ms", wait.as_millis().to_string());
        self.answer(self.auth(req).call())
    }

    fn commit_offset(&self, group: &str, req: api::CommitOffset) -> Result<api::Done> {
        self.post(&format!("/v1/groups/{}/offsets", seg(group)), &req)
    }

    fn status(&self) -> Result<api::StatusView> {
        self.get("/v1/status")
    }

    fn queue_acquire(&self, group: &str, req: api::QueueAcquire) -> Result<api::QueueAcquired> {
        self.post(&format!("/v1/queues/{}/acquire", seg(group)), &req)
    }

    fn queue_act(
        &self,
        group: &str,
        action: api::QueueAction,
        req: api::QueueLocks,
    ) -> Result<api::Done> {
        self.post(&format!("/v1/queues/{}/{action}", seg(group)), &req)
    }

    fn queue_status(&self, group: &str) -> Result<api::QueueStatusView> {
        self.get(&format!("/v1/queues/{}", seg(group)))
    }

    fn queue_configure(&self, group: &str, change: api::QueueSettingsChange) -> Result<api::Done> {
        let url = self.url(&format!("/v1/queues/{}", seg(group)));
        self.answer(self.auth(self.agent.put(url)).send_json(change))
    }

    fn queue_reset(&self, group: &str, req: api::QueueReset) -> Result<api::Done> {
        self.post(&format!("/v1/queues/{}/reset", seg(group)), &req)
    }

    fn upload(&self, component: &[u8]) -> Result<api::Uploaded> {
        // The server would answer 413 before reading it all.
        if component.len() > api::MAX_BODY_BYTES {
            bail!(
                "the component is {} bytes, over the limit of {} bytes of a request body",
                component.len(),
                api::MAX_BODY_BYTES
            );
        }
        let req = self
            .auth(self.agent.post(self.url("/v1/components")))
            .content_type("application/wasm");
        self.answer(req.send(component))
    }

    fn deploy(&self, req: api::Deploy) -> Result<api::Deployed> {
        self.post("/v1/processors", &req)
    }

    fn processors(&self) -> Result<Vec<api::ProcessorView>> {
        self.get("/v1/processors")
    }

    fn processor(&self, name: &str) -> Result<api::ProcessorView> {
        self.get(&format!("/v1/processors/{}", seg(name)))
    }

    fn scale(&self, name: &str, instances: u32) -> Result<api::Done> {
        self.act(name, "scale", &api::Scale { instances })
    }

    fn pause(&self, name: &str) -> Result<api::Done> {
        self.act(name, "pause", &())
    }

    fn resume(&self, name: &str) -> Result<api::Done> {
        self.act(name, "resume", &())
    }

    fn reset(&self, name: &str, to: api::Position) -> Result<api::Done> {
        self.act(name, "reset", &api::Reset { to })
    }

    fn undeploy(&self, name: &str) -> Result<api::Done> {
        self.delete(&format!("/v1/processors/{}", seg(name)))
    }

    fn apply_topology(&self, req: api::ApplyTopology) -> Result<api::Applied> {
        self.post("/v1/topologies", &req)
    }

    fn topology(&self, name: &str) -> Result<api::StoredTopology> {
        self.get(&format!("/v1/topologies/{}", seg(name)))
    }

    fn state(&self, processor: &str, query: api::StateQuery) -> Result<api::StateView> {
        let (param, text) = match &query.lookup {
            api::StateLookup::Key(k) => ("key", k),
            api::StateLookup::Prefix(p) => ("prefix", p),
        };
        let mut req = self
            .agent
            .get(self.url(&format!("/v1/processors/{}/state", seg(processor))))
            .query(param, text)
            .query("limit", query.limit.to_string());
        if let Some(p) = query.partition {
            req = req.query("partition", p.to_string());
        }
        self.answer(self.auth(req).call())
    }
}
