//! Queue groups: each event handed to one member at a time, settled one by
//! one, durably, beside consumer groups on the same stream.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{broker, open, read_all, Rng};
use leat_broker::{
    Ack, Error, LockId, QueueConfig, QueueStart, Record, StreamConfig, Transaction, Waiter,
    DEAD_REASON_HEADER, DEAD_SOURCE_HEADER, DEFAULT_WINDOW, MAX_WINDOW,
};

const LONG: Duration = Duration::from_secs(60);

/// A group's window until it sets one.
const WINDOW: usize = DEFAULT_WINDOW as usize;

fn fill(broker: &leat_broker::Broker, stream: &str, partitions: u32, n: usize) {
    broker
        .create_stream(stream, StreamConfig::with_partitions(partitions))
        .unwrap();
    let records: Vec<Record> = (0..n)
        .map(|i| Record::value(format!("e{i}")).to_partition(i as u32 % partitions))
        .collect();
    for chunk in records.chunks(5000) {
        broker.append(stream, chunk.to_vec()).unwrap();
    }
}

/// A log with `n` events in one partition of "in", and an empty "out".
fn in_and_out(n: usize) -> (tempfile::TempDir, leat_broker::Broker) {
    let (dir, broker) = broker();
    fill(&broker, "in", 1, n);
    broker
        .create_stream("out", StreamConfig::with_partitions(1))
        .unwrap();
    (dir, broker)
}

