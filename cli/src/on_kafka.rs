//! `leat run --kafka-bootstrap`: a topology's processors on an Apache Kafka
//! cluster, through `leat-on-kafka`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use leat_broker::CleanupPolicy;
use leat_control::Log;
use leat_on_kafka::{
    changelog_topic, cluster_status, ensure_topics, run_processor, topic_partitions, KafkaOptions,
    Observer, Restoring, TopicChange, TopicSpec,
};
use leat_runtime::schema::Registry;
use leat_runtime::topology::Topology;
use leat_runtime::{Engine, EngineConfig, ErrorPolicy, RunMode};

use crate::progress::{Bars, Progress};
use crate::serve::Bootstrap;
use crate::topology_cmd::{deploy_of, set_schemas, RunArgs};

pub fn run(data_dir: &std::path::Path, args: RunArgs) -> Result<()> {
    let Some(bootstrap) = args.kafka_bootstrap.clone() else {
        bail!("--kafka-bootstrap is required to run on Kafka");
    };
    let topology = Topology::load(&args.file)?;
    // Within the file: a stream has one writer (Kafka has no record of
    // Leat's writers yet).
    topology.check_writers(|_| None)?;
    let mut options = KafkaOptions::new(bootstrap.to_string());
    if let Some(host) = args.kafka_host_id.clone() {
        options.host = host;
    }
    options.state_dir = Some(
        args.kafka_state_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("kafka-state").join(&options.host)),
    );
    if args.kafka_replication == 0 {
        bail!("--kafka-replication must be at least 1");
    }
    options.observer = Some(Arc::new(RestoreBars::default()));
    options.client_settings = (args.kafka_setting.iter())
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect();
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
            replication: args.kafka_replication,
            config: topic_config(&s.cleanup),
        })
        .collect();
    let mut named: BTreeSet<String> = topics.iter().map(|t| t.name.clone()).collect();
    for (spec, _) in &prepared {
        let errors = (spec.on_error == ErrorPolicy::Record).then(|| spec.error_stream());
        for stream in spec.outputs.iter().cloned().chain(errors) {
            if named.insert(stream.clone()) {
                topics.push(TopicSpec {
                    name: stream,
                    partitions: 1,
                    replication: args.kafka_replication,
                    config: topic_config(&CleanupPolicy::Retain),
                });
            }
        }
    }
    // Each processor's state changelog: compacted (only each key's last
    // change matters), one partition per partition index of its inputs.
    for (spec, _) in &prepared {
        let mut partitions = 1;
        for input in &spec.inputs {
            let declared = topics
                .iter()
                .find(|t| &t.name == input)
                .map(|t| t.partitions);
            let n = match declared {
                Some(n) => n,
                None => topic_partitions(&options, input)?.unwrap_or(1),
            };
            partitions = partitions.max(n);
        }
        let name = changelog_topic(&spec.name);
        if named.insert(name.clone()) {
            topics.push(TopicSpec {
                name,
                partitions,
                replication: args.kafka_replication,
                config: vec![("cleanup.policy".into(), "compact".into())],
            });
        }
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
                    println!(
                        "processor {}: {} event(s) in, {} event(s) out, {} transaction(s)",
                        spec.name, report.events_in, report.events_out, report.transactions
                    );
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
    let signals = stop.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(crate::serve::shutdown_signal());
                signals.store(true, Ordering::Release);
            }
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
            Ok(Ok(report)) => println!(
                "processor {name}: {} event(s) in, {} event(s) out, {} transaction(s), {} aborted, \
                 {} state record(s) restored",
                report.events_in,
                report.events_out,
                report.transactions,
                report.aborted,
                report.restored
            ),
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

/// A Leat stream's cleanup as Kafka topic settings. Leat keeps events
/// forever by default, Kafka for 7 days: a retained stream gets
/// `retention.ms=-1`.
fn topic_config(cleanup: &CleanupPolicy) -> Vec<(String, String)> {
    let set = |k: &str, v: String| (k.to_owned(), v);
    match cleanup {
        CleanupPolicy::Retain => vec![set("retention.ms", "-1".into())],
        CleanupPolicy::Delete {
            max_age_ms,
            max_bytes,
        } => {
            let mut config = vec![set("cleanup.policy", "delete".into())];
            config.push(set(
                "retention.ms",
                max_age_ms.map_or("-1".into(), |ms| ms.to_string()),
            ));
            if let Some(bytes) = max_bytes {
                config.push(set("retention.bytes", bytes.to_string()));
            }
            config
        }
        CleanupPolicy::Compact { tombstone_grace_ms } => vec![
            set("cleanup.policy", "compact".into()),
            set("delete.retention.ms", tombstone_grace_ms.to_string()),
        ],
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
