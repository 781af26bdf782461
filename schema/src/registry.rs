//! The registry: every subject's versions, kept as events of the stream
//! `_schemas` and held in memory, and the check of events against them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use leat_broker::{Broker, Bytes, Header, Headers, ReadLimits, Record, StreamConfig};
use serde::{Deserialize, Serialize};

use crate::SchemaError;
use crate::parsed::Parsed;
use crate::types::{Compatibility, Format, Incompatibility, Part, Subject, VersionRef};

/// The stream that holds the registry: one event per registered version or
/// changed compatibility mode, never deleted.
pub const SCHEMAS_STREAM: &str = "_schemas";

/// The header each checked event carries: the version of its stream's value
/// schema it was checked against, in decimal.
pub const VALUE_VERSION_HEADER: &str = "leat.schema-version";

/// The same for the key schema.
pub const KEY_VERSION_HEADER: &str = "leat.key-schema-version";

/// The first byte of Confluent's wire format, followed by the schema id
/// (4 bytes, big-endian) and the datum.
pub const CONFLUENT_MAGIC: u8 = 0;

/// One event of [`SCHEMAS_STREAM`].
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Entry {
    Schema {
        subject: String,
        version: u32,
        id: u32,
        format: Format,
        schema: String,
    },
    Config {
        /// `None`: the default of every subject without its own.
        subject: Option<String>,
        compatibility: Compatibility,
    },
}

/// One version of a subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Its subject.
    pub subject: String,
    /// Its number in the subject, from 1.
    pub version: u32,
    /// Its schema's id, shared by every subject that registered the same schema.
    pub id: u32,
    /// Its format.
    pub format: Format,
    /// The schema's text.
    pub schema: String,
}

/// What [`Registry::register`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The version, new or the one that already had this schema.
    pub version: VersionInfo,
    /// Whether a new version was written.
    pub created: bool,
}

/// How events come in: decides what a value's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// As bytes: Kafka producers and processors. An Avro event is a binary
    /// datum, bare or in Confluent's wire format.
    Bytes,
    /// As text: the HTTP API and the command line. An Avro event is given
    /// as JSON and stored as a datum in Confluent's wire format.
    Text,
}

/// An event refused by its stream's schema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "event {index} does not match the {part} schema of stream {stream} (version {version}, {format}): {reason}"
)]
pub struct InvalidEvent {
    /// Its position in what was handed in, from 0.
    pub index: usize,
    /// The stream.
    pub stream: String,
    /// `value` or `key`.
    pub part: &'static str,
    /// The version it was checked against.
    pub version: u32,
    /// That version's format.
    pub format: Format,
    /// What is wrong.
    pub reason: String,
}

/// The current schemas of one stream, shared by every check while no new
/// version is registered.
struct StreamSchemas {
    value: Option<Versions>,
    key: Option<Versions>,
}

/// A subject's versions: the latest checks bare events, any of them an
/// event in Confluent's wire format that names it.
struct Versions {
    /// (id, version, schema, the version as the header's bytes), oldest first; never empty.
    all: Vec<(u32, u32, Arc<Parsed>, Bytes)>,
}

impl Versions {
    fn latest(&self) -> &(u32, u32, Arc<Parsed>, Bytes) {
        // Invariant: built only from a subject with at least one version.
        &self.all[self.all.len() - 1]
    }

    /// Checks `bytes` and returns the version header's value, or why not
    /// (with the version checked against).
    fn check(&self, bytes: &[u8]) -> Result<Bytes, (u32, Format, String)> {
        let (_, latest_version, latest, latest_header) = self.latest();
        if let [CONFLUENT_MAGIC, a, b, c, d, datum @ ..] = bytes {
            let id = u32::from_be_bytes([*a, *b, *c, *d]);
            // A JSON value never starts with a zero byte, and an Avro datum
            // of the latest version rarely does: a framed event is one whose
            // id is a version of this subject.
            if let Some((_, version, parsed, header)) = self.all.iter().find(|v| v.0 == id) {
                return match parsed.validate(datum) {
                    Ok(()) => Ok(header.clone()),
                    Err(e) => Err((*version, parsed.format(), e)),
                };
            }
            if latest.format() == Format::Json {
                return Err((
                    *latest_version,
                    Format::Json,
                    format!(
                        "it starts with Confluent's magic byte and names schema id {id}, which is no version of this subject"
                    ),
                ));
            }
        }
        match latest.validate(bytes) {
            Ok(()) => Ok(latest_header.clone()),
            Err(e) => Err((*latest_version, latest.format(), e)),
        }
    }
}

