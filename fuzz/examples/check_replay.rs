//! Checks that the `journal_replay` seeds replay: the log reopened with the
//! seed journal "0-framed" holds more events than the template.
use leat_broker::{Broker, ReadLimits};
use leat_fuzz::*;

fn count(db: &std::path::Path) -> usize {
    let b = Broker::open_with(db, options()).unwrap();
    (0..3)
        .map(|p| {
            b.read("orders", p, 0, ReadLimits::default())
                .unwrap()
                .events
                .len()
        })
        .sum()
}

fn main() {
    let t = build_template();
    let seed = std::fs::read("corpus/journal_replay/0-framed").unwrap();
    let mut body = &seed[1..];
    let mut journal = t.journal_bytes[..JOURNAL_HEADER_LEN].to_vec();
    let mut seq = t.applied;
    while body.len() >= 2 {
        let len = u16::from_le_bytes([body[0], body[1]]) as usize;
        seq += 1;
        frame_record(&mut journal, t.segment, seq, &body[2..2 + len]);
        body = &body[2 + len..];
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(DB_NAME);
    std::fs::copy(&t.db, &db).unwrap();
    let before = count(&db);
    std::fs::copy(&t.db, &db).unwrap();
    std::fs::write(dir.path().join(t.journal.file_name().unwrap()), &journal).unwrap();
    let after = count(&db);
    println!("orders events: template {before}, after replaying the seed {after}");
    assert!(after > before);
}
