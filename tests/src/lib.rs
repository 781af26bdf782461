//! Helpers for Leat's end-to-end tests: where the `leat` binary and the guest
//! components are, and running the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `leat` binary cargo built next to this test binary.
pub fn leat_bin() -> PathBuf {
    // Test binaries live in target/<profile>/deps; bins in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("leat{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` so that cargo builds it",
        bin.display()
    );
    bin
}

/// A guest example's component, built by `scripts/build-guests.sh`.
pub fn guest(name: &str) -> PathBuf {
    let path = repo_root()
        .join("guest-examples/out")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the guests first with scripts/build-guests.sh",
        path.display()
    );
    path
}

/// Runs `leat` with `args` on `data_dir`, feeding `stdin`.
pub fn leat(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(leat_bin())
        .args(args)
        .env("LEAT_DATA_DIR", data_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn leat");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for leat")
}

/// Runs `leat` and asserts success; returns its standard output.
pub fn leat_ok(data_dir: &Path, args: &[&str], stdin: &str) -> String {
    let out = leat(data_dir, args, stdin);
    assert!(
        out.status.success(),
        "leat {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
