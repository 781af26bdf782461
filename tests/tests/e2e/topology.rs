//! Business topologies: `leat topology apply` on a server (twice: the
//! second changes nothing), `leat topology show`, errors that name the
//! line, and `leat run` in one process.

use std::time::{Duration, Instant};

use leat_tests::{guest, leat, leat_ok, Server};

fn topology(component: &str) -> String {
    format!(
        r#"name = "greetings"

[[streams]]
name = "greetings"
partitions = 3

[[streams]]
name = "greetings-upper"
partitions = 3

[[processors]]
name = "uppercase"
component = "{component}"
inputs = ["greetings"]
outputs = ["greetings-upper"]
instances = 2
"#
    )
}

#[test]
fn apply_twice_changes_nothing_the_second_time_and_show_draws_it() {
    let component = guest("uppercase");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("topology.toml");
    std::fs::write(&file, topology(component.to_str().unwrap())).unwrap();
    let file = file.to_str().unwrap();
    let server = Server::start(&dir.path().join("data"), "tok");

    let first = server.leat_ok(&["topology", "apply", file], "");
    assert!(first.contains("stream greetings: created"), "{first}");
    assert!(first.contains("processor uppercase: created"), "{first}");
    let second = server.leat_ok(&["topology", "apply", file], "");
    assert!(
        second.contains("topology greetings: 0 change(s)"),
        "{second}"
    );
    assert!(
        !second.contains("created") && !second.contains("updated"),
        "{second}"
    );

    server.leat_ok(
        &["produce", "greetings", "--format", "kv"],
        "a\thello\nb\tworld\n",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = server.leat_ok(&["consume", "greetings-upper"], "");
        if out.lines().count() == 2 {
            assert!(
                out.contains("\ta\tHELLO") && out.contains("\tb\tWORLD"),
                "{out}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{out}\n{}", server.logs());
        std::thread::sleep(Duration::from_millis(100));
    }

    let shown = server.leat_ok(&["topology", "show", "greetings"], "");
    assert!(
        shown.contains("processor uppercase x2: greetings -> greetings-upper"),
        "{shown}"
    );
    assert!(shown.contains("flowchart LR"), "{shown}");
    assert!(shown.contains("s_greetings --> p_uppercase"), "{shown}");
    assert!(shown.contains("processor uppercase: running"), "{shown}");

    // Another processor writing greetings-upper is refused, naming the line.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        format!(
            "name = \"other\"\n\n[[streams]]\nname = \"greetings\"\npartitions = 3\n\n[[streams]]\nname = \"greetings-upper\"\npartitions = 3\n\n[[processors]]\nname = \"intruder\"\ncomponent = \"{}\"\ninputs = [\"greetings\"]\noutputs = [\"greetings-upper\"]\n",
            component.display()
        ),
    )
    .unwrap();
    let out = server.leat(&["topology", "apply", other.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("other.toml:15:"), "{err}");
    assert!(
        err.contains("already written by processor `uppercase`"),
        "{err}"
    );

    // A stream nobody creates is refused, naming the line.
    let undeclared = topology(component.to_str().unwrap()).replace(
        "inputs = [\"greetings\"]",
        "inputs = [\"greetings\", \"nowhere\"]",
    );
    std::fs::write(&other, undeclared).unwrap();
    let out = server.leat(&["topology", "apply", other.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other.toml:14:") && err.contains("nobody creates"),
        "{err}"
    );
    server.terminate().unwrap();
}

#[test]
fn run_runs_a_whole_topology_in_one_process() {
    let component = guest("uppercase");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("topology.toml");
    std::fs::write(&file, topology(component.to_str().unwrap())).unwrap();
    let file = file.to_str().unwrap();
    // Show works on a file without a server.
    let shown = leat_ok(
        &data,
        &["topology", "show", file, "--format", "mermaid"],
        "",
    );
    assert!(shown.starts_with("```mermaid\nflowchart LR"), "{shown}");

    let out = leat_ok(&data, &["run", file, "--once"], "");
    assert!(out.contains("created stream greetings"), "{out}");
    leat_ok(
        &data,
        &["produce", "greetings", "--format", "kv"],
        "x\tone\ny\ttwo\n",
    );
    let out = leat_ok(&data, &["run", file, "--once"], "");
    assert!(
        out.contains("processor uppercase: 2 event(s) in, 2 event(s) out"),
        "{out}"
    );
    let consumed = leat_ok(&data, &["consume", "greetings-upper"], "");
    assert!(
        consumed.contains("\tx\tONE") && consumed.contains("\ty\tTWO"),
        "{consumed}"
    );
    // Nothing new: nothing processed.
    let out = leat_ok(&data, &["run", file, "--once"], "");
    assert!(!out.contains("event(s) in"), "{out}");
    // A malformed file: a clear error with the line.
    std::fs::write(
        dir.path().join("bad.toml"),
        "name = \"x\"\n[[streams]]\nname = 3\n",
    )
    .unwrap();
    let bad = dir.path().join("bad.toml");
    let out = leat(&data, &["run", bad.to_str().unwrap(), "--once"], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3:"), "{err}");
}