fn values(events: &[leat_broker::Acquired]) -> Vec<String> {
    events
        .iter()
        .map(|a| String::from_utf8_lossy(a.event.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

#[test]
fn each_event_is_handed_out_once_and_accepted_once() {
    let (_dir, broker) = broker();
    fill(&broker, "jobs", 3, 30);
    let first = broker.queue_acquire("q", "jobs", 20, LONG).unwrap();
    let second = broker.queue_acquire("q", "jobs", 20, LONG).unwrap();
    assert_eq!(first.len(), 20);
    assert_eq!(second.len(), 10);
    let all: BTreeSet<_> = values(&first).into_iter().chain(values(&second)).collect();
    assert_eq!(all.len(), 30);
    assert!(first.iter().all(|a| a.delivery_count == 1));
    assert!(broker
        .queue_acquire("q", "jobs", 20, LONG)
        .unwrap()
        .is_empty());

    let locks: Vec<_> = first.iter().chain(&second).map(|a| a.lock).collect();
    broker.queue_settle("q", &locks, Ack::Accept).unwrap();
    // Settled: the same lock is refused, and nothing of that call is done.
    let again = broker.queue_settle("q", &locks[..1], Ack::Accept);
    assert!(matches!(again, Err(Error::LockLost { .. })), "{again:?}");
    let status = broker.queue_status("q").unwrap();
    assert_eq!(status.partitions.len(), 3);
    for p in &status.partitions {
        assert_eq!((p.start, p.accepted, p.in_flight, p.lag), (10, 10, 0, 0));
    }
    // A new event is handed out.
    broker.append("jobs", [Record::value("late")]).unwrap();
    assert_eq!(
        values(&broker.queue_acquire("q", "jobs", 20, LONG).unwrap()),
        vec!["late"]
    );
}

#[test]
fn released_events_come_back_and_rejected_ones_do_not() {
    let (_dir, broker) = broker();
    fill(&broker, "jobs", 1, 3);
    let got = broker.queue_acquire("q", "jobs", 3, LONG).unwrap();
    broker
        .queue_settle("q", &[got[0].lock], Ack::Release)
        .unwrap();
    broker
        .queue_settle("q", &[got[1].lock], Ack::Reject)
        .unwrap();
    let again = broker.queue_acquire("q", "jobs", 3, LONG).unwrap();
    assert_eq!(values(&again), vec!["e0"]);
    assert_eq!(again[0].delivery_count, 2);
    let s = &broker.queue_status("q").unwrap().partitions[0];
    assert_eq!((s.rejected, s.in_flight, s.start), (1, 2, 0));
    assert!(s.oldest_lock.is_some());
}

#[test]
fn an_expired_lock_redelivers_and_is_lost_once_handed_out_again() {
    let (_dir, broker) = broker();
    fill(&broker, "jobs", 1, 1);
    // Long enough that the second acquisition comes before it ends on a loaded
    // machine (30 ms was not always).
    let short = Duration::from_millis(500);
    let first = broker.queue_acquire("q", "jobs", 1, short).unwrap();
    assert!(broker
        .queue_acquire("q", "jobs", 1, short)
        .unwrap()
        .is_empty());
    std::thread::sleep(Duration::from_millis(600));
    let second = broker.queue_acquire("q", "jobs", 1, LONG).unwrap();
    assert_eq!(values(&second), vec!["e0"]);
    assert_eq!(second[0].delivery_count, 2);
    let stale = broker.queue_settle("q", &[first[0].lock], Ack::Accept);
    assert!(matches!(stale, Err(Error::LockLost { .. })), "{stale:?}");
    // A renewal keeps a lock.
    broker
        .queue_renew("q", &[second[0].lock], Duration::from_secs(5))
        .unwrap();
    broker
        .queue_settle("q", &[second[0].lock], Ack::Accept)
        .unwrap();
    assert_eq!(broker.queue_status("q").unwrap().partitions[0].accepted, 1);
}

#[test]
fn past_max_deliveries_an_event_is_archived_and_dead_lettered() {
    let (_dir, broker) = broker();
    fill(&broker, "jobs", 1, 2);
    broker
        .queue_configure(
            "q",
            QueueConfig {
                max_deliveries: 2,
                dead_letter: true,
                ..QueueConfig::default()
            },
        )
        .unwrap();
    for round in 1..=2 {
        let got = broker.queue_acquire("q", "jobs", 1, LONG).unwrap();
        assert_eq!(values(&got), vec!["e0"]);
        assert_eq!(got[0].delivery_count, round);
        broker
            .queue_settle("q", &[got[0].lock], Ack::Release)
            .unwrap();
    }
    // The third hand-out archives e0 and goes on to e1.
    let got = broker.queue_acquire("q", "jobs", 1, LONG).unwrap();
    assert_eq!(values(&got), vec!["e1"]);
    let dead = read_all(&broker, "q.dead", 0);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value.as_deref(), Some(&b"e0"[..]));
    assert_eq!(
        dead[0].header(DEAD_SOURCE_HEADER).map(|v| v.to_vec()),
        Some(b"jobs/0/0".to_vec())
    );
    assert!(dead[0].header(DEAD_REASON_HEADER).is_some());
    let s = &broker.queue_status("q").unwrap().partitions[0];
    assert_eq!((s.rejected, s.start), (1, 1));
}

#[test]
fn a_restart_keeps_what_was_settled_and_the_delivery_counts_past_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        let broker = open(&path);
        fill(&broker, "jobs", 2, 10);
        let got = broker.queue_acquire("q", "jobs", 6, LONG).unwrap();
        // Accept all but the first two; those stay held at the restart.
        let locks: Vec<_> = got[2..].iter().map(|a| a.lock).collect();
        broker.queue_settle("q", &locks, Ack::Accept).unwrap();
    }
    let broker = open(&path);
    let s = broker.queue_status("q").unwrap();
    assert_eq!(s.partitions.iter().map(|p| p.accepted).sum::<u64>(), 4);
    assert_eq!(s.partitions.iter().map(|p| p.in_flight).sum::<u64>(), 0);
    let got = broker.queue_acquire("q", "jobs", 100, LONG).unwrap();
    assert_eq!(got.len(), 6, "{:?}", values(&got));
    // A first hand-out is not written: the two held come back as new.
    assert!(got.iter().all(|a| a.delivery_count == 1));
    // Released and handed out again, they count 2, written before.
    let held: Vec<_> = got[..2].iter().map(|a| a.lock).collect();
    let held_values = values(&got[..2]);
    broker.queue_settle("q", &held, Ack::Release).unwrap();
    let others: Vec<_> = got[2..].iter().map(|a| a.lock).collect();
    broker.queue_settle("q", &others, Ack::Accept).unwrap();
    let again = broker.queue_acquire("q", "jobs", 100, LONG).unwrap();
    assert_eq!(values(&again), held_values);
    assert!(again.iter().all(|a| a.delivery_count == 2));
    drop(broker);
    let broker = open(&path);
    let got = broker.queue_acquire("q", "jobs", 100, LONG).unwrap();
    assert_eq!(values(&got), held_values);
    assert!(got.iter().all(|a| a.delivery_count == 3), "{got:?}");
    let locks: Vec<_> = got.iter().map(|a| a.lock).collect();
    broker.queue_settle("q", &locks, Ack::Accept).unwrap();
    let s = broker.queue_status("q").unwrap();
    assert!(s.partitions.iter().all(|p| p.start == 5 && p.lag == 0));
}

