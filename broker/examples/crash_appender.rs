//! Appends to a log until it is killed: the child process of the broker's
//! crash test (`tests/crash.rs`).
//!
//! Usage: `crash_appender <db path> <run number>`. Two threads commit
//! transactions of 1 to 20 records to stream `crash` (created if missing, 3
//! partitions); after each commit is acknowledged, every record of it is
//! printed as one line `partition offset payload`, where the payload is
//! `run-thread-txn-index/count`. Each transaction also sets state
//! `crash`/`last-<thread>` to `run-thread-txn`, and puts (even `txn`) or
//! deletes (odd) `crash`/`even-<thread>`. Thread 1 commits with
//! `commit_pipelined` and prints once `sync` returns, so that the kills also
//! land while the flusher makes its groups durable.

use std::io::Write;

use leat_broker::{Broker, BrokerOptions, Error, Record, StreamConfig, Transaction};

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(run)) = (args.next(), args.next()) else {
        eprintln!("usage: crash_appender <db path> <run number>");
        std::process::exit(2);
    };
    let broker = Broker::open_with(
        &path,
        BrokerOptions {
            maintenance_interval: None,
            // Small, so that the kills land around checkpoints too.
            checkpoint_bytes: 64 << 10,
            ..BrokerOptions::default()
        },
    )?;
    match broker.create_stream("crash", StreamConfig::with_partitions(3)) {
        Ok(_) | Err(Error::StreamExists(_)) => {}
        Err(e) => return Err(e),
    }
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let broker = broker.clone();
            let run = run.clone();
            std::thread::spawn(move || append_forever(&broker, &run, t))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn append_forever(broker: &Broker, run: &str, thread: u32) -> Result<(), Error> {
    // A small xorshift: no dependency, different per run and thread.
    let mut seed = run.bytes().fold(u64::from(thread) * 7919 + 1, |s, b| {
        s.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for txn_no in 0u64.. {
        let count = 1 + next() % 20;
        let mut txn = Transaction::new();
        let payloads: Vec<String> = (0..count)
            .map(|i| format!("{run}-{thread}-{txn_no}-{i}/{count}"))
            .collect();
        for p in &payloads {
            let record = if next() % 4 == 0 {
                Record::value(p.clone())
            } else {
                Record::keyed(format!("k{}", next() % 16), p.clone())
            };
            txn.append("crash", record);
        }
        if next() % 3 == 0 {
            txn.commit_offset("crash-group", "crash", 0, txn_no);
        }
        txn.put_state(
            "crash",
            format!("last-{thread}").into_bytes(),
            format!("{run}-{thread}-{txn_no}").into_bytes(),
        );
        let even = format!("even-{thread}").into_bytes();
        if txn_no.is_multiple_of(2) {
            txn.put_state("crash", even, b"yes".to_vec());
        } else {
            txn.delete_state("crash", even);
        }
        let receipt = if thread == 1 {
            let receipt = broker.commit_pipelined(txn)?;
            broker.sync()?;
            receipt
        } else {
            broker.commit(txn)?
        };
        let mut out = String::new();
        for ((partition, offset), payload) in receipt.placements.iter().zip(&payloads) {
            out.push_str(&format!("{partition} {offset} {payload}\n"));
        }
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(out.as_bytes())
            .map_err(|_| Error::Closed)?;
        stdout.flush().map_err(|_| Error::Closed)?;
    }
    Ok(())
}
