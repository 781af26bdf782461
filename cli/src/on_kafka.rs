//! `leat run --kafka-bootstrap`: a topology's processors on an Apache Kafka
//! cluster, through `leat-on-kafka`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use leat_control::{topic_config, Log, OnKafka};
use leat_on_kafka::{
    cluster_status, ensure_topics, processor_topics, run_processor, KafkaOptions, Observer, Report,
    Restoring, TopicChange, TopicSpec,
};
use leat_runtime::schema::Registry;
use leat_runtime::topology::Topology;
use leat_runtime::{Engine, EngineConfig, RunMode};

use crate::progress::{Bars, Progress};
use crate::serve::{Bootstrap, Shutdown};
use crate::topology_cmd::{deploy_of, set_schemas, RunArgs};

/// Where the processors run on Kafka: `leat run` and `leat serve` take the
/// same flags.
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Run on this Apache Kafka cluster (`HOST:PORT[,...]`) instead of the
    /// data directory's log: streams are topics, each processor a consumer
    /// group, exactly-once through Kafka transactions.
    #[arg(long, value_name = "HOST:PORT[,...]", env = "LEAT_KAFKA_BOOTSTRAP")]
    pub kafka_bootstrap: Option<Bootstrap>,
    /// The replication factor of the topics created on Kafka.
    #[arg(long, default_value_t = 1, requires = "kafka_bootstrap")]
    pub kafka_replication: u16,
    /// This host's name among the Leat hosts sharing the processors on
    /// Kafka: the same on every restart, different on each host (it names
    /// the transactional ids). Default: the machine's host name.
    #[arg(long, requires = "kafka_bootstrap")]
    pub kafka_host_id: Option<String>,
    /// Where the processors' local state caches live on Kafka (restored
    /// from their changelog topics when missing or behind). Default:
    /// `kafka-state/HOST-ID` in the data directory.
    #[arg(long, value_name = "DIR", requires = "kafka_bootstrap")]
    pub kafka_state_dir: Option<std::path::PathBuf>,
    /// A librdkafka setting for every Kafka client of the processors
    /// (repeatable), after Leat's own, e.g. `session.timeout.ms=10000`,
    /// `transaction.timeout.ms=20000` (how soon a killed host's partitions
    /// and open transaction are taken over), `security.protocol=...`.
    #[arg(long, value_name = "KEY=VALUE", requires = "kafka_bootstrap")]
    pub kafka_setting: Vec<crate::serve::KafkaSetting>,
}

impl ClusterArgs {
    /// The cluster to run on, `None` without `--kafka-bootstrap`.
    pub fn on_kafka(&self, data_dir: &std::path::Path) -> Result<Option<OnKafka>> {
        let Some(bootstrap) = &self.kafka_bootstrap else {
            return Ok(None);
        };
        if self.kafka_replication == 0 {
            bail!("--kafka-replication must be at least 1");
        }
        let mut options = KafkaOptions::new(bootstrap.to_string());
        if let Some(host) = self.kafka_host_id.clone() {
            options.host = host;
        }
        options.state_dir = Some(
            self.kafka_state_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("kafka-state").join(&options.host)),
        );
        options.client_settings = (self.kafka_setting.iter())
            .map(|s| (s.key.clone(), s.value.clone()))
            .collect();
        Ok(Some(OnKafka {
            options,
            replication: self.kafka_replication,
        }))
    }
}