#[test]
fn outputs_and_acceptances_commit_together_or_not_at_all() {
    let (_dir, broker) = in_and_out(2);
    let got = broker.queue_acquire("q", "in", 2, LONG).unwrap();
    let mut txn = Transaction::new();
    txn.append("out", Record::value("o0"));
    txn.settle("q", got[0].lock, Ack::Accept);
    broker.commit(txn).unwrap();
    // A commit with a lock no longer held writes nothing.
    let mut txn = Transaction::new();
    txn.append("out", Record::value("o1"));
    txn.settle("q", got[1].lock, Ack::Accept);
    txn.settle("q", got[0].lock, Ack::Accept);
    let refused = broker.commit(txn);
    assert!(
        matches!(refused, Err(Error::LockLost { .. })),
        "{refused:?}"
    );
    assert_eq!(read_all(&broker, "out", 0).len(), 1);
    // The refused commit left e1's lock held.
    let mut txn = Transaction::new();
    txn.append("out", Record::value("o1"));
    txn.settle("q", got[1].lock, Ack::Accept);
    broker.commit(txn).unwrap();
    assert_eq!(read_all(&broker, "out", 0).len(), 2);
    // A commit refused for another reason gives the lock back too.
    let more = {
        broker.append("in", [Record::value("e2")]).unwrap();
        broker.queue_acquire("q", "in", 1, LONG).unwrap()
    };
    let generation = broker.bump_generation("g").unwrap();
    let mut txn = Transaction::new();
    txn.settle("q", more[0].lock, Ack::Accept);
    txn.require_generation("g", generation + 1);
    assert!(matches!(
        broker.commit(txn),
        Err(Error::FencedGeneration { .. })
    ));
    broker
        .queue_settle("q", &[more[0].lock], Ack::Accept)
        .unwrap();
    assert_eq!(broker.queue_status("q").unwrap().partitions[0].accepted, 3);
}

#[test]
fn a_batch_settled_together_is_refused_whole_for_one_lost_lock_in_it() {
    let (_dir, broker) = in_and_out(5);
    let got = broker.queue_acquire("q", "in", 5, LONG).unwrap();
    // The middle event goes back and out again: its first lock is lost.
    broker
        .queue_settle("q", &[got[2].lock], Ack::Release)
        .unwrap();
    let again = broker.queue_acquire("q", "in", 5, LONG).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.offset, 2);
    let mut txn = Transaction::new();
    for a in &got {
        txn.append("out", Record::value("o"));
        txn.settle("q", a.lock, Ack::Accept);
    }
    match broker.commit(txn) {
        Err(Error::LockLost { lock, .. }) => assert_eq!(lock, got[2].lock.to_string()),
        other => panic!("{other:?}"),
    }
    assert!(read_all(&broker, "out", 0).is_empty());
    // The other four are still held, and settle around the lost one.
    let mut txn = Transaction::new();
    for a in got.iter().filter(|a| a.event.offset != 2) {
        txn.settle("q", a.lock, Ack::Accept);
    }
    txn.settle("q", again[0].lock, Ack::Reject);
    broker.commit(txn).unwrap();
    let status = &broker.queue_status("q").unwrap().partitions[0];
    assert_eq!((status.start, status.accepted, status.rejected), (5, 4, 1));
}

#[test]
fn a_consumer_group_and_a_queue_group_of_one_name_do_not_disturb_each_other() {
    let (_dir, broker) = broker();
    fill(&broker, "jobs", 1, 10);
    broker.commit_offset("g", "jobs", 0, 7).unwrap();
    let got = broker.queue_acquire("g", "jobs", 100, LONG).unwrap();
    assert_eq!(got.len(), 10);
    let locks: Vec<_> = got.iter().map(|a| a.lock).collect();
    broker.queue_settle("g", &locks, Ack::Accept).unwrap();
    assert_eq!(
        broker
            .committed()
            .unwrap()
            .committed_offset("g", "jobs", 0)
            .unwrap(),
        Some(7)
    );
    assert_eq!(read_all(&broker, "jobs", 0).len(), 10);
    let groups = broker.groups().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].positions[0].committed, 7);
}

