//! Run processors natively, without Wasm: [`TestHost`] is an in-memory host.
//!
//! ```
//! use leat_sdk::testing::TestHost;
//! use leat_sdk::{Config, Context, Error, Event, Processor};
//!
//! /// Counts events per key in the state and emits the running count.
//! struct Count;
//!
//! impl Processor for Count {
//!     fn init(_: &Config) -> Result<Self, Error> {
//!         Ok(Count)
//!     }
//!     fn process(&mut self, ctx: &mut Context<'_>, e: &Event) -> Result<(), Error> {
//!         let key = e.key().unwrap_or_default();
//!         let n = ctx.get_json::<u64>(key)?.unwrap_or(0) + 1;
//!         ctx.put_json(key, &n)?;
//!         ctx.emit_to("counts", key, n.to_string())
//!     }
//! }
//!
//! let mut host = TestHost::new().with_outputs(["counts"]);
//! let mut count: Count = host.init(&[]).unwrap();
//! let batch = [
//!     Event::new("in").with_key("a"),
//!     Event::new("in").with_key("a"),
//! ];
//! let out = host.run(&mut count, &batch).unwrap();
//! assert_eq!(out[1].value_str(), Some("2"));
//! assert_eq!(host.state_value("a"), Some(&b"2"[..]));
//! ```

use std::collections::BTreeMap;

use leat_layout::REJECT_STREAM;

use crate::http::{CallError, Request, Response};
use crate::{Config, Context, Error, Event, Failure, Host, Level, Output, Processor};

/// An in-memory [`Host`] that behaves like the runtime: a state with range
/// reads, a list of emitted outputs, captured log lines, a settable clock,
/// and declared outputs, so that emitting to an undeclared stream fails as
/// it does on the real host.
#[derive(Debug, Clone)]
pub struct TestHost {
    name: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    emitted: Vec<Output>,
    /// The events rejected (their index in the batch) and why.
    rejected: Vec<(Option<u32>, String)>,
    logs: Vec<(Level, String)>,
    now: i64,
    /// Canned answers by URL, and the requests made.
    responses: BTreeMap<String, Result<Response, CallError>>,
    requests: Vec<Request>,
}

impl Default for TestHost {
    fn default() -> TestHost {
        TestHost::new()
    }
}

impl TestHost {
    /// A host for a processor named `test`, with no declared inputs or
    /// outputs, an empty state, and time 0.
    pub fn new() -> TestHost {
        TestHost {
            name: "test".into(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            state: BTreeMap::new(),
            emitted: Vec::new(),
            rejected: Vec::new(),
            logs: Vec::new(),
            now: 0,
            responses: BTreeMap::new(),
            requests: Vec::new(),
        }
    }

    /// Answers calls to `url` (exactly) with `answer`; calls to other URLs
    /// are refused, as an undeclared origin is on the real host.
    #[must_use]
    pub fn with_response(
        mut self,
        url: impl Into<String>,
        answer: Result<Response, CallError>,
    ) -> TestHost {
        self.responses.insert(url.into(), answer);
        self
    }

    /// The HTTP requests made so far, in order (their `cause` set).
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// Names the processor (the reserved configuration `leat.processor`).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> TestHost {
        self.name = name.into();
        self
    }