pub fn run(data_dir: &std::path::Path, args: RunArgs) -> Result<()> {
    let Some(OnKafka {
        mut options,
        replication,
    }) = args.kafka.on_kafka(data_dir)?
    else {
        bail!("--kafka-bootstrap is required to run on Kafka");
    };
    let topology = Topology::load(&args.file)?;
    // Within the file: a stream has one writer (Kafka has no record of
    // Leat's writers yet).
    topology.check_writers(|_| None)?;
    options.observer = Some(Arc::new(RestoreBars::default()));
    // The file's schemas: kept in the data directory's registry (Kafka has
    // none of Leat's), registered where they changed, and checked against
    // the outputs. The log is opened only then: hosts without schemas may
    // share a data directory.
    let declares_schemas =
        (topology.streams.iter()).any(|s| s.schema.is_some() || s.key_schema.is_some());
    if declares_schemas {
        let broker = crate::backend::open_broker(data_dir)?;
        let registry = Registry::open(&broker).context("opening the schema registry")?;
        let log = Log::new(broker, registry.clone());
        set_schemas(&topology, &|stream, req| Ok(log.set_schema(stream, req)?))?;
        options.schemas = Some(registry);
    }

    let engine =
        Arc::new(Engine::new(EngineConfig::default()).context("starting the Wasm engine")?);
    let mut prepared = Vec::new();
    for p in &topology.processors {
        let component = engine
            .load_file(&p.component)
            .with_context(|| format!("{}:{}: processor {}", topology.file, p.line, p.name))?;
        let spec = leat_control::processor_spec(&deploy_of(&topology, p, String::new())?);
        prepared.push((spec, component));
    }

    // The topics: the file's streams as it declares them, then any output
    // or error stream it does not declare, with one partition.
    let mut topics: Vec<TopicSpec> = topology
        .streams
        .iter()
        .map(|s| TopicSpec {
            name: s.name.clone(),
            partitions: s.partitions,
            replication,
            config: topic_config(&s.cleanup),
        })
        .collect();
    for (spec, _) in &prepared {
        let more = processor_topics(&options, spec, &topics, replication)?;
        topics.extend(more);
    }
    let changes = ensure_topics(&options, &topics)?;
    for (t, change) in topics.iter().zip(changes) {
        if change == TopicChange::Created {
            println!("created topic {} ({} partitions)", t.name, t.partitions);
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    if args.once {
        // Each processor until it has caught up, in file order, until a
        // whole pass processes nothing (so chains of processors settle).
        loop {
            let mut progress = 0;
            for (spec, component) in &prepared {
                let report = run_processor(
                    engine.clone(),
                    spec.clone(),
                    component.clone(),
                    &options,
                    RunMode::UntilCaughtUp,
                    stop.clone(),
                )?;
                if report.events_in > 0 {
                    print_report(&spec.name, &report);
                }
                progress += report.events_in;
            }
            if progress == 0 {
                break;
            }
        }
        println!("topology {}: caught up", topology.name);
        return Ok(());
    }

    // Until Ctrl-C or SIGTERM: a thread waits for the signal and sets `stop`.
    // Caught from here on, before the topology is announced as running.
    let (shutdown, signal_runtime) = Shutdown::install_blocking()?;
    let signals = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            signal_runtime.block_on(shutdown.received());
            signals.store(true, Ordering::Release);
        })
        .context("starting the signal handler")?;
    let running: Vec<_> = prepared
        .into_iter()
        .map(|(spec, component)| {
            let (engine, options, stop) = (engine.clone(), options.clone(), stop.clone());
            let name = spec.name.clone();
            let thread = std::thread::Builder::new()
                .name(format!("processor-{name}"))
                .spawn(move || {
                    run_processor(engine, spec, component, &options, RunMode::Follow, stop)
                });
            thread.map(|t| (name, t))
        })
        .collect::<std::io::Result<_>>()
        .context("starting the processors")?;
    println!(
        "running topology {} on Kafka ({} processor(s)); Ctrl-C to stop",
        topology.name,
        running.len()
    );
    let mut failed = None;
    for (name, thread) in running {
        match thread.join() {
            Ok(Ok(report)) => print_report(&name, &report),
            Ok(Err(e)) => {
                // One processor failing stops the topology.
                stop.store(true, Ordering::Release);
                failed.get_or_insert(anyhow::Error::new(e).context(format!("processor {name}")));
            }
            Err(_) => {
                stop.store(true, Ordering::Release);
                failed.get_or_insert(anyhow::anyhow!("processor {name}: its thread panicked"));
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The restores' progress bars (on standard error, when a terminal).
#[derive(Debug, Default)]
struct RestoreBars(Bars);

impl Observer for RestoreBars {
    fn restoring(
        &self,
        processor: &str,
        instance: u32,
        partitions: &[u32],
        offsets: u64,
    ) -> Box<dyn Restoring> {
        let label = format!("{processor}/{instance}: restoring the state of {partitions:?}");
        Box::new(self.0.add(label, offsets))
    }
}

impl Restoring for Progress {
    fn advance(&self, offsets: u64) {
        self.inc(offsets);
    }
}

/// `leat status --kafka-bootstrap`: each consumer group on the cluster,
/// its members (a processor's instances, on their hosts) with their
/// partitions, its committed offsets and lag.
pub fn status(bootstrap: &Bootstrap) -> Result<()> {
    let options = KafkaOptions::new(bootstrap.to_string());
    let status = cluster_status(&options)?;
    println!(
        "Kafka cluster {bootstrap}: {} topic(s), {} consumer group(s)",
        status.topics.len(),
        status.groups.len()
    );
    for g in &status.groups {
        let lag: u64 = g.positions.iter().map(|p| p.lag).sum();
        println!(
            "group {} ({}, {} member(s)), lag {lag}",
            g.name,
            g.state,
            g.members.len()
        );
        for m in &g.members {
            let owned: Vec<String> = m
                .partitions
                .iter()
                .map(|(topic, p)| format!("{topic}/{p}"))
                .collect();
            println!(
                "  member {} at {}: partitions [{}]",
                m.client_id,
                m.address,
                owned.join(", ")
            );
        }
        let positions: Vec<leat_api::PositionView> = g
            .positions
            .iter()
            .map(|p| leat_api::PositionView {
                stream: p.topic.clone(),
                partition: p.partition,
                committed: p.committed,
                lag: p.lag,
            })
            .collect();
        crate::commands::print_positions(&positions);
    }
    Ok(())
}

/// One line of what a run of processor `name` did.
fn print_report(name: &str, report: &Report) {
    println!(
        "processor {name}: {} event(s) in, {} event(s) out, {} transaction(s), {} aborted, \
         {} state record(s) restored, {} failed call(s), {} trap(s)",
        report.events_in,
        report.events_out,
        report.transactions,
        report.aborted,
        report.restored,
        report.failed_calls,
        report.traps
    );
}