#[test]
fn a_reset_hands_everything_out_again_or_skips_to_the_end() {
    let (_dir, broker) = broker();
    fill(&broker, "jobs", 2, 10);
    let got = broker.queue_acquire("q", "jobs", 100, LONG).unwrap();
    let locks: Vec<_> = got.iter().map(|a| a.lock).collect();
    broker.queue_settle("q", &locks, Ack::Accept).unwrap();
    broker
        .queue_reset("q", "jobs", QueueStart::Earliest)
        .unwrap();
    let again = broker.queue_acquire("q", "jobs", 100, LONG).unwrap();
    assert_eq!(again.len(), 10);
    assert!(again.iter().all(|a| a.delivery_count == 1));
    // The reset lost the locks held.
    let stale = broker.queue_settle("q", &[again[0].lock], Ack::Accept);
    broker.queue_reset("q", "jobs", QueueStart::Latest).unwrap();
    assert!(stale.is_ok());
    let stale = broker.queue_settle("q", &[again[1].lock], Ack::Accept);
    assert!(matches!(stale, Err(Error::LockLost { .. })), "{stale:?}");
    assert!(broker
        .queue_acquire("q", "jobs", 100, LONG)
        .unwrap()
        .is_empty());
    broker
        .queue_reset("q", "jobs", QueueStart::Offset(3))
        .unwrap();
    assert_eq!(
        broker.queue_acquire("q", "jobs", 100, LONG).unwrap().len(),
        4
    );
}

#[test]
fn the_window_is_bounded_behind_an_event_never_settled() {
    let (_dir, broker) = broker();
    fill(&broker, "jobs", 1, WINDOW + 10);
    let stuck = broker.queue_acquire("q", "jobs", 1, LONG).unwrap();
    let mut handed = 1;
    loop {
        let got = broker.queue_acquire("q", "jobs", 500, LONG).unwrap();
        if got.is_empty() {
            break;
        }
        handed += got.len();
        let locks: Vec<_> = got.iter().map(|a| a.lock).collect();
        broker.queue_settle("q", &locks, Ack::Accept).unwrap();
    }
    assert_eq!(handed, WINDOW);
    broker
        .queue_settle("q", &[stuck[0].lock], Ack::Accept)
        .unwrap();
    let s = &broker.queue_status("q").unwrap().partitions[0];
    assert_eq!((s.start, s.lag), (WINDOW as u64, 10));
}

#[test]
fn a_group_sets_its_window_and_what_it_settled_past_a_narrower_one_stays_settled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let wide = QueueConfig {
        window: 2500,
        ..QueueConfig::default()
    };
    for window in [0, MAX_WINDOW as u32 + 1] {
        let refused = open(&path).queue_configure("q", QueueConfig { window, ..wide });
        assert!(
            matches!(&refused, Err(Error::InvalidConfig(m)) if m.contains("window must be 1 to 10000")),
            "{refused:?}"
        );
    }
    {
        let broker = open(&path);
        fill(&broker, "jobs", 1, 3000);
        broker.queue_configure("q", wide).unwrap();
        let got = broker.queue_acquire("q", "jobs", 3000, LONG).unwrap();
        assert_eq!(got.len(), 2500);
        // All but the front accepted, out of order behind it.
        let locks: Vec<_> = got[1..].iter().map(|a| a.lock).collect();
        broker.queue_settle("q", &locks, Ack::Accept).unwrap();
        broker
            .queue_configure(
                "q",
                QueueConfig {
                    window: 100,
                    ..wide
                },
            )
            .unwrap();
    }
    // After a restart with a window of 100, the 2,499 accepted past it stay
    // accepted: only the front comes back, and nothing new fits.
    let broker = open(&path);
    assert_eq!(broker.queue_config("q").unwrap().window, 100);
    let got = broker.queue_acquire("q", "jobs", 3000, LONG).unwrap();
    assert_eq!(values(&got), vec!["e0"]);
    let (next, _) = acquired_after(&broker, "jobs", 3000, || {
        broker
            .queue_settle("q", &[got[0].lock], Ack::Accept)
            .unwrap();
    });
    assert_eq!(next.len(), 100);
    assert_eq!(values(&next[..1]), vec!["e2500"]);
    // A wider window wakes a member waiting for room.
    let (more, waited) = acquired_after(&broker, "jobs", 3000, || {
        let wider = QueueConfig {
            window: 300,
            ..wide
        };
        broker.queue_configure("q", wider).unwrap();
    });
    assert_eq!(more.len(), 200);
    assert!(waited < LONG, "woken by its timeout");
    let s = &broker.queue_status("q").unwrap().partitions[0];
    assert_eq!((s.start, s.accepted, s.in_flight), (2500, 2500, 300));
}

