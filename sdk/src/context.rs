//! [`Context`]: what a processor can do while it processes a batch.

use serde::de::DeserializeOwned;
use serde::Serialize;

use leat_layout::REJECT_STREAM;

use crate::http::{CallError, Http, Request, Response};
use crate::{Error, Event, Host, Level, Output, ValueWriter};

/// The event being processed: outputs name it as their cause, and
/// [`Context::now`] is its timestamp.
#[derive(Debug, Clone, Copy)]
struct Current {
    index: u32,
    timestamp: i64,
}

/// What a processor can do during a batch: emit outputs, read and write the
/// partition's state, log, and read the event time.
///
/// Everything it emits or writes is buffered by the host and committed with
/// the batch's input offsets, or thrown away with the batch.
pub struct Context<'h> {
    host: &'h mut dyn Host,
    current: Option<Current>,
    /// Whether the host declares an output stream, looked up once: every
    /// output without a stream goes to the first.
    has_default: bool,
}

impl<'h> Context<'h> {
    /// A context backed by `host`: the runtime inside a component, a
    /// [`TestHost`](crate::testing::TestHost) in tests.
    pub fn new(host: &'h mut dyn Host) -> Context<'h> {
        let has_default = !host.outputs().is_empty();
        Context {
            host,
            current: None,
            has_default,
        }
    }

    /// Marks `event`, at `index` in the batch, as the one being processed:
    /// the outputs emitted next name it as their cause and [`Context::now`]
    /// returns its timestamp. [`Processor::process_batch`](crate::Processor::process_batch)
    /// does this for each event; call it when you override that method.
    pub fn set_current(&mut self, index: u32, event: &Event) {
        self.current = Some(Current {
            index,
            timestamp: event.timestamp(),
        });
    }

    /// Forgets the event being processed: outputs emitted next are
    /// attributed to the batch's last event, and [`Context::now`] asks the host.
    pub fn clear_current(&mut self) {
        self.current = None;
    }

    /// The index in the batch of the event being processed, if one is set.
    pub fn current_index(&self) -> Option<u32> {
        self.current.map(|c| c.index)
    }

    /// The processor's declared output streams, in declaration order.
    pub fn outputs(&self) -> &[String] {
        self.host.outputs()
    }

    /// The first declared output stream, or an error if there is none.
    pub fn default_output(&self) -> Result<&str, Error> {
        self.host
            .outputs()
            .first()
            .map(String::as_str)
            .ok_or_else(|| Error::new("the processor declares no output stream"))
    }

    /// Whether `stream` is one of the declared output streams.
    pub fn is_output(&self, stream: &str) -> bool {
        self.host.outputs().iter().any(|s| s == stream)
    }

    /// Emits `output`. An output without a stream goes to the first declared
    /// output; one without a cause is attributed to the event being
    /// processed. Fails when the stream is not a declared output.
    pub fn emit(&mut self, mut output: Output) -> Result<(), Error> {
        if !output.has_stream() && !self.has_default {
            // The host resolves an empty stream to the first declared
            // output: checked here so that the error names the cause.
            self.default_output()?;
        }
        if let Some(current) = self.current {
            output.set_cause_if_unset(current.index);
        }
        self.host.emit(output)
    }

    /// Emits to the first declared output an event with `event`'s key and
    /// headers (not the host's `leat.*` provenance headers) and the value
    /// `write` writes: what `emit(Output::from_event_with_value(event,
    /// value))` emits, with the value written where the host keeps the
    /// batch's outputs instead of built apart, then copied there. A map
    /// then costs the writing of its value, and no allocation. The output
    /// is attributed to the event being processed.
    ///
    /// When `write` fails, nothing is emitted and its error is returned.
    pub fn emit_with_value(
        &mut self,
        event: &Event,
        write: impl FnOnce(&mut ValueWriter<'_>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        if !self.has_default {
            self.default_output()?;
        }
        let mut write = Some(write);
        let mut write_once = |value: &mut ValueWriter<'_>| match write.take() {
            Some(write) => write(value),
            None => Err(Error::new("the host asked for an output's value twice")),
        };
        let cause = self.current.map(|c| c.index);
        self.host.emit_with_value(event, cause, &mut write_once)
    }

    /// Emits `value` under `key` to `stream`.
    pub fn emit_to(
        &mut self,
        stream: impl Into<String>,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), Error> {
        self.emit(Output::to(stream).key(key).value(value))
    }

