//! Business topologies: a `topology.toml` naming a group of streams and the
//! processors between them, checked as a whole before anything is applied.
//!
//! ```toml
//! name = "greetings"
//!
//! [[streams]]
//! name = "greetings"
//! partitions = 3
//! cleanup = "retain"          # or "delete" (retention_ms, retention_bytes) or "compact"
//!
//! [[streams]]
//! name = "greetings-upper"
//! partitions = 3
//!
//! [[processors]]
//! name = "uppercase"
//! component = "guest-examples/out/uppercase.wasm"   # relative to this file
//! inputs = ["greetings"]
//! outputs = ["greetings-upper"]
//! instances = 2
//! on_error = "stop"           # or "record"
//! mode = "stream"             # or "queue": the instances share the one input
//!                             # as a queue group, any number of them work
//! config = { greeting = "hello" }
//! calls = ["https://api.example.com"]   # external services it may call (HTTP)
//! call_timeout_ms = 2000      # and their limits: call_max_response_bytes,
//!                             # call_concurrency, call_max_per_batch
//! ```
//!
//! Checks (each error names the line): valid and unique names, known cleanup
//! policies and error policies, every stream a processor names is declared
//! in the file (or already exists, when the caller says so), and each stream
//! has at most one writer, counting writers outside the topology.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use leat_broker::{Broker, CleanupPolicy, StreamConfig};
use leat_calls::{CallLimits, Origin};

use crate::spec::{ProcessorMode, DEFAULT_COMMIT_EVENTS};
use serde::Deserialize;
use toml::Spanned;

/// A topology file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}{at}: {message}", at = if *line > 0 { format!(":{line}") } else { String::new() })]
pub struct TopologyError {
    /// The file.
    pub file: String,
    /// The line (1-based; 0 when unknown).
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    name: Spanned<String>,
    #[serde(default)]
    streams: Vec<Spanned<RawStream>>,
    #[serde(default)]
    processors: Vec<Spanned<RawProcessor>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    name: Spanned<String>,
    #[serde(default = "one")]
    partitions: u32,
    #[serde(default)]
    cleanup: Option<Spanned<String>>,
    #[serde(default)]
    retention_ms: Option<u64>,
    #[serde(default)]
    retention_bytes: Option<u64>,
    #[serde(default)]
    tombstone_grace_ms: Option<u64>,
    #[serde(default)]
    max_event_bytes: Option<usize>,
    /// The value schema's file (JSON Schema, or Avro for `.avsc`).
    #[serde(default)]
    schema: Option<String>,
    /// The key schema's file.
    #[serde(default)]
    key_schema: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcessor {
    name: Spanned<String>,
    component: Spanned<String>,
    inputs: Vec<Spanned<String>>,
    #[serde(default)]
    outputs: Vec<Spanned<String>>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default = "one")]
    instances: u32,
    #[serde(default)]
    on_error: Option<Spanned<String>>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    commit_events: Option<usize>,
    #[serde(default)]
    calls: Vec<Spanned<String>>,
    #[serde(default)]
    call_timeout_ms: Option<u64>,
    #[serde(default)]
    call_max_response_bytes: Option<u64>,
    #[serde(default)]
    call_concurrency: Option<u32>,
    #[serde(default)]
    call_max_per_batch: Option<u32>,
}

fn one() -> u32 {
    1
}

/// A stream the topology declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyStream {
    /// Its name.
    pub name: String,
    /// Its partition count.
    pub partitions: u32,
    /// Its cleanup policy.
    pub cleanup: CleanupPolicy,
    /// The largest event it accepts, if not the default.
    pub max_event_bytes: Option<usize>,
    /// Its value schema's file, resolved against the topology file's
    /// folder: registered as the stream's next schema version when it
    /// differs from the latest.
    pub schema: Option<PathBuf>,
    /// Its key schema's file.
    pub key_schema: Option<PathBuf>,
    /// Where it is declared.
    pub line: usize,
}