/// The header value of version `v`: static bytes, so that stamping an
/// event clones no reference count. The text of each version is made once
/// per process and kept (a few bytes per registered version).
fn version_header(v: u32) -> Bytes {
    static TEXTS: Mutex<BTreeMap<u32, &'static str>> = Mutex::new(BTreeMap::new());
    let mut texts = lock(&TEXTS);
    let text = *texts
        .entry(v)
        .or_insert_with(|| Box::leak(v.to_string().into_boxed_str()));
    Bytes::from_static(text.as_bytes())
}

#[derive(Default)]
struct State {
    /// Schema id N is `by_id[N - 1]`.
    by_id: Vec<Arc<Parsed>>,
    /// Schema ids by their schemas' identity ([`Parsed::identity`]).
    ids: HashMap<(Format, String), u32>,
    /// A subject's version V has the id `subjects[s][V - 1]`.
    subjects: BTreeMap<Subject, Vec<u32>>,
    global: Option<Compatibility>,
    modes: BTreeMap<Subject, Compatibility>,
    streams: HashMap<String, Arc<StreamSchemas>>,
}

impl State {
    fn apply(&mut self, entry: Entry) -> Result<(), String> {
        match entry {
            Entry::Schema {
                subject,
                version,
                id,
                format,
                schema,
            } => {
                let subject: Subject = subject.parse()?;
                let versions = self.subjects.entry(subject.clone()).or_default();
                if version as usize != versions.len() + 1 {
                    return Err(format!("{subject} version {version} out of order"));
                }
                if id as usize == self.by_id.len() + 1 {
                    let parsed = Parsed::parse(format, &schema)?;
                    self.ids.insert((format, parsed.identity().to_string()), id);
                    self.by_id.push(Arc::new(parsed));
                } else if id == 0 || id as usize > self.by_id.len() {
                    return Err(format!("schema id {id} out of order"));
                }
                versions.push(id);
                self.refresh(&subject.stream);
            }
            Entry::Config {
                subject: None,
                compatibility,
            } => self.global = Some(compatibility),
            Entry::Config {
                subject: Some(s),
                compatibility,
            } => {
                self.modes.insert(s.parse()?, compatibility);
            }
        }
        Ok(())
    }