    /// Declares the input streams (the reserved configuration `leat.inputs`).
    #[must_use]
    pub fn with_inputs<I, S>(mut self, inputs: I) -> TestHost
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inputs = inputs.into_iter().map(Into::into).collect();
        self
    }

    /// Declares the output streams, the first being the default output (the
    /// reserved configuration `leat.outputs`).
    #[must_use]
    pub fn with_outputs<I, S>(mut self, outputs: I) -> TestHost
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.outputs = outputs.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the time [`Host::now`] returns until the next [`TestHost::run`].
    pub fn set_now(&mut self, now: i64) {
        self.now = now;
    }

    /// The configuration the runtime would give: `entries` followed by the
    /// reserved `leat.processor`, `leat.inputs` and `leat.outputs`.
    pub fn config(&self, entries: &[(&str, &str)]) -> Config {
        let mut all: Vec<(String, String)> = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.push((Config::PROCESSOR.into(), self.name.clone()));
        all.push((Config::INPUTS.into(), self.inputs.join(",")));
        all.push((Config::OUTPUTS.into(), self.outputs.join(",")));
        Config::new(all)
    }

    /// Creates a processor with [`TestHost::config`]`(entries)`.
    pub fn init<P: Processor>(&self, entries: &[(&str, &str)]) -> Result<P, Error> {
        P::init(&self.config(entries))
    }

    /// A [`Context`] on this host, to call a processor's methods directly.
    pub fn context(&mut self) -> Context<'_> {
        Context::new(self)
    }

    /// Runs one batch through [`Processor::process_batch`] like the runtime
    /// does: the clock is the batch's last event time; on success the
    /// batch's outputs are returned (and kept in [`TestHost::emitted`]); on
    /// failure its outputs and state writes are rolled back (log lines stay,
    /// as on the real host).
    pub fn run<P: Processor>(
        &mut self,
        processor: &mut P,
        events: &[Event],
    ) -> Result<Vec<Output>, Failure> {
        if let Some(last) = events.last() {
            self.now = last.timestamp();
        }
        let state_before = self.state.clone();
        let emitted_before = self.emitted.len();
        let rejected_before = self.rejected.len();
        let result = processor.process_batch(&mut Context::new(self), events);
        match result {
            Ok(()) => Ok(self.emitted[emitted_before..].to_vec()),
            Err(failure) => {
                self.state = state_before;
                self.emitted.truncate(emitted_before);
                self.rejected.truncate(rejected_before);
                Err(failure)
            }
        }
    }

    /// Every output emitted so far, in order.
    pub fn emitted(&self) -> &[Output] {
        &self.emitted
    }

    /// The events rejected so far ([`Context::reject`]), in order: each
    /// one's index in its batch, and the reason.
    pub fn rejected(&self) -> &[(Option<u32>, String)] {
        &self.rejected
    }

    /// Takes the outputs emitted so far, leaving none.
    pub fn take_emitted(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.emitted)
    }

    /// Every log line so far, in order.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.logs
    }

    /// The state.
    pub fn state(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.state
    }

    /// The state, to seed or alter it.
    pub fn state_mut(&mut self) -> &mut BTreeMap<Vec<u8>, Vec<u8>> {
        &mut self.state
    }

    /// The state's value at `key`.
    pub fn state_value(&self, key: impl AsRef<[u8]>) -> Option<&[u8]> {
        self.state.get(key.as_ref()).map(Vec::as_slice)
    }
}

