//! `/metrics`: the processors', streams' and log's counters as a
//! prometheus-client [`Collector`], read from the control plane at each
//! scrape. The server registers it with its own counters in one registry,
//! whose text encoder writes the names, `_total` suffixes and escaping.

use std::fmt;
use std::sync::Arc;

use leat_api as api;
use leat_broker::{DurabilityStats, Timed};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::Control;

/// The control plane's metrics, for a prometheus-client registry
/// (`Registry::register_collector`). Encoding them reads the log and the
/// processors, so it blocks: an async caller encodes on a blocking pool.
pub struct ControlMetrics(Arc<Control>);

impl ControlMetrics {
    /// The metrics of `control`.
    pub fn new(control: Arc<Control>) -> Self {
        ControlMetrics(control)
    }
}

impl fmt::Debug for ControlMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlMetrics")
            .field("dir", &self.0.dir)
            .finish()
    }
}

/// A family of one metric per label set: counters are named without
/// `_total`, which the encoder adds.
fn family<L: EncodeLabelSet, M: EncodeMetric + TypedMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One metric without labels.
fn single<M: EncodeMetric + TypedMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: M,
) -> fmt::Result {
    value.encode(encoder.encode_descriptor(name, help, None, M::TYPE)?)
}

/// How many times one kind of durable write ran and their time in all:
/// two counters, each a name and its help.
fn timed(
    encoder: &mut DescriptorEncoder,
    (count, count_help): (&str, &str),
    (seconds, seconds_help): (&str, &str),
    t: &Timed,
) -> fmt::Result {
    single(encoder, count, count_help, ConstCounter::new(t.count))?;
    let total = ConstCounter::new(t.total.as_secs_f64());
    single(encoder, seconds, seconds_help, total)
}

/// One metric per processor, labelled with its name.
fn per<'a, M: 'a>(
    processors: &'a [api::ProcessorView],
    value: impl Fn(&'a api::ProcessorView) -> M + 'a,
) -> impl Iterator<Item = ([(&'static str, &'a str); 1], M)> + 'a {
    processors
        .iter()
        .map(move |p| ([("processor", p.name.as_str())], value(p)))
}

/// A metric's labels: one name and value.
type Label = [(&'static str, &'static str); 1];

/// One counter of each kind of durable redb commit, labelled by who made it.
fn by_committer<N>(
    d: &DurabilityStats,
    value: impl Fn(&Timed) -> N,
) -> [(Label, ConstCounter<N>); 2] {
    [
        (
            [("by", "caller")],
            ConstCounter::new(value(&d.caller_commits)),
        ),
        (
            [("by", "flusher")],
            ConstCounter::new(value(&d.flusher_commits)),
        ),
    ]
}

/// A processor's batch latency histogram; the view's buckets are
/// cumulative, the encoder wants each bucket's own count.
struct Latency<'a>(&'a api::LatencyView);

