//! The thin end-to-end slice: events in, the `uppercase` guest, uppercase
//! events out, offsets committed with the outputs, and a restart that
//! resumes without reprocessing.

use leat_broker::{Broker, ReadLimits};
use leat_tests::{guest, leat, leat_ok};

fn read_all(broker: &Broker, stream: &str) -> Vec<leat_broker::Event> {
    let info = broker.describe_stream(stream).unwrap();
    let mut all = Vec::new();
    for p in 0..info.partitions.len() as u32 {
        let batch = broker
            .read(
                stream,
                p,
                0,
                ReadLimits {
                    max_events: 100_000,
                    max_bytes: usize::MAX,
                },
            )
            .unwrap();
        all.extend(batch.events);
    }
    all
}

#[test]
fn uppercase_end_to_end_commits_offsets_and_resumes_without_reprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let component = guest("uppercase");
    let component = component.to_str().unwrap();
    leat_ok(data, &["stream", "create", "in", "--partitions", "3"], "");
    leat_ok(data, &["stream", "create", "out", "--partitions", "3"], "");
    let input: String = (0..30)
        .map(|i| format!("key-{i}\tevent number {i}\n"))
        .collect();
    leat_ok(data, &["produce", "in", "--format", "kv"], &input);

    let process = [
        "process", component, "--name", "up", "--input", "in", "--output", "out",
    ];
    let summary = leat_ok(data, &process, "");
    assert!(
        summary.contains("30 event(s) in, 30 event(s) out"),
        "{summary}"
    );

    {
        let broker = Broker::open(data.join("log.redb")).unwrap();
        let outputs = read_all(&broker, "out");
        assert_eq!(outputs.len(), 30);
        let mut values: Vec<String> = outputs
            .iter()
            .map(|e| String::from_utf8(e.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        values.sort();
        let mut expected: Vec<String> = (0..30).map(|i| format!("EVENT NUMBER {i}")).collect();
        expected.sort();
        assert_eq!(values, expected);
        for e in &outputs {
            // The key is kept, so the output lands on the input's partition
            // (same key, same partition count, same partitioner).
            let key = e.key.clone().unwrap();
            let source = String::from_utf8(e.header("leat.source").unwrap().to_vec()).unwrap();
            let mut parts = source.split('/');
            assert_eq!(parts.next(), Some("in"), "{source}");
            assert_eq!(
                parts.next(),
                Some(e.partition.to_string().as_str()),
                "{key:?}: {source}"
            );
            assert!(
                parts.next().is_some_and(|o| o.parse::<u64>().is_ok()),
                "{source}"
            );
            assert_eq!(e.header("leat.processor").unwrap().as_ref(), b"up@1");
        }
        // The group's offsets were committed with the outputs: each partition's end.
        let info = broker.describe_stream("in").unwrap();
        for (p, extent) in info.partitions.iter().enumerate() {
            assert_eq!(
                broker
                    .committed()
                    .unwrap()
                    .committed_offset("up", "in", p as u32)
                    .unwrap(),
                Some(extent.next_offset)
            );
        }
    }

    // A restart resumes at the committed offsets: nothing is reprocessed.
    let summary = leat_ok(data, &process, "");
    assert!(
        summary.contains("0 event(s) in, 0 event(s) out"),
        "{summary}"
    );
    leat_ok(
        data,
        &["produce", "in", "--format", "kv"],
        "late\tone more\n",
    );
    let summary = leat_ok(data, &process, "");
    assert!(
        summary.contains("1 event(s) in, 1 event(s) out"),
        "{summary}"
    );

    let consumed = leat_ok(data, &["consume", "out"], "");
    assert_eq!(consumed.lines().count(), 31, "{consumed}");
    assert!(consumed.contains("late\tONE MORE"), "{consumed}");
}

#[test]
fn a_file_that_is_not_a_component_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    leat_ok(data, &["stream", "create", "in"], "");
    leat_ok(data, &["stream", "create", "out"], "");
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "garbage.wasm",
            b"this is not wasm at all",
            "does not start with the Wasm magic bytes",
        ),
        (
            "module.wasm",
            b"\0asm\x01\0\0\0",
            "core Wasm module, not a component",
        ),
        (
            "truncated.wasm",
            b"\0asm\x0d\0\x01\0\x07\x05",
            "not a valid WebAssembly component",
        ),
    ];
    for (file, bytes, expected) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let out = leat(
            data,
            &[
                "process",
                path.to_str().unwrap(),
                "--name",
                "p",
                "--input",
                "in",
                "--output",
                "out",
            ],
            "",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} was accepted");
        assert!(stderr.contains(expected), "{file}: {stderr}");
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
    }
    let missing = leat(
        data,
        &[
            "process",
            "/nonexistent.wasm",
            "--name",
            "p",
            "--input",
            "in",
        ],
        "",
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent.wasm"));
}

/// `leat consume s | head -1`: once the reader is gone, `leat` stops
/// quietly with success, like any Unix filter.
#[test]
fn consume_into_a_closed_pipe_exits_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    leat_ok(data, &["stream", "create", "many"], "");
    let lines: String = (0..20_000).map(|i| format!("event number {i}\n")).collect();
    leat_ok(data, &["produce", "many"], &lines);
    let mut child = Command::new(leat_tests::leat_bin())
        .args(["consume", "many"])
        .env("LEAT_DATA_DIR", data)
        .env_remove("LEAT_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "0:0\t<none>\tevent number 0\n");
    drop(stdout); // what `head -1` does after its line
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}
