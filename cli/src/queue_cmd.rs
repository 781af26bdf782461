//! `leat queue` and `leat consume --queue`: consuming a stream as a queue
//! group, over a [`Backend`].

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Subcommand;
use leat_api::{self as api, LockId, Position, QueueAction};

use crate::backend::Backend;
use crate::commands::{print_event, AckMode, ConsumeArgs};

/// Events acquired per call.
const BATCH: usize = 100;
/// How long `--follow` waits per call for an event.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Show a queue group: per partition its start, events in flight,
    /// accepted and rejected, the oldest lock's age and the lag.
    Status {
        /// The queue group.
        group: String,
    },
    /// Move a queue group on a stream: every event from there on is handed
    /// out again (held locks are lost, delivery counts start over).
    Reset {
        /// The queue group.
        group: String,
        /// The stream.
        #[arg(long)]
        stream: String,
        /// Where to: `beginning`, `end`, an offset, or `@MILLIS` (a timestamp).
        #[arg(long)]
        to: Position,
    },
    /// Change a queue group's settings; those not given stay as they are
    /// (for a new group: 5 deliveries, no dead letters, a window of 2000;
    /// for a new processor's: dead letters, a window of two batches per instance).
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true)))]
    Config {
        /// The queue group.
        group: String,
        /// Archive an event as rejected once handed out this many times
        /// without being accepted (1 to 1000).
        #[arg(long, group = "change")]
        max_deliveries: Option<u16>,
        /// Also append archived events to `GROUP.dead` (created if
        /// missing); `--dead-letter false` stops it.
        #[arg(long, group = "change", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        dead_letter: Option<bool>,
        /// Hand out at most this many events past a partition's oldest
        /// unsettled one (1 to 10000; 2000 for a new group, a batch per
        /// instance for a new processor's): members sharing a partition
        /// share it.
        #[arg(long, group = "change", value_name = "EVENTS")]
        window: Option<u32>,
    },
    /// Accept held events (done): `leat consume --queue G --ack manual` prints their locks.
    Accept {
        /// The queue group.
        group: String,
        /// The locks.
        #[arg(required = true)]
        locks: Vec<LockId>,
    },
    /// Release held events: they are handed out again.
    Release {
        /// The queue group.
        group: String,
        /// The locks.
        #[arg(required = true)]
        locks: Vec<LockId>,
    },
    /// Reject held events: never handed out again.
    Reject {
        /// The queue group.
        group: String,
        /// The locks.
        #[arg(required = true)]
        locks: Vec<LockId>,
    },
    /// Extend held events' locks.
    Renew {
        /// The queue group.
        group: String,
        /// The new duration from now, in ms.
        #[arg(long, default_value_t = api::DEFAULT_LOCK_MS)]
        lock_ms: u64,
        /// The locks.
        #[arg(required = true)]
        locks: Vec<LockId>,
    },
}

pub fn queue(backend: &dyn Backend, cmd: QueueCommand) -> Result<()> {
    let act = |group: String, action, locks, lock_ms| {
        backend.queue_act(&group, action, api::QueueLocks { locks, lock_ms })
    };
    let done = match cmd {
        QueueCommand::Status { group } => return print_status(&backend.queue_status(&group)?),
        QueueCommand::Reset { group, stream, to } => {
            backend.queue_reset(&group, api::QueueReset { stream, to })?
        }
        QueueCommand::Config {
            group,
            max_deliveries,
            dead_letter,
            window,
        } => backend.queue_configure(
            &group,
            api::QueueSettingsChange {
                max_deliveries,
                dead_letter,
                window,
            },
        )?,
        QueueCommand::Accept { group, locks } => {
            act(group, QueueAction::Accept, locks, api::DEFAULT_LOCK_MS)?
        }
        QueueCommand::Release { group, locks } => {
            act(group, QueueAction::Release, locks, api::DEFAULT_LOCK_MS)?
        }
        QueueCommand::Reject { group, locks } => {
            act(group, QueueAction::Reject, locks, api::DEFAULT_LOCK_MS)?
        }
        QueueCommand::Renew {
            group,
            lock_ms,
            locks,
        } => act(group, QueueAction::Renew, locks, lock_ms)?,
    };
    println!("{}", done.message);
    Ok(())
}

fn print_status(status: &api::QueueStatusView) -> Result<()> {
    println!(
        "{}",
        api::queue_settings_line(&status.group, &status.settings)
    );
    println!("STREAM\tPARTITION\tSTART\tIN_FLIGHT\tACCEPTED\tREJECTED\tOLDEST_LOCK_MS\tLAG");
    for p in &status.partitions {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            p.stream,
            p.partition,
            p.start,
            p.in_flight,
            p.accepted,
            p.rejected,
            p.oldest_lock_ms.map_or("-".into(), |ms| ms.to_string()),
            p.lag
        );
    }
    Ok(())
}

/// `leat consume STREAM --queue GROUP`: acquires and prints events until
/// none is available (or, with `--follow`, forever) or `--limit` is
/// reached; with `--ack auto`, accepts each batch once it is printed.
pub fn consume(backend: &dyn Backend, args: ConsumeArgs) -> Result<()> {
    let Some(group) = args.queue.as_deref() else {
        bail!("--queue GROUP is needed to consume as a queue");
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut printed = 0u64;
    loop {
        let left = args.limit.map_or(u64::MAX, |l| l.saturating_sub(printed));
        if left == 0 {
            return Ok(());
        }
        let got = backend.queue_acquire(
            group,
            api::QueueAcquire {
                stream: args.stream.clone(),
                max: usize::try_from(left).unwrap_or(BATCH).min(BATCH),
                lock_ms: args.lock_ms,
                wait_ms: if args.follow {
                    FOLLOW_WAIT.as_millis() as u64
                } else {
                    0
                },
            },
        )?;
        if got.events.is_empty() {
            if args.follow {
                continue;
            }
            return Ok(());
        }
        for e in &got.events {
            if args.ack == AckMode::Manual {
                write!(out, "{}\t", e.lock)?;
            }
            print_event(&mut out, &e.event, args.headers)?;
        }
        out.flush()?;
        printed += got.events.len() as u64;
        if args.ack == AckMode::Auto {
            backend.queue_act(
                group,
                QueueAction::Accept,
                api::QueueLocks {
                    locks: got.events.iter().map(|e| e.lock).collect(),
                    lock_ms: args.lock_ms,
                },
            )?;
        }
    }
}
