//! `leat state`: a processor's committed state (interactive queries), on a
//! server or on the data directory. Lines are `partition<TAB>key<TAB>value`.

use std::io::Write;

use anyhow::{bail, Result};
use clap::Subcommand;
use leat_api::{self as api, StateLookup};

use crate::backend::Backend;

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Print the committed entry of KEY in PROCESSOR's state.
    Get {
        /// The processor.
        processor: String,
        /// The key.
        key: String,
        /// Look in this partition index only (default: every one).
        #[arg(long)]
        partition: Option<u32>,
    },
    /// Print the committed entries of PROCESSOR's state whose key starts with a prefix.
    Scan {
        /// The processor.
        processor: String,
        /// The key prefix (default: every key).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Look in this partition index only (default: every one).
        #[arg(long)]
        partition: Option<u32>,
        /// Entries at most.
        #[arg(long, default_value_t = 100,
              value_parser = clap::value_parser!(u64).range(1..=api::MAX_STATE_ENTRIES as u64))]
        limit: u64,
    },
}

pub fn state(backend: &dyn Backend, cmd: StateCommand) -> Result<()> {
    let (processor, query) = match cmd {
        StateCommand::Get {
            processor,
            key,
            partition,
        } => (
            processor,
            api::StateQuery {
                lookup: StateLookup::Key(key),
                partition,
                limit: api::MAX_STATE_ENTRIES,
            },
        ),
        StateCommand::Scan {
            processor,
            prefix,
            partition,
            limit,
        } => (
            processor,
            api::StateQuery {
                lookup: StateLookup::Prefix(prefix),
                partition,
                limit: usize::try_from(limit).unwrap_or(api::MAX_STATE_ENTRIES),
            },
        ),
    };
    let view = backend.state(&processor, query.clone())?;
    let mut out = std::io::stdout().lock();
    for e in &view.entries {
        writeln!(out, "{}\t{}\t{}", e.partition, e.key, e.value)?;
    }
    out.flush()?;
    match query.lookup {
        StateLookup::Key(key) if view.entries.is_empty() => bail!(
            "processor {processor} has no committed entry for key `{key}` (searched partition(s) {})",
            list(&view.partitions)
        ),
        _ if view.truncated => eprintln!(
            "(more entries match: showing the first {}; raise --limit or narrow --prefix)",
            view.entries.len()
        ),
        _ => {}
    }
    Ok(())
}

fn list(partitions: &[u32]) -> String {
    partitions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