impl Host for TestHost {
    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_owned()));
    }

    fn now(&self) -> i64 {
        self.now
    }

    fn emit(&mut self, mut output: Output) -> Result<(), Error> {
        if output.stream() == REJECT_STREAM {
            let reason = output.value_str().unwrap_or_default().to_string();
            self.rejected.push((output.caused_by(), reason));
            return Ok(());
        }
        if !output.has_stream() {
            let first = self
                .outputs
                .first()
                .ok_or_else(|| Error::new("the processor declares no output stream"))?;
            output.set_stream(first);
        }
        if !self.outputs.iter().any(|s| s == output.stream()) {
            return Err(Error::new(format!(
                "stream `{}` is not an output of processor `{}` (declared outputs: {})",
                output.stream(),
                self.name,
                self.outputs.join(", ")
            )));
        }
        self.emitted.push(output);
        Ok(())
    }

    fn state_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.state.get(key).cloned()
    }

    fn state_put(&mut self, key: &[u8], value: &[u8]) {
        self.state.insert(key.to_vec(), value.to_vec());
    }

    fn state_delete(&mut self, key: &[u8]) {
        self.state.remove(key);
    }

    fn state_range(&self, start: &[u8], end: Option<&[u8]>, limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        use std::ops::Bound;
        if end.is_some_and(|end| end <= start) {
            return Vec::new();
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        self.state
            .range::<[u8], _>((Bound::Included(start), upper))
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn outputs(&self) -> &[String] {
        &self.outputs
    }

    fn http_send(&mut self, request: &Request) -> Result<Response, CallError> {
        self.requests.push(request.clone());
        self.responses
            .get(request.url())
            .cloned()
            .unwrap_or_else(|| {
                Err(CallError::Refused(format!(
                    "{} is not declared (TestHost::with_response answers declared URLs)",
                    request.url()
                )))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `seen/<value>` and emits it; fails on "bad".
    struct Recorder;

    impl Processor for Recorder {
        fn init(config: &Config) -> Result<Self, Error> {
            config.require("must")?;
            Ok(Recorder)
        }

        fn process(&mut self, ctx: &mut Context<'_>, e: &Event) -> Result<(), Error> {
            let v = e.value_str().unwrap_or_default();
            ctx.put(format!("seen/{v}"), "1");
            ctx.info(format!("saw {v}"));
            ctx.emit(Output::new().value(v))?;
            if v == "bad" {
                return Err(Error::new("bad"));
            }
            Ok(())
        }
    }

    fn ev(v: &str, ts: i64) -> Event {
        Event::new("in").with_value(v).with_timestamp(ts)
    }

    #[test]
    fn config_has_the_reserved_entries() {
        let host = TestHost::new()
            .with_name("p")
            .with_inputs(["a", "b"])
            .with_outputs(["x"]);
        let c = host.config(&[("k", "v")]);
        assert_eq!(c.get("k"), Some("v"));
        assert_eq!(c.name(), "p");
        assert_eq!(c.inputs(), ["a", "b"]);
        assert_eq!(c.outputs(), ["x"]);
        let err = host.init::<Recorder>(&[]).err().unwrap();
        assert_eq!(err.message(), "missing configuration `must`");
    }

    #[test]
    fn a_failed_batch_is_rolled_back_but_its_logs_stay() {
        let mut host = TestHost::new().with_outputs(["out"]);
        let mut p: Recorder = host.init(&[("must", "")]).unwrap();
        let out = host.run(&mut p, &[ev("a", 1)]).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(host.context().now(), 1, "the batch's last event time");
        let failure = host.run(&mut p, &[ev("b", 2), ev("bad", 3)]).unwrap_err();
        assert_eq!(failure.event_index, Some(1));
        assert_eq!(
            host.emitted().len(),
            1,
            "the failed batch's outputs are gone"
        );
        let keys: Vec<&[u8]> = host.state().keys().map(Vec::as_slice).collect();
        assert_eq!(keys, [&b"seen/a"[..]], "its state writes too");
        assert_eq!(host.logs().len(), 3);
        assert_eq!(host.take_emitted().len(), 1);
        assert!(host.emitted().is_empty());
    }

    #[test]
    fn ranges_honour_bounds_and_limits() {
        let mut host = TestHost::new();
        for k in ["a", "b", "c", "d"] {
            host.state_mut().insert(k.into(), k.into());
        }
        let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| -> String {
            v.into_iter()
                .map(|(k, _)| String::from_utf8(k).unwrap())
                .collect()
        };
        assert_eq!(keys(host.state_range(b"b", Some(b"d"), 10)), "bc");
        assert_eq!(keys(host.state_range(b"b", None, 10)), "bcd");
        assert_eq!(keys(host.state_range(b"", None, 2)), "ab");
        assert_eq!(
            keys(host.state_range(b"c", Some(b"a"), 10)),
            "",
            "end before start"
        );
        assert_eq!(keys(host.state_range(b"c", Some(b"c"), 10)), "");
        assert_eq!(keys(host.state_range(b"a", None, 0)), "");
        assert_eq!(host.state_value("d"), Some(&b"d"[..]));
    }

    /// Looks each event's value up over HTTP and emits the answer.
    struct Caller;

    impl Processor for Caller {
        fn init(_config: &Config) -> Result<Self, Error> {
            Ok(Caller)
        }

        fn process(&mut self, ctx: &mut Context<'_>, e: &Event) -> Result<(), Error> {
            let url = format!("http://svc/{}", e.value_str().unwrap_or_default());
            let found: serde_json::Value = ctx.http().get_json(url)?;
            ctx.emit(Output::from_event(e).json(&found)?)
        }
    }

    #[test]
    fn calls_are_made_for_the_event_being_processed() {
        let mut host = TestHost::new()
            .with_outputs(["out"])
            .with_response("http://svc/a", Ok(Response::new(200, r#"{"n":1}"#)))
            .with_response("http://svc/b", Ok(Response::new(500, "boom")))
            .with_response("http://svc/c", Err(CallError::Timeout(20)));
        let mut p: Caller = host.init(&[]).unwrap();
        let out = host
            .run(
                &mut p,
                &[
                    Event::new("in").with_value("a"),
                    Event::new("in").with_value("a"),
                ],
            )
            .unwrap();
        assert_eq!(out[1].value_str(), Some(r#"{"n":1}"#));
        let causes: Vec<Option<u32>> = host.requests().iter().map(Request::cause_index).collect();
        assert_eq!(causes, [Some(0), Some(1)]);
        let failure = host
            .run(&mut p, &[Event::new("in").with_value("b")])
            .unwrap_err();
        assert!(failure.message.contains("answered 500: boom"), "{failure}");
        let failure = host
            .run(&mut p, &[Event::new("in").with_value("c")])
            .unwrap_err();
        assert_eq!(failure.message, "no response within 20 ms");
        let failure = host
            .run(&mut p, &[Event::new("in").with_value("zzz")])
            .unwrap_err();
        assert!(failure.message.contains("is not declared"), "{failure}");
    }
}
