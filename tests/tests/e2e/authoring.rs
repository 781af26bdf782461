//! Processor authoring end to end: `leat new` writes a crate, `leat build`
//! turns it into a component with the guest toolchain, and the component
//! runs with `leat process`; then a version that panics on one event runs
//! on `leat serve`, whose `/metrics` and `leat status` count its traps.
//!
//! The guest builds share guest-examples/target (where scripts/build-guests.sh
//! already built std for wasm32), so each takes seconds, not minutes.

use std::path::Path;
use std::time::{Duration, Instant};

use leat_tests::{fetch_metrics, leat, leat_ok, metric, repo_root, Server};

fn shared_target_dir() -> String {
    repo_root()
        .join("guest-examples/target")
        .to_string_lossy()
        .into_owned()
}

fn build(crate_dir: &Path) -> String {
    let target = shared_target_dir();
    let out = leat_ok(
        crate_dir,
        &[
            "build",
            crate_dir.to_str().unwrap(),
            "--target-dir",
            &target,
        ],
        "",
    );
    assert!(out.contains("built "), "{out}");
    out
}

#[test]
fn new_then_build_then_process_and_count_traps_on_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("greeter-e2e");
    let data = dir.path().join("data");
    let crate_arg = crate_dir.to_str().unwrap();

    let created = leat_ok(&data, &["new", crate_arg], "");
    assert!(
        created.contains("created processor crate greeter-e2e"),
        "{created}"
    );
    for file in ["Cargo.toml", "src/lib.rs", "README.md", ".gitignore"] {
        assert!(crate_dir.join(file).is_file(), "{file} missing");
    }
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    assert!(lib.contains("leat_sdk::export!(GreeterE2e);"), "{lib}");
    assert!(lib.contains("use leat_sdk::testing::TestHost;"), "{lib}");
    // A second `leat new` on the same folder is refused; so is a bad name.
    let again = leat(&data, &["new", crate_arg], "");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));
    let bad = leat(&data, &["new", "9lives"], "");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot name a processor crate"));
    let nothing = leat(&data, &["build", dir.path().to_str().unwrap()], "");
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("has no Cargo.toml"));

    // The crate builds as it was written.
    build(&crate_dir);
    let component = crate_dir.join("out/greeter-e2e.wasm");
    let header = std::fs::read(&component).unwrap();
    assert_eq!(&header[..8], b"\0asm\x0d\0\x01\0", "a component");

    // Run it over a stream with `leat process`.
    leat_ok(&data, &["stream", "create", "names"], "");
    leat_ok(&data, &["stream", "create", "greetings"], "");
    leat_ok(
        &data,
        &["produce", "names", "--format", "kv"],
        "a\tAda\nb\tBob\na\tAda\n",
    );
    let processed = leat_ok(
        &data,
        &[
            "process",
            component.to_str().unwrap(),
            "--name",
            "greeter",
            "--input",
            "names",
            "--output",
            "greetings",
            "--config",
            "greeting=hi",
        ],
        "",
    );
    assert!(
        processed.contains("3 event(s) in, 3 event(s) out"),
        "{processed}"
    );
    let out = leat_ok(&data, &["consume", "greetings"], "");
    let values: Vec<&str> = out.lines().filter_map(|l| l.split('\t').nth(2)).collect();
    assert_eq!(
        values,
        ["hi, Ada (#1)", "hi, Bob (#1)", "hi, Ada (#2)"],
        "{out}"
    );

    // A version that panics on one value: each call on it traps.
    let source = lib.replace(
        "        let key = event.key().unwrap_or_default();",
        "        if event.value_str() == Some(\"boom\") {\n            panic!(\"boom\");\n        }\n        let key = event.key().unwrap_or_default();",
    );
    assert_ne!(source, lib, "the template changed: update this test");
    std::fs::write(crate_dir.join("src/lib.rs"), source).unwrap();
    build(&crate_dir);

    let server = Server::start(&dir.path().join("served"), "tok");
    server.leat_ok(&["stream", "create", "in", "--partitions", "2"], "");
    server.leat_ok(&["stream", "create", "out", "--partitions", "2"], "");
    server.leat_ok(
        &[
            "deploy",
            component.to_str().unwrap(),
            "--name",
            "greeter",
            "--input",
            "in",
            "--output",
            "out",
            "--on-error",
            "record",
        ],
        "",
    );
    server.leat_ok(
        &["produce", "in", "--format", "kv"],
        "k1\tAda\nk2\tboom\nk3\tBob\n",
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let metrics = loop {
        let metrics = fetch_metrics(&server);
        let events_in = metric(
            &metrics,
            "leat_processor_events_in_total{processor=\"greeter\"}",
        );
        let errors = server.leat_ok(&["consume", "greeter.errors"], "");
        if events_in == Some(2.0) && errors.lines().count() == 1 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "the processor did not settle:\n{metrics}\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let m = |series: &str| {
        metric(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert!(m("leat_processor_traps_total{processor=\"greeter\"}") >= 1.0);
    assert_eq!(
        m("leat_processor_events_out_total{processor=\"greeter\"}"),
        2.0
    );
    assert_eq!(m("leat_processor_lag{processor=\"greeter\"}"), 0.0);
    assert!(m("leat_processor_commits_total{processor=\"greeter\"}") >= 1.0);
    assert!(m("leat_processor_batch_latency_seconds_count{processor=\"greeter\"}") >= 1.0);
    let outputs = server.leat_ok(&["consume", "out"], "");
    assert!(outputs.contains("hello, Ada (#1)"), "{outputs}");
    assert!(outputs.contains("hello, Bob (#1)"), "{outputs}");
    let errors = server.leat_ok(&["consume", "greeter.errors", "--headers"], "");
    assert!(errors.contains("boom"), "{errors}");

    let status = server.leat_ok(&["status"], "");
    assert!(status.contains("processor greeter (running"), "{status}");
    assert!(status.contains("instance 0: partitions [0, 1]"), "{status}");
    assert!(status.contains("in/0: committed"), "{status}");
    assert!(status.contains("events/s"), "{status}");
    assert!(!status.contains("traps 0,"), "{status}");
    assert!(status.contains("last error: "), "{status}");
    server.terminate().unwrap();
}
