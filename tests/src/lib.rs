//! Helpers for Leat's end-to-end tests: where the `leat` binary and the guest
//! components are, and running the binary.

pub mod components;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `leat` binary, next to this test binary. `cargo test` builds a
/// package's binaries only for that package's own tests, so the first call
/// builds `leat` with the same cargo and profile when it is missing.
pub fn leat_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    // Test binaries live in target/<profile>/deps; bins in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("leat{}", std::env::consts::EXE_SUFFIX));
    let built = BUILT.get_or_init(|| {
        if bin.exists() {
            return Ok(());
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .current_dir(repo_root())
            .args(["build", "-p", "leat", "--bin", "leat"]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        match build.status() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("`cargo build --bin leat` failed: {status}")),
            Err(e) => Err(format!("could not run cargo to build `leat`: {e}")),
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    assert!(
        bin.exists(),
        "{} is missing after building it",
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
    let mut command = Command::new(leat_bin());
    command.args(args).env("LEAT_DATA_DIR", data_dir);
    run_with_stdin(&mut command, stdin)
}

/// Runs `command` to the end, feeding it `stdin` and capturing its output.
fn run_with_stdin(command: &mut Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = command
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
    succeeded(args, leat(data_dir, args, stdin))
}

/// Asserts that `leat args` succeeded; returns its standard output.
fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "leat {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every event of `stream`, partition after partition.
pub fn read_stream(broker: &leat_broker::Broker, stream: &str) -> Vec<leat_broker::Event> {
    let partitions = broker
        .describe_stream(stream)
        .expect("the stream")
        .partitions
        .len();
    let all = leat_broker::ReadLimits {
        max_events: usize::MAX,
        max_bytes: usize::MAX,
    };
    (0..partitions as u32)
        .flat_map(|p| broker.read(stream, p, 0, all).expect("read").events)
        .collect()
}

/// How many outputs of `stream` name each input event as their source
/// (the `leat.source` provenance header, `stream/partition/offset`).
pub fn outputs_per_source(
    broker: &leat_broker::Broker,
    stream: &str,
) -> std::collections::BTreeMap<String, u32> {
    let mut per_source = std::collections::BTreeMap::new();
    for e in read_stream(broker, stream) {
        let source = e.header("leat.source").expect("a leat.source header");
        *per_source
            .entry(String::from_utf8_lossy(source).into_owned())
            .or_insert(0) += 1;
    }
    per_source
}

/// Runs `leat` against the server at `addr` with `token` (or none).
pub fn leat_remote(addr: &str, token: Option<&str>, args: &[&str], stdin: &str) -> Output {
    run_with_stdin(&mut remote_command(addr, token, args), stdin)
}

/// The command `leat ARGS` against the server at `addr` with `token` (or
/// none), not started: for a client the test runs alongside (and kills).
pub fn remote_command(addr: &str, token: Option<&str>, args: &[&str]) -> Command {
    let mut command = Command::new(leat_bin());
    command
        .args(args)
        .env("LEAT_SERVER", addr)
        .env("LEAT_DATA_DIR", "/nonexistent/not-used-by-clients")
        .env_remove("LEAT_TOKEN");
    if let Some(token) = token {
        command.env("LEAT_TOKEN", token);
    }
    command
}

/// A `leat serve` child process on a free loopback port, killed when dropped
/// (even when the test fails).
pub struct Server {
    child: Option<std::process::Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its token.
    pub token: String,
    /// Where its standard output and error go.
    log_dir: PathBuf,
}

impl Server {
    /// Starts `leat serve` on `data_dir` with `token`, on port 0 (any free
    /// port), and waits until it listens.
    pub fn start(data_dir: &Path, token: &str) -> Server {
        Server::start_with(data_dir, token, &[])
    }

    /// [`Server::start`] with more `leat serve` arguments.
    pub fn start_with(data_dir: &Path, token: &str, args: &[&str]) -> Server {
        Server::start_logging_to(data_dir, data_dir, token, args)
    }

    /// [`Server::start_with`], writing its output in `log_dir` (not on the
    /// data directory's file system).
    pub fn start_logging_to(data_dir: &Path, log_dir: &Path, token: &str, args: &[&str]) -> Server {
        use std::time::{Duration, Instant};
        std::fs::create_dir_all(data_dir).expect("create the data dir");
        std::fs::create_dir_all(log_dir).expect("create the log dir");
        let n = std::fs::read_dir(log_dir).map_or(0, |d| d.count());
        let stdout_path = log_dir.join(format!("serve-{n}.out"));
        let stderr_path = log_dir.join(format!("serve-{n}.err"));
        let child = Command::new(leat_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--token", token])
            .args(args)
            .env("LEAT_DATA_DIR", data_dir)
            .env_remove("LEAT_SERVER")
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn leat serve");
        let mut server = Server {
            child: Some(child),
            addr: String::new(),
            data_dir: data_dir.to_path_buf(),
            token: token.to_string(),
            log_dir: log_dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = std::fs::read_to_string(&stdout_path).unwrap_or_default();
            if let Some(rest) = out.split("listening on http://").nth(1) {
                server.addr = rest.lines().next().unwrap_or("").trim().to_string();
                return server;
            }
            let exited = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "leat serve did not start ({exited:?}): {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `leat` against this server with its token, feeding `stdin`.
    pub fn leat(&self, args: &[&str], stdin: &str) -> Output {
        self.leat_with_token(Some(&self.token), args, stdin)
    }

    /// Runs `leat` against this server with `token` (or none).
    pub fn leat_with_token(&self, token: Option<&str>, args: &[&str], stdin: &str) -> Output {
        leat_remote(&self.addr, token, args, stdin)
    }

    /// `leat deploy COMPONENT --name NAME --input INPUT --output OUTPUT`
    /// and `more` arguments, against this server.
    pub fn deploy(
        &self,
        component: &Path,
        name: &str,
        (input, output): (&str, &str),
        more: &[&str],
    ) -> Output {
        let component = component.to_str().expect("a UTF-8 path");
        let mut args = vec![
            "deploy", component, "--name", name, "--input", input, "--output", output,
        ];
        args.extend_from_slice(more);
        self.leat(&args, "")
    }

    /// Runs `leat` against this server and asserts success; returns its standard output.
    pub fn leat_ok(&self, args: &[&str], stdin: &str) -> String {
        succeeded(args, self.leat(args, stdin))
    }

    /// `GET path` with the token; the status code and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            self.addr, self.token
        );
        http_request(&self.addr, request.as_bytes())
    }

    /// Polls `GET /v1/processors/NAME` until `done` holds for its view,
    /// failing after two minutes.
    pub fn wait_for_processor(&self, name: &str, done: impl Fn(&serde_json::Value) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let (status, body) = self.get(&format!("/v1/processors/{name}"));
            assert_eq!(status, 200, "{body}");
            let view: serde_json::Value = serde_json::from_str(&body).expect("JSON");
            if done(&view) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "processor {name} never got there: {body}\n{}",
                self.logs()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// The server's resident memory (`VmRSS`), in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// Sends SIGTERM and waits for the server to exit successfully; the
    /// error says how it ended instead, with its logs.
    pub fn terminate(mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Err("the server was already stopped".into());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let ended = loop {
            if let Ok(Some(status)) = child.try_wait() {
                if status.success() {
                    return Ok(());
                }
                break format!("it exited with {status}");
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break "it was still running 60 s after SIGTERM".to_string();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        Err(format!("{ended}; its logs:\n{}", self.logs()))
    }

    /// Kills the server with SIGKILL and waits for it to be gone.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What the server wrote on standard error so far (its logs).
    pub fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(dir) = std::fs::read_dir(&self.log_dir) {
            let mut files: Vec<PathBuf> = dir
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "err"))
                .collect();
            files.sort();
            for f in files {
                all.push_str(&std::fs::read_to_string(f).unwrap_or_default());
            }
        }
        all
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends one raw HTTP/1.1 request to `addr` and returns the status code and the body.
pub fn http_request(addr: &str, request: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the server");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    // The server may answer and close before reading a large body.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one sample of a Prometheus text exposition: `series` is the
/// metric name with its labels, exactly as the server writes them (e.g.
/// `leat_processor_lag{processor="up"}`).
pub fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// `GET /metrics` of `server`, with its token.
pub fn fetch_metrics(server: &Server) -> String {
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200, "{body}");
    body
}