impl TypedMetric for Latency<'_> {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        let mut below = 0;
        let buckets: Vec<(f64, u64)> = self
            .0
            .buckets
            .iter()
            .map(|&(le, n)| {
                let own = n.saturating_sub(below);
                below = n;
                (le.unwrap_or(f64::INFINITY), own)
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_seconds, self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for ControlMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let control = &self.0;
        let views = control.processors().and_then(|p| {
            // On Kafka the streams are the cluster's topics: none here.
            let streams = match control.kafka {
                None => control.log.streams()?,
                Some(_) => Vec::new(),
            };
            Ok((p, streams))
        });
        let (processors, streams) = match views {
            Ok(views) => views,
            Err(e) => {
                // A failed journal refuses the committed offsets until the
                // log is reopened: the log's own counters still render.
                tracing::warn!("reading the processors' and streams' metrics: {e}");
                (Vec::new(), Vec::new())
            }
        };
        let e = &mut encoder;
        let ps = processors.as_slice();
        family(
            e,
            "leat_processor_events_in",
            "Input events processed and committed.",
            per(ps, |p| ConstCounter::new(p.events_in)),
        )?;
        family(
            e,
            "leat_processor_events_out",
            "Output events committed.",
            per(ps, |p| ConstCounter::new(p.events_out)),
        )?;
        family(
            e,
            "leat_processor_commits",
            "Batches committed.",
            per(ps, |p| ConstCounter::new(p.batches)),
        )?;
        family(
            e,
            "leat_processor_failed_calls",
            "Guest calls that trapped, timed out or failed.",
            per(ps, |p| ConstCounter::new(p.failed_calls)),
        )?;
        family(
            e,
            "leat_processor_traps",
            "Guest calls that trapped: a panic, a timeout, memory exhausted.",
            per(ps, |p| ConstCounter::new(p.traps)),
        )?;
        family(
            e,
            "leat_processor_batch_latency_seconds",
            "Time from a batch's guest call to its commit, for committed batches.",
            per(ps, |p| Latency(&p.batch_latency)),
        )?;
        let calls = || {
            ps.iter().flat_map(|p| {
                p.call_stats.iter().map(move |c| {
                    (
                        [
                            ("processor", p.name.as_str()),
                            ("origin", c.origin.as_str()),
                        ],
                        c,
                    )
                })
            })
        };
        family(
            e,
            "leat_processor_http_calls",
            "Calls to a declared external service, answered or not.",
            calls().map(|(l, c)| (l, ConstCounter::new(c.calls))),
        )?;
        family(
            e,
            "leat_processor_http_call_errors",
            "Calls to a declared external service without a response: timeout, oversized response, failed connection.",
            calls().map(|(l, c)| (l, ConstCounter::new(c.errors))),
        )?;
        family(
            e,
            "leat_processor_http_call_latency_seconds",
            "Time a call to a declared external service took.",
            calls().map(|(l, c)| (l, Latency(&c.latency))),
        )?;
        family(
            e,
            "leat_processor_http_calls_refused",
            "Calls refused before anything was sent: undeclared origin, invalid request, the batch's call limit.",
            per(ps, |p| ConstCounter::new(p.refused_calls)),
        )?;
        family(
            e,
            "leat_processor_lag",
            "Input events not yet processed.",
            per(ps, |p| ConstGauge::new(p.lag)),
        )?;
        family(
            e,
            "leat_processor_instances",
            "Instances of the processor.",
            per(ps, |p| ConstGauge::new(p.instances.len())),
        )?;
        family(
            e,
            "leat_processor_running",
            "1 when the processor runs, 0 when it is paused or failed.",
            per(ps, |p| {
                ConstGauge::new(u32::from(p.state == api::ProcessorState::Running))
            }),
        )?;
        family(
            e,
            "leat_processor_events_per_second",
            "Input events per second over the last seconds.",
            per(ps, |p| ConstGauge::new(p.events_per_sec)),
        )?;
        if control.kafka.is_some() {
            family(
                e,
                "leat_processor_restore_offsets_remaining",
                "On Kafka: changelog offsets this host's restores of the processor's state have left to read.",
                per(ps, |p| ConstGauge::new(control.restores.remaining(&p.name))),
            )?;
        }
        family(
            e,
            "leat_stream_end_offset",
            "The next offset of each partition.",
            streams.iter().flat_map(|s| {
                s.partitions.iter().enumerate().map(|(p, extent)| {
                    (
                        [("stream", s.name.clone()), ("partition", p.to_string())],
                        ConstGauge::new(extent.next_offset),
                    )
                })
            }),
        )?;
        let (events_produced, events_read) = control.log.counters();
        single(
            e,
            "leat_events_produced",
            "Events appended through the API.",
            ConstCounter::new(events_produced),
        )?;
        single(
            e,
            "leat_events_read",
            "Events read through the API.",
            ConstCounter::new(events_read),
        )?;
        if let Some(d) = control.log.durability() {
            single(
                e,
                "leat_log_group_commits",
                "Group commits of the embedded log that wrote something.",
                ConstCounter::new(d.groups),
            )?;
            timed(
                e,
                (
                    "leat_log_writer_groups",
                    "Group commits taken by the log's writer, refused ones included; it applies one at a time.",
                ),
                (
                    "leat_log_writer_busy_seconds",
                    "Time the log's writer was held by group commits (checks, encoding, the journal record, the commit): a rate near 1 means commits queue behind it.",
                ),
                &d.applied,
            )?;
            timed(
                e,
                (
                    "leat_log_journal_writes",
                    "Journal records written, one per group commit, and synced unless pipelined.",
                ),
                (
                    "leat_log_journal_write_seconds",
                    "Time spent writing and syncing journal records.",
                ),
                &d.journal_writes,
            )?;
            family(
                e,
                "leat_log_durable_commits",
                "Durable commits of the log's database: checkpoints, by a caller or, for pipelined groups, by the flusher. No other commit is applied while one runs.",
                by_committer(&d, |t| t.count),
            )?;
            family(
                e,
                "leat_log_durable_commit_seconds",
                "Time spent in durable commits of the log's database: the share of time commits waited for them.",
                by_committer(&d, |t| t.total.as_secs_f64()),
            )?;
            timed(
                e,
                ("leat_log_flusher_syncs", "Syncs of the journal by the flusher, making pipelined group commits durable between checkpoints; groups are applied while one runs."),
                ("leat_log_flusher_sync_seconds", "Time spent in the flusher's syncs of the journal."),
                &d.flusher_syncs,
            )?;
        }
        single(
            e,
            "leat_uptime_seconds",
            "Seconds since the server started.",
            ConstGauge::new(control.uptime_secs()),
        )
    }
}
