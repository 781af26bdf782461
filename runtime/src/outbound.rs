//! The host side of `leat:processor/http`: a deployment's calls to the
//! external services it declares ([`leat_calls`] holds them to its origins
//! and limits), the `Idempotency-Key` of each call, and the calls' metrics.
//! `imports` answers the guest's import with [`CallState`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leat_calls::{CallError, CallLimits, Client, Method, Origin, Request, Response};

use crate::batch::Input;
use crate::bindings::leat::processor::http as wit;
use crate::bindings::Header;
use crate::status::CallStatus;

/// What a processor's instances share for their calls: the client (its
/// connection pool) and the counters per origin.
pub(crate) struct Calls {
    client: Client,
    stats: Mutex<Stats>,
}

#[derive(Default)]
struct Stats {
    by_origin: BTreeMap<Origin, CallStatus>,
    /// Calls refused before anything was sent (undeclared, invalid, over
    /// budget): counted apart, since their origins are the guest's choice.
    refused: u64,
}

impl Calls {
    /// The calls of a deployment that declares `origins` (none: no calls).
    pub(crate) fn new(origins: &[Origin], limits: CallLimits) -> Option<Arc<Calls>> {
        if origins.is_empty() {
            return None;
        }
        Some(Arc::new(Calls {
            client: Client::new(origins.to_vec(), limits),
            stats: Mutex::new(Stats::default()),
        }))
    }

    /// The counters per declared origin, and the refused calls.
    pub(crate) fn status(&self) -> (Vec<CallStatus>, u64) {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        (stats.by_origin.values().cloned().collect(), stats.refused)
    }

    fn record(
        &self,
        origin: Option<&Origin>,
        took: Duration,
        answer: &Result<Response, CallError>,
    ) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let origin = match (origin, answer) {
            (
                Some(o),
                Err(CallError::Timeout(_) | CallError::TooLarge(_) | CallError::Failed(_)),
            )
            | (Some(o), Ok(_)) => o,
            _ => {
                stats.refused += 1;
                return;
            }
        };
        let entry = stats
            .by_origin
            .entry(origin.clone())
            .or_insert_with(|| CallStatus {
                origin: origin.to_string(),
                ..CallStatus::default()
            });
        entry.calls += 1;
        entry.errors += u64::from(answer.is_err());
        entry.latency.record(took);
    }
}

/// What one instance keeps for its calls during a guest call.
pub(crate) struct CallState {
    calls: Option<Arc<Calls>>,
    processor: Arc<str>,
    inputs: Arc<[String]>,
    /// Per event of the batch (by index): its stream (index into
    /// `inputs`), partition and offset, the inputs of its keys.
    positions: Vec<(usize, u32, u64)>,
    /// Calls made so far per cause event (by index): the next call's rank.
    made: HashMap<u32, u32>,
    /// Calls made in this guest call.
    count: u32,
    /// When the guest call's time limit ends.
    deadline: Instant,
    /// The guest's memory limit: what one `send-all` may bring back.
    memory_limit: u64,
}

impl CallState {
    pub(crate) fn new(
        calls: Option<Arc<Calls>>,
        processor: Arc<str>,
        inputs: &[String],
        memory_limit: usize,
    ) -> CallState {
        CallState {
            calls,
            processor,
            inputs: inputs.into(),
            positions: Vec::new(),
            made: HashMap::new(),
            count: 0,
            deadline: Instant::now(),
            memory_limit: memory_limit as u64,
        }
    }

    /// Before a guest call on `batch`, whose time limit is `limit`.
    pub(crate) fn begin(&mut self, batch: &[Input], limit: Duration) {
        // Calls end a tenth of the limit before it: a call that used all of
        // it would return to a guest already past its epoch deadline, which
        // traps at once ("ran past its time limit") instead of seeing the
        // call's timeout and failing its event with it.
        self.deadline = Instant::now() + limit - limit / 10;
        self.count = 0;
        self.made.clear();
        self.positions.clear();
        if self.calls.is_some() {
            self.positions.extend(
                batch
                    .iter()
                    .map(|i| (i.stream, i.event.partition, i.event.offset)),
            );
        }
    }

    /// Before a guest call that is not a batch (`init`, `on-assigned`...):
    /// its calls are keyed by no event.
    pub(crate) fn begin_other(&mut self, limit: Duration) {
        self.begin(&[], limit);
    }