/// A processor the topology declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyProcessor {
    /// Its name.
    pub name: String,
    /// Its component file, resolved against the topology file's folder.
    pub component: PathBuf,
    /// Its inputs.
    pub inputs: Vec<String>,
    /// Its outputs.
    pub outputs: Vec<String>,
    /// Its configuration, in key order.
    pub config: Vec<(String, String)>,
    /// Its instances.
    pub instances: u32,
    /// `stop` or `record`.
    pub on_error: String,
    /// Partitions owned by instances, or a queue they share.
    pub mode: ProcessorMode,
    /// Events per guest call.
    pub batch_size: usize,
    /// Most events per commit of a backlog.
    pub commit_events: usize,
    /// The external services it calls.
    pub calls: Vec<Origin>,
    /// What those calls are held to.
    pub call_limits: CallLimits,
    /// Where it is declared.
    pub line: usize,
}

/// A parsed and checked topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Its name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// Its streams, in file order.
    pub streams: Vec<TopologyStream>,
    /// Its processors, in file order.
    pub processors: Vec<TopologyProcessor>,
    /// The TOML source.
    pub source: String,
    /// Line of each output reference (processor, stream), for later checks.
    output_lines: BTreeMap<(String, String), usize>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(0, |t| t.bytes().filter(|b| *b == b'\n').count() + 1)
}

impl Topology {
    /// Reads and checks a topology file.
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|e| TopologyError {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read the topology file: {e}"),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Topology::parse(&text, &path.display().to_string(), base)
    }