#[test]
fn members_waiting_are_woken_by_appends_and_releases() {
    let (_dir, broker) = broker();
    broker
        .create_stream("jobs", StreamConfig::with_partitions(2))
        .unwrap();
    let (got, _) = acquired_after(&broker, "jobs", 10, || {
        broker.append("jobs", [Record::value("x")]).unwrap();
    });
    assert_eq!(values(&got), vec!["x"]);
    // A release wakes a waiter too.
    let (again, _) = acquired_after(&broker, "jobs", 10, || {
        broker
            .queue_settle("q", &[got[0].lock], Ack::Release)
            .unwrap();
    });
    assert_eq!(again[0].delivery_count, 2);
    // So does an expiry, and a timeout ends a wait with nothing.
    let short = broker
        .queue_acquire_wait(
            "q",
            "jobs",
            10,
            LONG,
            Duration::from_millis(20),
            &mut Waiter::new(),
        )
        .unwrap();
    assert!(short.is_empty());
}

/// Waits on another thread for group `q` to hand out up to `max` events of
/// `stream`, runs `meanwhile` 50 ms into the wait, and returns what the
/// wait got and how long it took.
fn acquired_after(
    broker: &leat_broker::Broker,
    stream: &str,
    max: usize,
    meanwhile: impl FnOnce(),
) -> (Vec<leat_broker::Acquired>, Duration) {
    let (b, stream) = (broker.clone(), stream.to_string());
    let waiting = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let got = b
            .queue_acquire_wait("q", &stream, max, LONG, LONG, &mut Waiter::new())
            .unwrap();
        (got, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    meanwhile();
    waiting.join().unwrap()
}

/// Fills `stream` (one partition) with `WINDOW + past` events and takes
/// its whole window: the front held, whose lock is returned, the rest
/// accepted; `past` events wait for room.
fn full_window(broker: &leat_broker::Broker, stream: &str, past: usize) -> LockId {
    fill(broker, stream, 1, WINDOW + past);
    let front = broker.queue_acquire("q", stream, 1, LONG).unwrap();
    let rest = broker.queue_acquire("q", stream, WINDOW, LONG).unwrap();
    assert_eq!(rest.len(), WINDOW - 1);
    let locks: Vec<_> = rest.iter().map(|a| a.lock).collect();
    broker.queue_settle("q", &locks, Ack::Accept).unwrap();
    assert_eq!(broker.queue_backlog("q", stream).unwrap() as usize, past);
    front[0].lock
}

/// Runs `wait` on another thread, accepts `front` meanwhile, and checks that
/// this woke the wait (no append or release comes) rather than its timeout.
fn woken_by_accepting<T: Send + 'static>(
    broker: &leat_broker::Broker,
    front: LockId,
    wait: impl FnOnce(leat_broker::Broker) -> T + Send + 'static,
) -> T {
    let b = broker.clone();
    let waiting = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        (wait(b), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    broker.queue_settle("q", &[front], Ack::Accept).unwrap();
    let (got, waited) = waiting.join().unwrap();
    assert!(waited < LONG / 4, "woken only by the timeout: {waited:?}");
    got
}

#[test]
fn members_waiting_at_a_full_window_are_woken_when_its_front_is_accepted() {
    let (_dir, broker) = broker();
    let front = full_window(&broker, "jobs", 10);
    let got = woken_by_accepting(&broker, front, |b| {
        b.queue_acquire_wait("q", "jobs", 100, LONG, LONG, &mut Waiter::new())
            .unwrap()
    });
    assert_eq!(got.len(), 10);
    assert_eq!(broker.queue_backlog("q", "jobs").unwrap(), 0);
    // Every event left is held by a member: nothing to wait for.
    let left = broker
        .queue_wait_for_room("q", "jobs", LONG, &mut Waiter::new())
        .unwrap();
    assert!(!left);
    // A wait for room ends with an event let in.
    let front = full_window(&broker, "more", 1);
    let left = woken_by_accepting(&broker, front, |b| {
        b.queue_wait_for_room("q", "more", LONG, &mut Waiter::new())
            .unwrap()
    });
    assert!(left);
}

#[test]
fn many_members_over_one_partition_all_work_and_accept_each_event_once() {
    let (_dir, broker) = broker();
    let n = 2000;
    fill(&broker, "jobs", 1, n);
    // Under load a batch can outlast its 200 ms locks, so an event may go
    // undelivered more than the default 5 times and be archived as
    // rejected, as it should: this test is about each event accepted once.
    broker
        .queue_configure(
            "q",
            QueueConfig {
                max_deliveries: 1000,
                ..QueueConfig::default()
            },
        )
        .unwrap();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let members: Vec<_> = (0..6)
        .map(|m| {
            let broker = broker.clone();
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(m + 1);
                let mut mine = 0;
                loop {
                    let got = broker
                        .queue_acquire_wait(
                            "q",
                            "jobs",
                            1 + rng.below(20) as usize,
                            Duration::from_millis(200),
                            Duration::from_millis(300),
                            &mut Waiter::new(),
                        )
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    for a in got {
                        // Some releases, some left to expire, most accepted.
                        match rng.below(20) {
                            // A slow member may release past its lock: then the
                            // lock is lost and the event is someone else's.
                            0 => match broker.queue_settle("q", &[a.lock], Ack::Release) {
                                Ok(()) | Err(Error::LockLost { .. }) => {}
                                Err(e) => panic!("release: {e}"),
                            },
                            1 => {}
                            _ => match broker.queue_settle("q", &[a.lock], Ack::Accept) {
                                Ok(()) => {
                                    mine += 1;
                                    accepted.lock().unwrap().push(a.event.offset);
                                }
                                Err(Error::LockLost { .. }) => {}
                                Err(e) => panic!("accept: {e}"),
                            },
                        }
                    }
                }
            })
        })
        .collect();
    let per_member: Vec<usize> = members.into_iter().map(|m| m.join().unwrap()).collect();
    assert!(per_member.iter().all(|&c| c > 0), "{per_member:?}");
    let accepted = accepted.lock().unwrap();
    let distinct: HashSet<_> = accepted.iter().collect();
    assert_eq!(
        distinct.len(),
        accepted.len(),
        "an event was accepted twice"
    );
    let s = &broker.queue_status("q").unwrap().partitions[0];
    assert_eq!(accepted.len(), n, "{s:?}");
    assert_eq!(
        (s.start, s.accepted, s.rejected, s.lag),
        (n as u64, n as u64, 0, 0)
    );
}

