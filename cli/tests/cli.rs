//! The `leat` binary starts and explains its usage. Having an integration
//! test here also makes `cargo test --workspace` build the `leat` binary
//! that the end-to-end tests in `tests/` drive.

use std::process::Command;

#[test]
fn help_lists_the_commands_and_an_unknown_command_is_refused() {
    let leat = env!("CARGO_BIN_EXE_leat");
    let help = Command::new(leat).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for command in [
        "serve", "stream", "produce", "consume", "deploy", "topology",
    ] {
        assert!(text.contains(command), "`{command}` missing from:\n{text}");
    }
    let unknown = Command::new(leat).arg("frobnicate").output().unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("frobnicate"));
}

/// Runs `leat` on a fresh data directory, without a server.
fn local(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_leat"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("LEAT_SERVER")
        .output()
        .unwrap()
}

#[test]
fn flags_are_checked_at_the_boundary_with_what_would_do() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // Enumerated flags list their values.
    let out = local(dir, &["stream", "create", "s", "--cleanup", "forever"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retain") && err.contains("compact"), "{err}");
    assert!(local(dir, &["stream", "create", "s"]).status.success());
    // Positions: one parser for `--from` and `--to`, which says what is taken.
    for args in [
        &["consume", "s", "--from", "start"][..],
        &["processor", "reset", "p", "--to", "@soon"][..],
    ] {
        let out = local(dir, args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("beginning") || err.contains("milliseconds"),
            "{args:?}: {err}"
        );
    }
    let out = local(dir, &["consume", "s", "--from", "@0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn commands_on_deployments_say_they_need_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let component = dir.join("x.wasm");
    std::fs::write(&component, b"\0asm").unwrap();
    let component = component.to_str().unwrap();
    for args in [
        &["processor", "list"][..],
        &["processor", "pause", "p"][..],
        &["deploy", component, "--name", "p", "--input", "s"][..],
    ] {
        let out = local(dir, args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("needs a server"), "{args:?}: {err}");
        assert!(err.contains("leat serve"), "{args:?}: {err}");
    }
}
