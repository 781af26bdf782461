//! `/metrics`: the processors', streams' and API's counters in the
//! Prometheus text format.

use leat_api as api;

use crate::{Control, ControlError};

impl Control {
    /// With the HTTP layer's counters of requests and of requests refused
    /// for their token.
    pub fn metrics_text(&self, requests: u64, unauthorized: u64) -> Result<String, ControlError> {
        use std::fmt::Write;
        let processors = self.processors()?;
        let streams = self.log.streams()?;
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in rows {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per = |f: &dyn Fn(&api::ProcessorView) -> String| {
            processors
                .iter()
                .map(|p| (format!("{{processor=\"{}\"}}", p.name), f(p)))
                .collect::<Vec<_>>()
        };
        family(
            "leat_processor_events_in_total",
            "counter",
            "Input events processed and committed.",
            per(&|p| p.events_in.to_string()),
        );
        family(
            "leat_processor_events_out_total",
            "counter",
            "Output events committed.",
            per(&|p| p.events_out.to_string()),
        );
        family(
            "leat_processor_commits_total",
            "counter",
            "Batches committed.",
            per(&|p| p.batches.to_string()),
        );
        family(
            "leat_processor_failed_calls_total",
            "counter",
            "Guest calls that trapped, timed out or failed.",
            per(&|p| p.failed_calls.to_string()),
        );
        family(
            "leat_processor_traps_total",
            "counter",
            "Guest calls that trapped: a panic, a timeout, memory exhausted.",
            per(&|p| p.traps.to_string()),
        );
        family(
            "leat_processor_batch_latency_seconds",
            "histogram",
            "Time from a batch's guest call to its commit, for committed batches.",
            processors
                .iter()
                .flat_map(|p| {
                    let l = &p.batch_latency;
                    let name = &p.name;
                    l.buckets
                        .iter()
                        .map(move |(le, n)| {
                            let le = le.map_or_else(|| "+Inf".to_string(), |s| s.to_string());
                            (
                                format!("_bucket{{processor=\"{name}\",le=\"{le}\"}}"),
                                n.to_string(),
                            )
                        })
                        .chain([
                            (
                                format!("_sum{{processor=\"{name}\"}}"),
                                format!("{:.6}", l.sum_seconds),
                            ),
                            (
                                format!("_count{{processor=\"{name}\"}}"),
                                l.count.to_string(),
                            ),
                        ])
                })
                .collect(),
        );
        family(
            "leat_processor_lag",
            "gauge",
            "Input events not yet processed.",
            per(&|p| p.lag.to_string()),
        );
        family(
            "leat_processor_instances",
            "gauge",
            "Instances of the processor.",
            per(&|p| p.instances.len().to_string()),
        );
        family(
            "leat_processor_running",
            "gauge",
            "1 when the processor runs, 0 when it is paused or failed.",
            per(&|p| u8::from(p.state == api::ProcessorState::Running).to_string()),
        );
        family(
            "leat_processor_events_per_second",
            "gauge",
            "Input events per second over the last seconds.",
            per(&|p| format!("{:.3}", p.events_per_sec)),
        );
        family(
            "leat_stream_end_offset",
            "gauge",
            "The next offset of each partition.",
            streams
                .iter()
                .flat_map(|s| {
                    s.partitions.iter().enumerate().map(move |(p, e)| {
                        (
                            format!("{{stream=\"{}\",partition=\"{p}\"}}", s.name),
                            e.next_offset.to_string(),
                        )
                    })
                })
                .collect(),
        );
        let (events_produced, events_read) = self.log.counters();
        family(
            "leat_http_requests_total",
            "counter",
            "HTTP requests served.",
            vec![(String::new(), requests.to_string())],
        );
        family(
            "leat_http_unauthorized_total",
            "counter",
            "Requests refused for a missing or wrong token.",
            vec![(String::new(), unauthorized.to_string())],
        );
        family(
            "leat_events_produced_total",
            "counter",
            "Events appended through the API.",
            vec![(String::new(), events_produced.to_string())],
        );
        family(
            "leat_events_read_total",
            "counter",
            "Events read through the API.",
            vec![(String::new(), events_read.to_string())],
        );
        family(
            "leat_uptime_seconds",
            "gauge",
            "Seconds since the server started.",
            vec![(String::new(), self.started.elapsed().as_secs().to_string())],
        );
        Ok(out)
    }
}