    /// The request as the client takes it, with its idempotency key, or why
    /// it is refused before anything is sent.
    fn prepare(&mut self, request: wit::Request) -> Result<(Request, String), CallError> {
        let Some(calls) = &self.calls else {
            let origin =
                Origin::of_url(&request.url).map_err(|e| CallError::Invalid(e.to_string()))?;
            return Err(leat_calls::undeclared(&origin, &[]));
        };
        let limit = calls.client.limits().max_calls_per_batch;
        if self.count >= limit {
            return Err(CallError::Refused(format!(
                "this batch made {limit} calls, the deployment's limit per batch"
            )));
        }
        self.count += 1;
        let last = self.positions.len().saturating_sub(1) as u32;
        let cause = request
            .cause
            .filter(|&c| (c as usize) < self.positions.len())
            .unwrap_or(last);
        let rank = self.made.entry(cause).or_insert(0);
        let key = match self.positions.get(cause as usize) {
            Some(&(stream, partition, offset)) => leat_calls::idempotency_key(
                &self.processor,
                &self.inputs[stream],
                partition,
                offset,
                *rank,
            ),
            // Outside a batch (`init`, `on-assigned`): keyed by the call's
            // rank in that guest call alone.
            None => format!("leat/{}/-/{}", self.processor, *rank),
        };
        *rank += 1;
        Ok((
            Request {
                method: method(request.method),
                url: request.url,
                headers: request
                    .headers
                    .into_iter()
                    .map(|h| (h.key, h.value))
                    .collect(),
                body: request.body,
            },
            key,
        ))
    }

    /// `http.send`.
    pub(crate) fn send(&mut self, request: wit::Request) -> Result<wit::Response, wit::CallError> {
        let answer = match self.prepare(request) {
            Ok((request, key)) => {
                self.made_call(&request, |c| c.send(&request, &key, self.deadline))
            }
            Err(refused) => {
                self.record_refused();
                Err(refused)
            }
        };
        answer.map(to_wit).map_err(error_to_wit)
    }

    /// `http.send-all`.
    pub(crate) fn send_all(
        &mut self,
        requests: Vec<wit::Request>,
    ) -> Vec<Result<wit::Response, wit::CallError>> {
        let prepared: Vec<Result<(Request, String), CallError>> =
            requests.into_iter().map(|r| self.prepare(r)).collect();
        let sendable: Vec<(Request, String)> = prepared
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let mut answers = match &self.calls {
            Some(calls) => calls
                .client
                .send_all(&sendable, self.deadline, self.memory_limit)
                .into_iter()
                .zip(&sendable)
                .map(|((answer, took), (request, _))| {
                    let origin = calls.client.check(&request.url).ok();
                    calls.record(origin.as_ref(), took, &answer);
                    answer
                })
                .collect(),
            None => Vec::new(),
        }
        .into_iter();
        prepared
            .into_iter()
            .map(|p| match p {
                Ok(_) => answers
                    .next()
                    .unwrap_or_else(|| Err(CallError::Failed("the call was not made".into()))),
                Err(refused) => {
                    self.record_refused();
                    Err(refused)
                }
            })
            .map(|a| a.map(to_wit).map_err(error_to_wit))
            .collect()
    }

    fn made_call(
        &self,
        request: &Request,
        call: impl FnOnce(&Client) -> Result<Response, CallError>,
    ) -> Result<Response, CallError> {
        // `prepare` refuses every call of a deployment without calls.
        let Some(calls) = &self.calls else {
            return Err(CallError::Refused("no external service is declared".into()));
        };
        let started = Instant::now();
        let answer = call(&calls.client);
        let origin = calls.client.check(&request.url).ok();
        calls.record(origin.as_ref(), started.elapsed(), &answer);
        if let Err(e) = &answer {
            tracing::debug!(processor = &*self.processor, url = %request.url, error = %e, "call failed");
        }
        answer
    }

    fn record_refused(&self) {
        if let Some(calls) = &self.calls {
            calls.record(
                None,
                Duration::ZERO,
                &Err(CallError::Refused(String::new())),
            );
        }
    }
}

fn method(m: wit::Method) -> Method {
    match m {
        wit::Method::Get => Method::Get,
        wit::Method::Head => Method::Head,
        wit::Method::Post => Method::Post,
        wit::Method::Put => Method::Put,
        wit::Method::Patch => Method::Patch,
        wit::Method::Delete => Method::Delete,
    }
}

fn to_wit(r: Response) -> wit::Response {
    wit::Response {
        status: r.status,
        headers: r
            .headers
            .into_iter()
            .map(|(key, value)| Header { key, value })
            .collect(),
        body: r.body,
    }
}

fn error_to_wit(e: CallError) -> wit::CallError {
    match e {
        CallError::Refused(m) => wit::CallError::Refused(m),
        CallError::Invalid(m) => wit::CallError::Invalid(m),
        CallError::Timeout(ms) => wit::CallError::Timeout(ms),
        CallError::TooLarge(n) => wit::CallError::TooLarge(n),
        CallError::Failed(m) => wit::CallError::Failed(m),
    }
}