    fn versions(&self, subject: &Subject) -> Option<Versions> {
        let ids = self.subjects.get(subject).filter(|v| !v.is_empty())?;
        Some(Versions {
            all: ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    let v = i as u32 + 1;
                    (
                        *id,
                        v,
                        self.by_id[*id as usize - 1].clone(),
                        version_header(v),
                    )
                })
                .collect(),
        })
    }

    fn refresh(&mut self, stream: &str) {
        let value = self.versions(&Subject::of(stream, Part::Value));
        let key = self.versions(&Subject::of(stream, Part::Key));
        if value.is_none() && key.is_none() {
            self.streams.remove(stream);
        } else {
            self.streams
                .insert(stream.to_string(), Arc::new(StreamSchemas { value, key }));
        }
    }

    fn info(&self, subject: &Subject, version: u32) -> Option<VersionInfo> {
        let id = *self
            .subjects
            .get(subject)?
            .get(version.checked_sub(1)? as usize)?;
        let parsed = &self.by_id[id as usize - 1];
        Some(VersionInfo {
            subject: subject.to_string(),
            version,
            id,
            format: parsed.format(),
            schema: parsed.text().to_string(),
        })
    }

    fn resolve(&self, subject: &Subject, v: VersionRef) -> Result<u32, SchemaError> {
        let n = self
            .subjects
            .get(subject)
            .map(Vec::len)
            .filter(|n| *n > 0)
            .ok_or_else(|| SchemaError::subject_not_found(subject))?;
        match v {
            VersionRef::Latest => Ok(n as u32),
            VersionRef::Number(v) if (v as usize) <= n => Ok(v),
            VersionRef::Number(v) => Err(SchemaError::VersionNotFound {
                subject: subject.to_string(),
                version: v,
                latest: n as u32,
            }),
        }
    }

    fn mode(&self, subject: &Subject) -> Compatibility {
        self.modes
            .get(subject)
            .copied()
            .or(self.global)
            .unwrap_or_default()
    }

    /// Why `new` cannot be the next version of `subject` under its mode.
    fn incompatibilities(&self, subject: &Subject, new: &Parsed) -> Vec<Incompatibility> {
        let mode = self.mode(subject);
        let ids = self.subjects.get(subject).map(Vec::as_slice).unwrap_or(&[]);
        let against: &[u32] = match (mode, ids) {
            (Compatibility::None, _) | (_, []) => &[],
            (m, all) if m.transitive() => all,
            (_, [.., last]) => std::slice::from_ref(last),
        };
        let mut out = Vec::new();
        for id in against.iter().rev() {
            let old = &self.by_id[*id as usize - 1];
            let version = ids.iter().position(|i| i == id).map_or(0, |p| p + 1);
            if mode.backward() {
                for i in new.can_read(old) {
                    out.push(Incompatibility {
                        path: i.path,
                        reason: format!(
                            "{} (the new schema cannot read events written with version {version})",
                            i.reason
                        ),
                    });
                }
            }
            if mode.forward() {
                for i in old.can_read(new) {
                    out.push(Incompatibility {
                        path: i.path,
                        reason: format!(
                            "{} (version {version} cannot read events written with the new schema)",
                            i.reason
                        ),
                    });
                }
            }
        }
        out
    }
}

