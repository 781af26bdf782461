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