/// A random walk of acquisitions, settlements, expiries and reopens against
/// a model: an event is accepted or rejected at most once, never handed out
/// while held, and the delivery counts only grow.
#[test]
fn random_walks_keep_the_queue_invariants() {
    for seed in 1..=6u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.redb");
        let mut broker = open(&path);
        fill(&broker, "jobs", 2, 300);
        let mut rng = Rng(seed);
        let mut done: BTreeMap<(u32, u64), Ack> = BTreeMap::new();
        let mut held: Vec<leat_broker::Acquired> = Vec::new();
        let mut deliveries: BTreeMap<(u32, u64), u16> = BTreeMap::new();
        for _ in 0..200 {
            match rng.below(10) {
                0..=3 => {
                    let lock = if rng.below(4) == 0 {
                        Duration::from_millis(1)
                    } else {
                        LONG
                    };
                    let got = broker
                        .queue_acquire("q", "jobs", 1 + rng.below(30) as usize, lock)
                        .unwrap();
                    for a in got {
                        let at = (a.event.partition, a.event.offset);
                        assert!(
                            !done.contains_key(&at),
                            "{at:?} handed out after it was done"
                        );
                        let before = deliveries.insert(at, a.delivery_count).unwrap_or(0);
                        assert!(
                            a.delivery_count > before,
                            "{at:?}: {before} then {}",
                            a.delivery_count
                        );
                        held.retain(|h| (h.event.partition, h.event.offset) != at);
                        held.push(a);
                    }
                }
                4..=8 if !held.is_empty() => {
                    let i = rng.below(held.len() as u64) as usize;
                    let a = held.swap_remove(i);
                    let ack = [Ack::Accept, Ack::Accept, Ack::Reject, Ack::Release]
                        [rng.below(4) as usize];
                    let at = (a.event.partition, a.event.offset);
                    match broker.queue_settle("q", &[a.lock], ack) {
                        Ok(()) if ack != Ack::Release => {
                            assert!(done.insert(at, ack).is_none(), "{at:?} settled twice");
                        }
                        Ok(()) => {}
                        // Its 1 ms lock expired and it was handed out again.
                        Err(Error::LockLost { .. }) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                9 => {
                    drop(broker);
                    broker = open(&path);
                    held.clear();
                    // A first hand-out is not written: it may come again.
                    deliveries.retain(|_, count| *count > 1);
                }
                _ => {}
            }
        }
        let s = broker.queue_status("q").unwrap();
        let accepted = done.values().filter(|a| **a == Ack::Accept).count() as u64;
        assert_eq!(
            s.partitions.iter().map(|p| p.accepted).sum::<u64>(),
            accepted
        );
        let rejected = done.len() as u64 - accepted;
        // Archived events (5 deliveries) count as rejected too.
        assert!(s.partitions.iter().map(|p| p.rejected).sum::<u64>() >= rejected);
    }
}

/// Storage: the bookkeeping of acknowledged events does not grow with their
/// number. Prints the database's growth per event acknowledged.
#[test]
fn acknowledging_costs_at_most_ten_bytes_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let n = 100_000;
    let broker = open(&path);
    fill(&broker, "jobs", 4, n);
    // One round first, so that redb's tables exist and have their pages.
    let got = broker.queue_acquire("q", "jobs", 1000, LONG).unwrap();
    let locks: Vec<_> = got.iter().map(|a| a.lock).collect();
    broker.queue_settle("q", &locks, Ack::Accept).unwrap();
    broker.sync().unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    let mut acked = got.len();
    loop {
        let got = broker.queue_acquire("q", "jobs", 250, LONG).unwrap();
        if got.is_empty() {
            break;
        }
        acked += got.len();
        let locks: Vec<_> = got.iter().map(|a| a.lock).collect();
        broker.queue_settle("q", &locks, Ack::Accept).unwrap();
    }
    broker.sync().unwrap();
    let open_after = std::fs::metadata(&path).unwrap().len();
    drop(broker);
    let after = std::fs::metadata(&path).unwrap().len().max(open_after);
    assert_eq!(acked, n);
    let per_event = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "queue bookkeeping: {before} -> {open_after} (open), {after} (closed) bytes over {n} \
         acknowledged events: {per_event:.2} bytes/event"
    );
    assert!(per_event <= 10.0, "{per_event} bytes per event");
}

#[test]
fn a_lock_renewed_for_less_expires_at_its_new_time_and_its_event_goes_out_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(&dir.path().join("log.redb"));
    fill(&broker, "jobs", 1, 3);
    let got = broker.queue_acquire("q", "jobs", 2, LONG).unwrap();
    assert_eq!(got.len(), 2);
    // The first event's lock now ends in 20 ms, not in a minute.
    broker
        .queue_renew("q", &[got[0].lock], Duration::from_millis(20))
        .unwrap();
    std::thread::sleep(Duration::from_millis(40));
    // The expired event comes before the one never handed out.
    let again = broker.queue_acquire("q", "jobs", 1, LONG).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].event.offset, got[0].event.offset);
    assert_eq!(again[0].delivery_count, 2);
    // The other lock still holds: only the third event is left.
    let rest = broker.queue_acquire("q", "jobs", 10, LONG).unwrap();
    let offsets: Vec<u64> = rest.iter().map(|a| a.event.offset).collect();
    assert_eq!(offsets, [2]);
}
