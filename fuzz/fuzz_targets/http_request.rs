//! The HTTP request path of `leat serve`, whole: one real server (the
//! `leat_server::serve` over a log in a temporary directory, a stream
//! `s` with a few events) is started once per process, and each input is
//! sent as raw bytes on a new TCP connection. Whatever the bytes, the
//! server must answer or close, and then still answer `GET /v1/health`;
//! a panic in any of its threads aborts the process (libFuzzer's panic
//! hook), which is a crash.
//!
//! Seeds (fuzz/corpus/http_request) are requests of every route, with the
//! token `fuzz-token`, so that the fuzzer starts past the token check.
#![no_main]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use leat_runtime::broker::{Broker, Record, StreamConfig};
use leat_server::{serve, ServerConfig};
use leat_runtime::{Engine, EngineConfig, Runtime};
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "fuzz-token";

/// The server's address, once it listens.
fn server() -> &'static str {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        // Kept for the whole process: the server runs until it exits.
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let broker = Broker::open(dir.join("log.redb")).expect("open the log");
        broker
            .create_stream("s", StreamConfig::with_partitions(2))
            .expect("create s");
        broker
            .append("s", ["a", "b", "c"].map(|v| Record::keyed(v, v)))
            .expect("append");
        let engine = Engine::new(EngineConfig::default()).expect("engine");
        let runtime = Runtime::new(broker, engine).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address").to_string();
        let control = std::sync::Arc::new(leat_control::Control::open(&dir, runtime));
        let config = ServerConfig {
            token: TOKEN.to_string(),
            open_reads: false,
            allowed_hosts: Vec::new(),
            max_connections: 64,
        };
        std::thread::spawn(move || {
            let tokio = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio");
            tokio.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                serve(config, control, listener, std::future::pending::<()>())
                    .await
                    .expect("serve");
            });
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while !healthy(&addr) {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        addr
    })
}

/// Sends `request` on a new connection, then shuts the sending side (the
/// server answers what it got, or closes); what came back.
fn exchange(addr: &str, request: &[u8]) -> Vec<u8> {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return Vec::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(15)));
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

fn healthy(addr: &str) -> bool {
    exchange(
        addr,
        b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .starts_with(b"HTTP/1.1 200")
}

fuzz_target!(|data: &[u8]| {
    let addr = server();
    let answer = exchange(addr, data);
    if !answer.is_empty() {
        assert!(
            answer.starts_with(b"HTTP/1."),
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
    if !healthy(addr) {
        let answer = exchange(
            addr,
            b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        panic!(
            "the server stopped answering after {data:?}: health gave {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
});