    /// Emits `value` serialized as JSON under `key` to `stream`.
    pub fn emit_json<T: Serialize + ?Sized>(
        &mut self,
        stream: impl Into<String>,
        key: impl Into<Vec<u8>>,
        value: &T,
    ) -> Result<(), Error> {
        self.emit(Output::to(stream).key(key).json(value)?)
    }

    /// Emits a copy of `event` (key, value and headers, without the host's
    /// provenance headers) to the first declared output.
    pub fn forward(&mut self, event: &Event) -> Result<(), Error> {
        match event.value() {
            // Copied straight to where the host keeps the outputs.
            Some(value) => self.emit_with_value(event, |copy| {
                copy.extend_from_slice(value);
                Ok(())
            }),
            None => self.emit(Output::from_event(event)),
        }
    }

    /// Rejects the event being processed (without one: the batch's last
    /// event), for `reason`. In queue mode (`leat deploy --mode queue`),
    /// the event is settled as rejected when the batch commits: it is never
    /// delivered again, and it goes to the dead-letter stream `<name>.dead`
    /// when the queue group keeps one (the default), with the reason in its
    /// header `leat.dead.reason`. A processor in stream mode reads its
    /// partitions in order and cannot skip an event: a rejection fails its
    /// batch (return an error instead, and the error policy applies).
    pub fn reject(&mut self, reason: impl Into<String>) -> Result<(), Error> {
        let mut output = Output::to(REJECT_STREAM).value(reason.into());
        if let Some(current) = self.current {
            output.set_cause_if_unset(current.index);
        }
        self.host.emit(output)
    }

    /// Calls to the external services the deployment declares: see
    /// [`http`](crate::http). A request without a cause is made for the event
    /// being processed, which its `Idempotency-Key` names.
    pub fn http(&mut self) -> Http<'_, 'h> {
        Http { ctx: self }
    }

    pub(crate) fn send_http(&mut self, mut request: Request) -> Result<Response, CallError> {
        if let Some(current) = self.current {
            request.set_cause_if_unset(current.index);
        }
        self.host.http_send(&request)
    }

    pub(crate) fn send_all_http(
        &mut self,
        mut requests: Vec<Request>,
    ) -> Vec<Result<Response, CallError>> {
        if let Some(current) = self.current {
            for r in &mut requests {
                r.set_cause_if_unset(current.index);
            }
        }
        self.host.http_send_all(&requests)
    }

    /// Reads a key of the partition's state (this batch's writes included).
    ///
    /// State is a stream-mode feature: a processor deployed with `--mode
    /// queue` has no partition state, and any state call (this one,
    /// [`put`](Context::put), [`delete`](Context::delete),
    /// [`range`](Context::range) and the methods built on them) fails its
    /// batch with an error that says so.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        self.host.state_get(key.as_ref())
    }

    /// Writes a key of the partition's state.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.host.state_put(key.as_ref(), value.as_ref());
    }

    /// Deletes a key of the partition's state.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.host.state_delete(key.as_ref());
    }

    /// Entries with `start <= key < end` (`None`: to the last key), in key
    /// order, at most `limit`.
    pub fn range(
        &self,
        start: impl AsRef<[u8]>,
        end: Option<&[u8]>,
        limit: u32,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.host.state_range(start.as_ref(), end, limit)
    }

    /// Entries whose key starts with `prefix`, in key order, at most `limit`.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>, limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let prefix = prefix.as_ref();
        let end = prefix_end(prefix);
        self.host.state_range(prefix, end.as_deref(), limit)
    }

    /// Reads a key of the state as JSON: `Ok(None)` when it is not set, an
    /// error when it does not hold JSON of type `T`.
    pub fn get_json<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>, Error> {
        let key = key.as_ref();
        match self.host.state_get(key) {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::new(format!(
                    "state key {:?} does not hold the expected JSON: {e}",
                    String::from_utf8_lossy(key)
                ))
            }),
        }
    }

    /// Writes `value` serialized as JSON under `key` in the state.
    pub fn put_json<T: Serialize + ?Sized>(
        &mut self,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)?;
        self.host.state_put(key.as_ref(), &bytes);
        Ok(())
    }

    /// Writes a line to the host's log, tagged with the processor.
    pub fn log(&mut self, level: Level, message: impl AsRef<str>) {
        self.host.log(level, message.as_ref());
    }

    /// Logs at [`Level::Trace`].
    pub fn trace(&mut self, message: impl AsRef<str>) {
        self.log(Level::Trace, message);
    }

    /// Logs at [`Level::Debug`].
    pub fn debug(&mut self, message: impl AsRef<str>) {
        self.log(Level::Debug, message);
    }

    /// Logs at [`Level::Info`].
    pub fn info(&mut self, message: impl AsRef<str>) {
        self.log(Level::Info, message);
    }

    /// Logs at [`Level::Warn`].
    pub fn warn(&mut self, message: impl AsRef<str>) {
        self.log(Level::Warn, message);
    }

    /// Logs at [`Level::Error`].
    pub fn error(&mut self, message: impl AsRef<str>) {
        self.log(Level::Error, message);
    }

    /// The event time, in ms since the epoch: the timestamp of the event
    /// being processed, or the host's batch time when none is set. Time in a
    /// processor is the time of its events, so a replay gives the same
    /// results.
    pub fn now(&self) -> i64 {
        match self.current {
            Some(c) => c.timestamp,
            None => self.host.now(),
        }
    }
}