/// The schema registry of one event log.
///
/// Cheap to clone: clones share one registry. Make one per [`Broker`] and
/// hand it to every door: two registries over one log would not see each
/// other's new versions.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Broker,
    /// Held while a version or a mode is written, so that the check and
    /// the write see the same versions.
    write: Mutex<()>,
    state: RwLock<State>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// Opens the registry of `broker`'s log: reads [`SCHEMAS_STREAM`]
    /// whole, if there is one (the first registration creates it).
    pub fn open(broker: &Broker) -> Result<Registry, SchemaError> {
        let info = match broker.describe_stream(SCHEMAS_STREAM) {
            Ok(info) => Some(info),
            Err(leat_broker::Error::UnknownStream(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let mut state = State::default();
        let first = info.as_ref().and_then(|i| i.partitions.first());
        let end = first.map_or(0, |p| p.next_offset);
        let mut at = first.map_or(0, |p| p.log_start);
        while at < end {
            let batch = broker.read(SCHEMAS_STREAM, 0, at, ReadLimits::default())?;
            if batch.events.is_empty() {
                break;
            }
            for event in &batch.events {
                let applied = event
                    .value
                    .as_deref()
                    .ok_or_else(|| "a tombstone".to_string())
                    .and_then(|v| serde_json::from_slice::<Entry>(v).map_err(|e| e.to_string()))
                    .and_then(|entry| state.apply(entry));
                if let Err(e) = applied {
                    // Only the registry writes this stream (every door refuses
                    // it), so this is a damaged log: say so, keep the rest.
                    tracing::warn!("{SCHEMAS_STREAM} offset {} skipped: {e}", event.offset);
                }
            }
            at = batch.next_offset;
        }
        Ok(Registry {
            inner: Arc::new(Inner {
                broker: broker.clone(),
                write: Mutex::new(()),
                state: RwLock::new(state),
            }),
        })
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `entry` to the log, then applies it. Called holding `write`.
    fn write(&self, entry: Entry) -> Result<(), SchemaError> {
        let bytes =
            serde_json::to_vec(&entry).map_err(|e| SchemaError::Malformed(e.to_string()))?;
        match self
            .inner
            .broker
            .create_stream(SCHEMAS_STREAM, StreamConfig::default())
        {
            Ok(_) => {
                tracing::info!("created stream {SCHEMAS_STREAM}: it keeps the schema registry")
            }
            Err(leat_broker::Error::StreamExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.inner
            .broker
            .append(SCHEMAS_STREAM, [Record::value(bytes)])?;
        let mut state = self.inner.state.write().unwrap_or_else(|p| p.into_inner());
        // Checked before the write: applying cannot fail here.
        if let Err(e) = state.apply(entry) {
            tracing::error!("registry entry written but not applied: {e}");
        }
        Ok(())
    }

    /// Registers `text` as the next version of `subject`, unless it breaks
    /// the subject's compatibility mode; registering the latest schema again
    /// changes nothing.
    pub fn register(
        &self,
        subject: &Subject,
        format: Format,
        text: &str,
    ) -> Result<Registered, SchemaError> {
        let parsed = Parsed::parse(format, text).map_err(SchemaError::Malformed)?;
        let _write = lock(&self.inner.write);
        let (id, version) = {
            let state = self.state();
            let versions = state
                .subjects
                .get(subject)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let existing = state
                .ids
                .get(&(format, parsed.identity().to_string()))
                .copied();
            if let (Some(id), Some(last)) = (existing, versions.last())
                && *last == id
            {
                let version = versions.len() as u32;
                return Ok(Registered {
                    version: state.info(subject, version).expect("just found"),
                    created: false,
                });
            }
            let reasons = state.incompatibilities(subject, &parsed);
            if !reasons.is_empty() {
                return Err(SchemaError::Incompatible {
                    subject: subject.to_string(),
                    mode: state.mode(subject),
                    reasons,
                });
            }
            let id = existing.unwrap_or(state.by_id.len() as u32 + 1);
            (id, versions.len() as u32 + 1)
        };
        self.write(Entry::Schema {
            subject: subject.to_string(),
            version,
            id,
            format,
            schema: parsed.text().to_string(),
        })?;
        tracing::info!("registered {subject} version {version} (schema id {id})");
        let state = self.state();
        Ok(Registered {
            version: state.info(subject, version).expect("just written"),
            created: true,
        })
    }

    /// Why `text` could not be registered as the next version of `subject`
    /// (empty: it could).
    pub fn check(
        &self,
        subject: &Subject,
        format: Format,
        text: &str,
    ) -> Result<Vec<Incompatibility>, SchemaError> {
        let parsed = Parsed::parse(format, text).map_err(SchemaError::Malformed)?;
        Ok(self.state().incompatibilities(subject, &parsed))
    }

    /// Whether `text` can read events written with `version` of `subject`
    /// and back (Confluent's `/compatibility` endpoint under the subject's
    /// mode, against one version).
    pub fn check_against(
        &self,
        subject: &Subject,
        version: VersionRef,
        format: Format,
        text: &str,
    ) -> Result<Vec<Incompatibility>, SchemaError> {
        let parsed = Parsed::parse(format, text).map_err(SchemaError::Malformed)?;
        let state = self.state();
        let v = state.resolve(subject, version)?;
        let old = state.by_id[state.subjects[subject][v as usize - 1] as usize - 1].clone();
        let mode = state.mode(subject);
        let mut out = Vec::new();
        if mode.backward() {
            out.extend(parsed.can_read(&old));
        }
        if mode.forward() {
            out.extend(old.can_read(&parsed));
        }
        Ok(out)
    }

    /// One version of a subject.
    pub fn version(&self, subject: &Subject, v: VersionRef) -> Result<VersionInfo, SchemaError> {
        let state = self.state();
        let v = state.resolve(subject, v)?;
        Ok(state.info(subject, v).expect("resolved"))
    }

    /// Every version of a subject, oldest first (empty: no schema).
    pub fn history(&self, subject: &Subject) -> Vec<VersionInfo> {
        let state = self.state();
        let n = state.subjects.get(subject).map_or(0, Vec::len) as u32;
        (1..=n).filter_map(|v| state.info(subject, v)).collect()
    }

    /// The version of `subject` whose schema is `text`, if any.
    pub fn lookup(
        &self,
        subject: &Subject,
        format: Format,
        text: &str,
    ) -> Result<VersionInfo, SchemaError> {
        let parsed = Parsed::parse(format, text).map_err(SchemaError::Malformed)?;
        let state = self.state();
        let ids = state
            .subjects
            .get(subject)
            .ok_or_else(|| SchemaError::subject_not_found(subject))?;
        let id = state.ids.get(&(format, parsed.identity().to_string()));
        let version = id
            .and_then(|id| ids.iter().position(|i| i == id))
            .ok_or_else(|| {
                SchemaError::SchemaNotFound(format!("no version of {subject} has this schema"))
            })?;
        Ok(state.info(subject, version as u32 + 1).expect("found"))
    }

    /// The schema of an id: its format and text.
    pub fn by_id(&self, id: u32) -> Result<(Format, String), SchemaError> {
        let state = self.state();
        let parsed = id
            .checked_sub(1)
            .and_then(|i| state.by_id.get(i as usize))
            .ok_or_else(|| SchemaError::SchemaNotFound(format!("no schema has id {id}")))?;
        Ok((parsed.format(), parsed.text().to_string()))
    }

    /// The subjects and versions that use schema `id`.
    pub fn uses_of(&self, id: u32) -> Vec<(String, u32)> {
        let state = self.state();
        let mut out = Vec::new();
        for (subject, ids) in &state.subjects {
            for (i, x) in ids.iter().enumerate() {
                if *x == id {
                    out.push((subject.to_string(), i as u32 + 1));
                }
            }
        }
        out
    }

    /// Every subject with at least one version.
    pub fn subjects(&self) -> Vec<Subject> {
        self.state().subjects.keys().cloned().collect()
    }

    /// The compatibility mode of `subject` (its own, else the default), or
    /// the default with `None`.
    pub fn compatibility(&self, subject: Option<&Subject>) -> Compatibility {
        let state = self.state();
        match subject {
            Some(s) => state.mode(s),
            None => state.global.unwrap_or_default(),
        }
    }

    /// The mode `subject` set for itself, if it did.
    pub fn own_compatibility(&self, subject: &Subject) -> Option<Compatibility> {
        self.state().modes.get(subject).copied()
    }

    /// Sets the compatibility mode of `subject`, or the default with `None`.
    pub fn set_compatibility(
        &self,
        subject: Option<&Subject>,
        mode: Compatibility,
    ) -> Result<(), SchemaError> {
        let _write = lock(&self.inner.write);
        self.write(Entry::Config {
            subject: subject.map(Subject::to_string),
            compatibility: mode,
        })
    }

    /// Whether `stream` has a value or key schema.
    pub fn has_schema(&self, stream: &str) -> bool {
        self.state().streams.contains_key(stream)
    }

    /// The checker of `stream`'s events, or `None` when it has no schema.
    /// It holds the versions current when it was made: take one per batch.
    pub fn checker(&self, stream: &str) -> Option<Checker> {
        let schemas = self.state().streams.get(stream).cloned()?;
        Some(Checker {
            stream: stream.to_string(),
            schemas,
        })
    }

    /// Checks each record to be appended to `stream` with
    /// [`Checker::check`]. The first failing record stops the check:
    /// nothing may be appended then.
    pub fn check_records(
        &self,
        stream: &str,
        door: Door,
        records: &mut [Record],
    ) -> Result<(), InvalidEvent> {
        let Some(checker) = self.checker(stream) else {
            return Ok(());
        };
        for (index, r) in records.iter_mut().enumerate() {
            checker.check(index, door, &mut r.key, &mut r.value, &mut r.headers)?;
        }
        Ok(())
    }
}

/// The schemas of one stream, as they were when it was made.
#[derive(Clone)]
pub struct Checker {
    stream: String,
    schemas: Arc<StreamSchemas>,
}

impl Checker {
    /// Checks one event against the stream's current schemas and stamps it
    /// with the version headers (replacing any the producer set); with
    /// [`Door::Text`], an Avro value given as JSON becomes a datum in
    /// Confluent's wire format. Tombstones and keyless events pass.
    /// `index` is the event's position, for the error.
    pub fn check(
        &self,
        index: usize,
        door: Door,
        key: &mut Option<Bytes>,
        value: &mut Option<Bytes>,
        headers: &mut Headers,
    ) -> Result<(), InvalidEvent> {
        let refuse = |part: Part, (version, format, reason): (u32, Format, String)| InvalidEvent {
            index,
            stream: self.stream.clone(),
            part: part.as_str(),
            version,
            format,
            reason,
        };
        for (part, versions, slot, header) in [
            (
                Part::Value,
                &self.schemas.value,
                value,
                VALUE_VERSION_HEADER,
            ),
            (Part::Key, &self.schemas.key, key, KEY_VERSION_HEADER),
        ] {
            let (Some(versions), Some(bytes)) = (versions, slot.as_ref()) else {
                continue;
            };
            let (id, version, latest, _) = versions.latest();
            if door == Door::Text
                && latest.format() == Format::Avro
                && let Some(datum) = std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| latest.avro_from_json(text))
            {
                let datum = datum.map_err(|e| refuse(part, (*version, Format::Avro, e)))?;
                let mut framed = Vec::with_capacity(5 + datum.len());
                framed.push(CONFLUENT_MAGIC);
                framed.extend_from_slice(&id.to_be_bytes());
                framed.extend_from_slice(&datum);
                *slot = Some(Bytes::from(framed));
            }
            let Some(bytes) = slot.as_ref() else { continue };
            let stamp = versions.check(bytes).map_err(|e| refuse(part, e))?;
            headers.retain(|h| h.key != header);
            // Room for it alone: a push would make room for four, or double
            // it (the bench's check-only case went from 682 to 338 ns an
            // event, median of 11, when a first push made room for four).
            headers.reserve_exact(1);
            headers.push(Header::new(header, stamp));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"object","properties":{"id":{"type":"string"}},"required":["id"],"additionalProperties":false}"#;
    const V2: &str = r#"{"type":"object","properties":{"id":{"type":"string"},"note":{"type":"string"}},"required":["id"],"additionalProperties":false}"#;
    const V3_REQUIRED: &str = r#"{"type":"object","properties":{"id":{"type":"string"},"email":{"type":"string"}},"required":["id","email"],"additionalProperties":false}"#;

    fn open() -> (tempfile::TempDir, Broker) {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(dir.path().join("log.redb")).unwrap();
        broker
            .create_stream("orders", StreamConfig::default())
            .unwrap();
        (dir, broker)
    }

    #[test]
    fn versions_survive_a_reopen_and_share_ids() {
        let (dir, broker) = open();
        let s = Subject::value("orders");
        {
            let r = Registry::open(&broker).unwrap();
            let v1 = r.register(&s, Format::Json, V1).unwrap();
            assert!(v1.created);
            assert_eq!((v1.version.version, v1.version.id), (1, 1));
            let again = r.register(&s, Format::Json, &format!(" {V1} ")).unwrap();
            assert!(!again.created);
            assert_eq!(again.version.version, 1);
            r.register(&s, Format::Json, V2).unwrap();
            // The same schema under another subject keeps its id.
            let other = r
                .register(&Subject::of("orders", Part::Key), Format::Json, V1)
                .unwrap();
            assert_eq!((other.version.version, other.version.id), (1, 1));
            r.set_compatibility(Some(&s), Compatibility::None).unwrap();
        }
        drop(broker);
        let broker = Broker::open(dir.path().join("log.redb")).unwrap();
        let r = Registry::open(&broker).unwrap();
        assert_eq!(r.history(&s).len(), 2);
        assert_eq!(r.version(&s, VersionRef::Latest).unwrap().id, 2);
        assert_eq!(r.compatibility(Some(&s)), Compatibility::None);
        assert_eq!(r.compatibility(None), Compatibility::Backward);
        assert_eq!(r.lookup(&s, Format::Json, V2).unwrap().version, 2);
        assert_eq!(r.uses_of(1).len(), 2);
        assert!(matches!(
            r.version(&s, VersionRef::Number(9)),
            Err(SchemaError::VersionNotFound { latest: 2, .. })
        ));
    }

    #[test]
    fn an_incompatible_version_is_refused_naming_the_field() {
        let (_dir, broker) = open();
        let r = Registry::open(&broker).unwrap();
        let s = Subject::value("orders");
        r.register(&s, Format::Json, V1).unwrap();
        let err = r.register(&s, Format::Json, V3_REQUIRED).unwrap_err();
        let SchemaError::Incompatible { reasons, mode, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(*mode, Compatibility::Backward);
        assert!(
            reasons.iter().any(|i| i.to_string().contains("email")),
            "{err}"
        );
        assert!(err.to_string().contains("email"), "{err}");
        assert_eq!(r.history(&s).len(), 1, "nothing written");
        assert!(!r.check(&s, Format::Json, V3_REQUIRED).unwrap().is_empty());
        r.set_compatibility(Some(&s), Compatibility::None).unwrap();
        assert!(r.register(&s, Format::Json, V3_REQUIRED).unwrap().created);
    }

    /// Each mode against the versions it names: Avro, whose rules are the
    /// specification's (a reader's field without a default cannot read
    /// events that lack it; a reader ignores a writer's extra field).
    #[test]
    fn each_mode_checks_the_versions_it_names_in_its_directions() {
        let record = |fields: &str| {
            format!(
                r#"{{"type":"record","name":"Order","fields":[{{"name":"id","type":"string"}}{fields}]}}"#
            )
        };
        let v1 = record("");
        let v2 = record(r#",{"name":"a","type":"int","default":0}"#);
        let v3 = record(r#",{"name":"a","type":"int"}"#); // reads v2's events, not v1's
        let v4 = record(r#",{"name":"b","type":"int"}"#); // v1 reads its events; it cannot read v1's
        let (_dir, broker) = open();
        let r = Registry::open(&broker).unwrap();
        let verdict = |mode: Compatibility, versions: &[&str], new: &str| {
            let s = Subject::value(&format!("m{}", r.subjects().len()));
            r.set_compatibility(Some(&s), Compatibility::None).unwrap();
            for v in versions {
                r.register(&s, Format::Avro, v).unwrap();
            }
            r.set_compatibility(Some(&s), mode).unwrap();
            r.check(&s, Format::Avro, new).unwrap().is_empty()
        };
        use Compatibility::*;
        // Non-transitive modes look at the latest version only.
        assert!(verdict(Backward, &[&v1, &v2], &v3));
        assert!(!verdict(BackwardTransitive, &[&v1, &v2], &v3));
        assert!(verdict(Forward, &[&v1], &v4));
        assert!(!verdict(Backward, &[&v1], &v4));
        assert!(!verdict(Full, &[&v1], &v4));
        assert!(
            verdict(Full, &[&v1], &v2),
            "a field with a default both ways"
        );
        assert!(!verdict(FullTransitive, &[&v1, &v2], &v3));
        assert!(
            verdict(ForwardTransitive, &[&v1, &v2], &v4),
            "v1 and v2 ignore b"
        );
        assert!(
            !verdict(ForwardTransitive, &[&v4, &v1], &v3),
            "v4 cannot read v3's events: no b"
        );
        assert!(verdict(None, &[&v1], &v4));
        // Another format never reads this one's events.
        let s = Subject::value("switch");
        r.register(&s, Format::Avro, &v1).unwrap();
        let reasons = r.check(&s, Format::Json, r#"{"type":"object"}"#).unwrap();
        assert!(
            reasons[0]
                .reason
                .contains("format changes from AVRO to JSON"),
            "{reasons:?}"
        );
    }

    #[test]
    fn records_are_checked_and_stamped() {
        let (_dir, broker) = open();
        let r = Registry::open(&broker).unwrap();
        let mut free = vec![Record::value("anything")];
        r.check_records("orders", Door::Bytes, &mut free).unwrap();
        assert!(free[0].headers.is_empty(), "no schema, no header");
        r.register(&Subject::value("orders"), Format::Json, V1)
            .unwrap();
        r.register(&Subject::value("orders"), Format::Json, V2)
            .unwrap();
        let mut ok = vec![
            Record::value(r#"{"id":"a"}"#).header(VALUE_VERSION_HEADER, "99"),
            Record::tombstone("k"),
        ];
        r.check_records("orders", Door::Text, &mut ok).unwrap();
        assert_eq!(ok[0].headers[..], [Header::new(VALUE_VERSION_HEADER, "2")]);
        assert!(ok[1].headers.is_empty());
        let mut bad = vec![Record::value(r#"{"id":"a"}"#), Record::value(r#"{"id":7}"#)];
        let e = r
            .check_records("orders", Door::Bytes, &mut bad)
            .unwrap_err();
        assert_eq!((e.index, e.version), (1, 2));
        assert!(e.reason.starts_with("/id: "), "{e}");
        // Confluent's wire format names the version to check against.
        let mut framed = vec![0, 0, 0, 0, 1];
        framed.extend_from_slice(br#"{"id":"b"}"#);
        let mut framed = vec![Record::value(framed)];
        r.check_records("orders", Door::Bytes, &mut framed).unwrap();
        assert_eq!(
            framed[0].headers[..],
            [Header::new(VALUE_VERSION_HEADER, "1")]
        );
        let mut unknown = vec![Record::value(vec![0, 0, 0, 0, 9, b'{', b'}'])];
        let e = r
            .check_records("orders", Door::Bytes, &mut unknown)
            .unwrap_err();
        assert!(e.reason.contains("schema id 9"), "{e}");
    }

    #[test]
    fn avro_text_becomes_framed_datums() {
        let (_dir, broker) = open();
        let r = Registry::open(&broker).unwrap();
        let avro = r#"{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}"#;
        let v = r
            .register(&Subject::value("orders"), Format::Avro, avro)
            .unwrap();
        // The same schema, spaced and with its keys in another order: no new version.
        let spaced = r#"{ "name": "Order", "type": "record", "fields": [ { "type": "string", "name": "id" } ] }"#;
        let again = r
            .register(&Subject::value("orders"), Format::Avro, spaced)
            .unwrap();
        assert!(!again.created);
        assert_eq!(again.version.id, v.version.id);
        let found = r
            .lookup(&Subject::value("orders"), Format::Avro, spaced)
            .unwrap();
        assert_eq!(found.version, 1);
        let mut recs = vec![Record::value(r#"{"id":"x"}"#)];
        r.check_records("orders", Door::Text, &mut recs).unwrap();
        let value = recs[0].value.clone().unwrap();
        assert_eq!(&value[..5], &[0, 0, 0, 0, v.version.id as u8]);
        assert_eq!(&value[5..], &[2, b'x']);
        let mut bad = vec![Record::value(r#"{"id":1}"#)];
        assert!(r.check_records("orders", Door::Text, &mut bad).is_err());
        // The same bytes through a byte door pass as they are.
        let mut bytes = vec![Record::value(value.clone())];
        r.check_records("orders", Door::Bytes, &mut bytes).unwrap();
        assert_eq!(bytes[0].value.as_ref(), Some(&value));
    }
}