    /// Parses and checks a topology; `file` labels errors and component
    /// paths are resolved against `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Topology, TopologyError> {
        let err = |line: usize, message: String| TopologyError {
            file: file.to_string(),
            line,
            message,
        };
        let raw: RawTopology = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            err(line, format!("not a valid topology: {}", e.message()))
        })?;
        let at = |s: std::ops::Range<usize>| line_of(text, s.start);
        let name_ok = |name: &Spanned<String>, what: &str| {
            leat_broker::validate_name(name.get_ref())
                .map_err(|e| err(at(name.span()), format!("{what} name: {e}")))
        };
        name_ok(&raw.name, "topology")?;
        let mut streams = Vec::new();
        let mut declared = BTreeSet::new();
        for s in &raw.streams {
            let line = at(s.span());
            let s = s.get_ref();
            name_ok(&s.name, "stream")?;
            if !declared.insert(s.name.get_ref().clone()) {
                return Err(err(
                    at(s.name.span()),
                    format!("stream `{}` is declared twice", s.name.get_ref()),
                ));
            }
            if s.partitions == 0 {
                return Err(err(line, "a stream needs at least 1 partition".into()));
            }
            let cleanup = match s.cleanup.as_ref().map(|c| (c.get_ref().as_str(), c.span())) {
                None | Some(("retain", _)) => CleanupPolicy::Retain,
                Some(("delete", _)) => CleanupPolicy::Delete {
                    max_age_ms: s.retention_ms,
                    max_bytes: s.retention_bytes,
                },
                Some(("compact", _)) => CleanupPolicy::Compact {
                    tombstone_grace_ms: s.tombstone_grace_ms.unwrap_or(24 * 3600 * 1000),
                },
                Some((other, span)) => {
                    return Err(err(
                        at(span),
                        format!("unknown cleanup `{other}`: use retain, delete or compact"),
                    ))
                }
            };
            streams.push(TopologyStream {
                name: s.name.get_ref().clone(),
                partitions: s.partitions,
                cleanup,
                max_event_bytes: s.max_event_bytes,
                schema: s.schema.as_ref().map(|f| base.join(f)),
                key_schema: s.key_schema.as_ref().map(|f| base.join(f)),
                line,
            });
        }
        let mut processors = Vec::new();
        let mut names = BTreeSet::new();
        let mut writers: BTreeMap<String, String> = BTreeMap::new();
        let mut output_lines = BTreeMap::new();
        for p in &raw.processors {
            let line = at(p.span());
            let p = p.get_ref();
            name_ok(&p.name, "processor")?;
            let name = p.name.get_ref().clone();
            if !names.insert(name.clone()) {
                return Err(err(
                    at(p.name.span()),
                    format!("processor `{name}` is declared twice"),
                ));
            }
            if p.inputs.is_empty() {
                return Err(err(
                    line,
                    format!("processor `{name}` needs at least one input"),
                ));
            }
            let on_error = match p.on_error.as_ref() {
                None => "stop".to_string(),
                Some(e) if e.get_ref() == "stop" || e.get_ref() == "record" => e.get_ref().clone(),
                Some(e) => {
                    return Err(err(
                        at(e.span()),
                        format!("unknown on_error `{}`: use stop or record", e.get_ref()),
                    ))
                }
            };
            let mode = match p.mode.as_ref() {
                None => ProcessorMode::Stream,
                Some(m) => m
                    .get_ref()
                    .parse()
                    .map_err(|e: String| err(at(m.span()), format!("processor `{name}`: {e}")))?,
            };
            if mode == ProcessorMode::Queue && p.inputs.len() != 1 {
                return Err(err(
                    line,
                    format!(
                        "processor `{name}` is in queue mode, which reads exactly one input \
                         (not {}): declare one processor per input",
                        p.inputs.len()
                    ),
                ));
            }
            if p.instances == 0 {
                return Err(err(
                    line,
                    format!("processor `{name}` needs at least one instance"),
                ));
            }
            for o in &p.outputs {
                let o_name = o.get_ref();
                if let Some(w) = writers.get(o_name) {
                    return Err(err(
                        at(o.span()),
                        format!(
                            "stream `{o_name}` is already written by processor `{w}`: a stream has a single writer"
                        ),
                    ));
                }
                writers.insert(o_name.clone(), name.clone());
                output_lines.insert((name.clone(), o_name.clone()), at(o.span()));
            }
            if on_error == "record" {
                declared.insert(format!("{name}.errors"));
            }
            let config = p
                .config
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        toml::Value::String(s) => s.clone(),
                        toml::Value::Integer(i) => i.to_string(),
                        toml::Value::Float(f) => f.to_string(),
                        toml::Value::Boolean(b) => b.to_string(),
                        toml::Value::Datetime(d) => d.to_string(),
                        other => serde_json::to_string(other).unwrap_or_default(),
                    };
                    (k.clone(), v)
                })
                .collect();
            let mut calls = Vec::new();
            for c in &p.calls {
                let origin: Origin = c
                    .get_ref()
                    .parse()
                    .map_err(|e: leat_calls::OriginError| err(at(c.span()), e.to_string()))?;
                if !calls.contains(&origin) {
                    calls.push(origin);
                }
            }
            let defaults = CallLimits::default();
            let call_limits = CallLimits {
                timeout_ms: p.call_timeout_ms.unwrap_or(defaults.timeout_ms),
                max_response_bytes: p
                    .call_max_response_bytes
                    .unwrap_or(defaults.max_response_bytes),
                concurrency: p.call_concurrency.unwrap_or(defaults.concurrency),
                max_calls_per_batch: p.call_max_per_batch.unwrap_or(defaults.max_calls_per_batch),
            };
            call_limits
                .validate()
                .map_err(|e| err(line, format!("processor `{name}`: {e}")))?;
            processors.push((
                TopologyProcessor {
                    name,
                    component: base.join(p.component.get_ref()),
                    inputs: p.inputs.iter().map(|s| s.get_ref().clone()).collect(),
                    outputs: p.outputs.iter().map(|s| s.get_ref().clone()).collect(),
                    config,
                    instances: p.instances,
                    on_error,
                    mode,
                    batch_size: p.batch_size.unwrap_or(1000),
                    commit_events: p.commit_events.unwrap_or(DEFAULT_COMMIT_EVENTS),
                    calls,
                    call_limits,
                    line,
                },
                p,
            ));
        }
        // Streams named by processors must be declared (checked again
        // against existing streams by `check_against`).
        let topology = Topology {
            name: raw.name.get_ref().clone(),
            file: file.to_string(),
            streams,
            processors: processors.iter().map(|(p, _)| p.clone()).collect(),
            source: text.to_string(),
            output_lines,
        };
        let mut undeclared = Vec::new();
        for (p, raw) in &processors {
            for s in raw.inputs.iter().chain(&raw.outputs) {
                if !declared.contains(s.get_ref()) {
                    undeclared.push((at(s.span()), s.get_ref().clone(), p.name.clone()));
                }
            }
        }
        topology.undeclared_check(&undeclared, &BTreeSet::new())?;
        Ok(topology)
    }

    fn undeclared_check(
        &self,
        undeclared: &[(usize, String, String)],
        existing: &BTreeSet<String>,
    ) -> Result<(), TopologyError> {
        match undeclared.iter().find(|(_, s, _)| !existing.contains(s)) {
            None => Ok(()),
            Some((line, stream, processor)) => Err(TopologyError {
                file: self.file.clone(),
                line: *line,
                message: format!(
                    "processor `{processor}` names stream `{stream}`, which nobody creates: \
                     declare it under [[streams]]"
                ),
            }),
        }
    }

    /// Checks the single-writer rule against writers outside the topology:
    /// `writer_of(stream)` gives a stream's current writer.
    pub fn check_writers(
        &self,
        mut writer_of: impl FnMut(&str) -> Option<String>,
    ) -> Result<(), TopologyError> {
        let ours: BTreeSet<&str> = self.processors.iter().map(|p| p.name.as_str()).collect();
        for ((processor, stream), line) in &self.output_lines {
            if let Some(w) = writer_of(stream) {
                if w != *processor && !ours.contains(w.as_str()) {
                    return Err(TopologyError {
                        file: self.file.clone(),
                        line: *line,
                        message: format!(
                            "stream `{stream}` is already written by processor `{w}` (outside this topology): \
                             a stream has a single writer"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The graph as text: streams, then each processor with its inputs and outputs.
    pub fn to_text(&self) -> String {
        let mut out = format!("topology {}\n", self.name);
        for s in &self.streams {
            out.push_str(&format!(
                "  stream {} ({} partition(s), {})\n",
                s.name,
                s.partitions,
                cleanup_name(&s.cleanup)
            ));
        }
        for p in &self.processors {
            out.push_str(&format!(
                "  processor {} x{}{}: {} -> {}\n",
                p.name,
                p.instances,
                match p.mode {
                    ProcessorMode::Stream => "",
                    ProcessorMode::Queue => " (queue)",
                },
                p.inputs.join(", "),
                if p.outputs.is_empty() {
                    "(no outputs)".to_string()
                } else {
                    p.outputs.join(", ")
                }
            ));
            for c in &p.calls {
                out.push_str(&format!("    calls {c}\n"));
            }
        }
        out
    }

    /// The graph in Mermaid (`flowchart LR`): streams as rounded nodes,
    /// processors as boxes, external services as hexagons joined to the
    /// processors that call them by dotted arrows.
    pub fn to_mermaid(&self) -> String {
        let id = |kind: &str, name: &str| {
            let clean: String = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("{kind}_{clean}")
        };
        let mut out = String::from("flowchart LR\n");
        let mut streams: BTreeSet<&str> = self.streams.iter().map(|s| s.name.as_str()).collect();
        for p in &self.processors {
            streams.extend(p.inputs.iter().chain(&p.outputs).map(String::as_str));
        }
        for s in &streams {
            out.push_str(&format!("    {}([\"{s}\"])\n", id("s", s)));
        }
        for p in &self.processors {
            out.push_str(&format!("    {}[\"{}\"]\n", id("p", &p.name), p.name));
            for i in &p.inputs {
                out.push_str(&format!("    {} --> {}\n", id("s", i), id("p", &p.name)));
            }
            for o in &p.outputs {
                out.push_str(&format!("    {} --> {}\n", id("p", &p.name), id("s", o)));
            }
        }
        let services: BTreeSet<String> = self
            .processors
            .iter()
            .flat_map(|p| p.calls.iter().map(Origin::to_string))
            .collect();
        for c in &services {
            out.push_str(&format!("    {}{{{{\"{c}\"}}}}\n", id("x", c)));
        }
        for p in &self.processors {
            for c in &p.calls {
                out.push_str(&format!(
                    "    {} -. calls .-> {}\n",
                    id("p", &p.name),
                    id("x", &c.to_string())
                ));
            }
        }
        out
    }
}

fn cleanup_name(c: &CleanupPolicy) -> String {
    match c {
        CleanupPolicy::Retain => "retain".into(),
        CleanupPolicy::Delete { .. } => "delete".into(),
        CleanupPolicy::Compact { .. } => "compact".into(),
    }
}

/// What applying a topology did to one of its streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamChange {
    /// It was not there: created.
    Created,
    /// It had fewer partitions: raised to the topology's count.
    Grown,
    /// It was there as declared.
    Unchanged,
}

/// Why a topology's streams could not be applied.
#[derive(Debug)]
pub enum ApplyError {
    /// A stream of the log contradicts the topology; nothing was changed.
    Conflict(TopologyError),
    /// The log failed.
    Broker(leat_broker::Error),
}

impl From<leat_broker::Error> for ApplyError {
    fn from(e: leat_broker::Error) -> Self {
        ApplyError::Broker(e)
    }
}

/// Creates or grows `streams` (declared in `file`) in `broker`'s log, as
/// `leat run` and the server both apply a topology. Every stream is checked
/// before any is changed: a stream keeps its cleanup policy and never loses
/// partitions, so a contradiction changes nothing.
pub fn apply_streams(
    broker: &Broker,
    file: &str,
    streams: &[TopologyStream],
) -> Result<Vec<StreamChange>, ApplyError> {
    let existing: BTreeSet<String> = broker.list_streams().into_iter().collect();
    let conflict = |s: &TopologyStream, message: String| {
        ApplyError::Conflict(TopologyError {
            file: file.to_string(),
            line: s.line,
            message,
        })
    };
    for s in streams.iter().filter(|s| existing.contains(&s.name)) {
        let info = broker.describe_stream(&s.name)?;
        if info.config.cleanup != s.cleanup {
            return Err(conflict(
                s,
                format!(
                    "stream `{}` exists with cleanup {:?}, the topology says {:?}: \
                     streams keep their cleanup policy (delete and re-create it to change it)",
                    s.name, info.config.cleanup, s.cleanup
                ),
            ));
        }
        if (info.partitions.len() as u32) > s.partitions {
            return Err(conflict(
                s,
                format!(
                    "stream `{}` has {} partitions, the topology says {}: \
                     a partition count can be raised, never lowered",
                    s.name,
                    info.partitions.len(),
                    s.partitions
                ),
            ));
        }
    }
    let mut changes = Vec::with_capacity(streams.len());
    for s in streams {
        if existing.contains(&s.name) {
            let info = broker.describe_stream(&s.name)?;
            if (info.partitions.len() as u32) < s.partitions {
                broker.set_partitions(&s.name, s.partitions)?;
                changes.push(StreamChange::Grown);
            } else {
                changes.push(StreamChange::Unchanged);
            }
        } else {
            let mut config = StreamConfig {
                partitions: s.partitions,
                cleanup: s.cleanup.clone(),
                ..StreamConfig::default()
            };
            if let Some(max) = s.max_event_bytes {
                config.max_event_bytes = max;
            }
            broker.create_stream(&s.name, config)?;
            changes.push(StreamChange::Created);
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "shop"

[[streams]]
name = "orders"
partitions = 3

[[streams]]
name = "orders-upper"
partitions = 3
cleanup = "compact"

[[processors]]
name = "up"
component = "up.wasm"
inputs = ["orders"]
outputs = ["orders-upper"]
instances = 2
config = { mode = "loud", n = 3 }
"#;

    #[test]
    fn parses_and_draws() {
        let t = Topology::parse(GOOD, "t.toml", Path::new("/x")).unwrap();
        assert_eq!(t.name, "shop");
        assert_eq!(t.processors[0].component, Path::new("/x/up.wasm"));
        assert_eq!(
            t.processors[0].config,
            vec![("mode".into(), "loud".into()), ("n".into(), "3".into())]
        );
        assert!(t
            .to_text()
            .contains("processor up x2: orders -> orders-upper"));
        assert!(t.to_mermaid().contains("p_up --> s_orders_upper"));
        assert_eq!(
            (t.processors[0].batch_size, t.processors[0].commit_events),
            (1000, DEFAULT_COMMIT_EVENTS)
        );
        let tuned = GOOD.replace(
            "instances = 2",
            "instances = 2\nbatch_size = 50\ncommit_events = 200",
        );
        let t = Topology::parse(&tuned, "t.toml", Path::new("/x")).unwrap();
        assert_eq!(
            (t.processors[0].batch_size, t.processors[0].commit_events),
            (50, 200)
        );
    }

    #[test]
    fn external_services_are_parsed_and_drawn() {
        let calling = GOOD.replace(
            "instances = 2",
            "instances = 2\ncalls = [\"https://api.example.com\", \"http://127.0.0.1:8080/\"]\ncall_timeout_ms = 300",
        );
        let t = Topology::parse(&calling, "t.toml", Path::new("/x")).unwrap();
        let p = &t.processors[0];
        assert_eq!(
            p.calls.iter().map(Origin::to_string).collect::<Vec<_>>(),
            ["https://api.example.com", "http://127.0.0.1:8080"]
        );
        assert_eq!(p.call_limits.timeout_ms, 300);
        assert_eq!(p.call_limits.concurrency, CallLimits::default().concurrency);
        let text = t.to_text();
        assert!(
            text.contains("    calls https://api.example.com\n"),
            "{text}"
        );
        let mermaid = t.to_mermaid();
        assert!(
            mermaid.contains("x_https___api_example_com{{\"https://api.example.com\"}}")
                && mermaid.contains("p_up -. calls .-> x_http___127_0_0_1_8080"),
            "{mermaid}"
        );
        for (bad, why) in [
            ("calls = [\"ftp://x\"]", "is not an origin"),
            ("calls = [\"https://a.example/path\"]", "no path"),
            ("call_concurrency = 0", "concurrency must be"),
        ] {
            let text = GOOD.replace("instances = 2", &format!("instances = 2\n{bad}"));
            let e = Topology::parse(&text, "t.toml", Path::new("/x")).unwrap_err();
            assert!(e.to_string().contains(why) && e.line > 0, "{bad}: {e}");
        }
    }

    #[test]
    fn the_mode_is_parsed_and_queue_mode_takes_one_input() {
        let t = Topology::parse(GOOD, "t.toml", Path::new("/x")).unwrap();
        assert_eq!(t.processors[0].mode, ProcessorMode::Stream);
        let queue = GOOD.replace("instances = 2", "instances = 2\nmode = \"queue\"");
        let t = Topology::parse(&queue, "t.toml", Path::new("/x")).unwrap();
        assert_eq!(t.processors[0].mode, ProcessorMode::Queue);
        assert!(t.to_text().contains("processor up x2 (queue): orders"));
        let e = Topology::parse(
            &GOOD.replace("instances = 2", "instances = 2\nmode = \"fifo\""),
            "t.toml",
            Path::new("/x"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("use `stream` or `queue`") && e.line == 19,
            "{e}"
        );
        let two = queue.replace(
            "inputs = [\"orders\"]",
            "inputs = [\"orders\", \"orders-upper\"]",
        );
        let e = Topology::parse(&two, "t.toml", Path::new("/x")).unwrap_err();
        assert!(e.to_string().contains("exactly one input"), "{e}");
    }

    #[test]
    fn errors_name_the_line() {
        let second_writer = format!(
            "{GOOD}\n[[processors]]\nname = \"up2\"\ncomponent = \"x.wasm\"\ninputs = [\"orders\"]\noutputs = [\"orders-upper\"]\n"
        );
        let e = Topology::parse(&second_writer, "t.toml", Path::new(".")).unwrap_err();
        assert_eq!(e.line, 25, "{e}");
        assert!(e.to_string().contains("single writer"), "{e}");

        let undeclared = GOOD.replace("inputs = [\"orders\"]", "inputs = [\"nope\"]");
        let e = Topology::parse(&undeclared, "t.toml", Path::new(".")).unwrap_err();
        assert_eq!(e.line, 16, "{e}");
        assert!(
            e.to_string().contains("`nope`, which nobody creates"),
            "{e}"
        );

        let e = Topology::parse("name = \"x\"\nbogus = 1\n", "t.toml", Path::new(".")).unwrap_err();
        assert_eq!(e.line, 2, "{e}");

        let t = Topology::parse(GOOD, "t.toml", Path::new(".")).unwrap();
        let e = t
            .check_writers(|s| (s == "orders-upper").then(|| "other".to_string()))
            .unwrap_err();
        assert_eq!(e.line, 17, "{e}");
        assert!(t.check_writers(|_| Some("up".into())).is_ok());
    }
}