/// The smallest key greater than every key starting with `prefix`; `None`
/// when there is none (empty prefix, or only `0xff` bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn emit_fills_in_the_default_stream_and_the_cause() {
        let mut host = TestHost::new().with_outputs(["first", "second"]);
        let mut ctx = host.context();
        assert_eq!(ctx.outputs(), ["first", "second"]);
        assert_eq!(ctx.default_output().unwrap(), "first");
        assert!(ctx.is_output("second") && !ctx.is_output("third"));
        ctx.emit(Output::new().value("a")).unwrap();
        let e = Event::new("in").with_timestamp(77);
        ctx.set_current(4, &e);
        assert_eq!(ctx.current_index(), Some(4));
        ctx.emit_to("second", "k", "b").unwrap();
        ctx.emit(Output::to("second").value("c").cause(1)).unwrap();
        ctx.clear_current();
        ctx.emit_json("first", "k", &[1, 2]).unwrap();
        let out = host.emitted();
        assert_eq!(out.len(), 4);
        assert_eq!((out[0].stream(), out[0].caused_by()), ("first", None));
        assert_eq!((out[1].stream(), out[1].caused_by()), ("second", Some(4)));
        assert_eq!(out[2].caused_by(), Some(1), "an explicit cause is kept");
        assert_eq!(out[3].value_str(), Some("[1,2]"));
        assert_eq!(out[3].caused_by(), None);
    }

    #[test]
    fn emitting_to_an_undeclared_stream_fails() {
        let mut host = TestHost::new().with_outputs(["out"]);
        let mut ctx = host.context();
        let err = ctx.emit_to("elsewhere", "k", "v").unwrap_err();
        assert!(
            err.message().contains("`elsewhere` is not an output"),
            "{err}"
        );
        let mut none = TestHost::new();
        let mut ctx = none.context();
        let err = ctx.forward(&Event::new("in")).unwrap_err();
        assert_eq!(err.message(), "the processor declares no output stream");
        assert!(host.emitted().is_empty() && none.emitted().is_empty());
    }

    #[test]
    fn reject_names_the_current_event_and_the_reason() {
        let mut host = TestHost::new().with_outputs(["out"]);
        let mut ctx = host.context();
        ctx.set_current(3, &Event::new("in"));
        ctx.reject("no such customer").unwrap();
        ctx.clear_current();
        ctx.reject(String::from("bad")).unwrap();
        assert_eq!(
            host.rejected(),
            [
                (Some(3), "no such customer".to_string()),
                (None, "bad".to_string())
            ]
        );
        assert!(host.emitted().is_empty(), "a rejection is no output");
    }

    #[test]
    fn forward_copies_the_event_to_the_default_output() {
        let mut host = TestHost::new().with_outputs(["out"]);
        let e = Event::new("in").with_key("k").with_header("h", "v");
        let valued = e.clone().with_value("x").with_header("leat.source", "s");
        let mut ctx = host.context();
        ctx.forward(&e).unwrap();
        ctx.set_current(5, &valued);
        ctx.forward(&valued).unwrap();
        let out = host.emitted();
        assert_eq!(out[0].stream(), "out");
        assert_eq!(out[0].key_str(), Some("k"));
        assert!(out[0].is_tombstone());
        assert_eq!(out[0].header_str("h"), Some("v"));
        let mut expected = Output::from_event(&valued).cause(5);
        expected.set_stream("out");
        assert_eq!(out[1], expected);
        assert_eq!(out[1].headers().len(), 1, "no provenance header");
    }

    #[test]
    fn emit_with_value_emits_what_from_event_with_value_builds() {
        let mut host = TestHost::new().with_outputs(["out", "other"]);
        let e = Event::new("in")
            .with_key("k")
            .with_value("v")
            .with_header("h", "x")
            .with_header("leat.source", "in/0/1");
        let mut ctx = host.context();
        ctx.emit_with_value(&e, |value| {
            value.push_str("mapped");
            Ok(())
        })
        .unwrap();
        ctx.set_current(2, &e);
        ctx.emit_with_value(&e, |_| Ok(())).unwrap();
        let err = ctx
            .emit_with_value(&e, |value| {
                value.push_str("half");
                Err(Error::new("cannot map"))
            })
            .unwrap_err();
        assert_eq!(err.message(), "cannot map");
        let out = host.emitted();
        assert_eq!(out.len(), 2, "a failed value emits nothing");
        let expected = |value: &str, cause: Option<u32>| {
            let mut out = Output::from_event_with_value(&e, value);
            out.set_stream("out");
            match cause {
                Some(cause) => out.cause(cause),
                None => out,
            }
        };
        assert_eq!(out[0], expected("mapped", None));
        assert_eq!(out[1], expected("", Some(2)));

        let mut none = TestHost::new();
        let err = none.context().emit_with_value(&e, |_| Ok(())).unwrap_err();
        assert_eq!(err.message(), "the processor declares no output stream");
    }

    #[test]
    fn state_reads_writes_ranges_and_json() {
        let mut host = TestHost::new();
        let mut ctx = host.context();
        assert_eq!(ctx.get("a"), None);
        ctx.put("a", "1");
        ctx.put("ab", "2");
        ctx.put("b", "3");
        ctx.put([0xffu8], "4");
        assert_eq!(ctx.get("a"), Some(b"1".to_vec()));
        let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<Vec<u8>> {
            entries.into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(
            keys(ctx.range("a", Some(b"b"), 10)),
            [b"a".to_vec(), b"ab".to_vec()]
        );
        assert_eq!(keys(ctx.range("a", None, 10)).len(), 4);
        assert_eq!(
            keys(ctx.range("", None, 2)),
            [b"a".to_vec(), b"ab".to_vec()]
        );
        assert_eq!(
            keys(ctx.scan_prefix("a", 10)),
            [b"a".to_vec(), b"ab".to_vec()]
        );
        assert_eq!(keys(ctx.scan_prefix([0xffu8], 10)), [vec![0xffu8]]);
        ctx.delete("a");
        assert_eq!(ctx.get("a"), None);

        ctx.put_json("n", &41u64).unwrap();
        assert_eq!(ctx.get("n"), Some(b"41".to_vec()));
        assert_eq!(ctx.get_json::<u64>("n").unwrap(), Some(41));
        assert_eq!(ctx.get_json::<u64>("missing").unwrap(), None);
        ctx.put("text", "not json");
        let err = ctx.get_json::<u64>("text").unwrap_err();
        assert!(err.message().contains("state key \"text\""), "{err}");
    }

    #[test]
    fn logs_and_time() {
        let mut host = TestHost::new();
        host.set_now(1000);
        let mut ctx = host.context();
        assert_eq!(ctx.now(), 1000, "the host's time without a current event");
        ctx.set_current(0, &Event::new("in").with_timestamp(5));
        assert_eq!(ctx.now(), 5, "the current event's time");
        ctx.trace("t");
        ctx.debug("d");
        ctx.info("i");
        ctx.warn(String::from("w"));
        ctx.error("e");
        let levels: Vec<Level> = host.logs().iter().map(|(l, _)| *l).collect();
        assert_eq!(
            levels,
            [
                Level::Trace,
                Level::Debug,
                Level::Info,
                Level::Warn,
                Level::Error
            ]
        );
        assert_eq!(host.logs()[3].1, "w");
    }
}
