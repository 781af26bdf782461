//! `leat serve`: opens the data directory, binds the address, sets up the
//! token and the signals, and hands over to `leat_server`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use std::sync::Arc;

use leat_control::Control;
use leat_runtime::{Engine, EngineConfig, Runtime};
use leat_server::ServerConfig;

use crate::backend::open_broker;

/// The token: given, else kept in `DIR/server.token`, else generated (and
/// printed once).
fn token(data_dir: &Path, given: Option<String>) -> Result<String> {
    if let Some(t) = given {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("the token must be non-empty printable ASCII without spaces");
        }
        return Ok(t);
    }
    let path = data_dir.join("server.token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            println!("leat: using the token kept in {}", path.display());
            return Ok(t);
        }
    }
    let t = generate_token()?;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(f, "{t}")?;
    }
    println!(
        "leat: generated token {t} (kept in {}; pass it with --token or LEAT_TOKEN)",
        path.display()
    );
    Ok(t)
}

/// A fresh random token: 32 hex digits from the OS's random source.
fn generate_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("generating a token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What `leat serve` takes from its flags.
pub struct Options {
    /// See [`EngineConfig::call_timeout`].
    pub call_timeout: Duration,
    /// See [`EngineConfig::memory_limit`].
    pub memory_limit: usize,
    /// See [`EngineConfig::perf_map`].
    pub perf_map: bool,
    /// See [`ServerConfig::open_reads`].
    pub open_reads: bool,
    /// See [`ServerConfig::allowed_hosts`].
    pub allowed_hosts: Vec<String>,
    /// See [`ServerConfig::max_connections`].
    pub max_connections: usize,
    /// The Kafka listener, if any.
    pub kafka: Option<KafkaOptions>,
    /// The Kafka cluster the processors run on, if not on the log.
    pub on_kafka: Option<leat_control::OnKafka>,
}

/// `--kafka-listen` and the flags that go with it.
pub struct KafkaOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// What to advertise, if not the listener's own address.
    pub advertise: Option<HostPort>,
    /// Serve clients that do not authenticate.
    pub anonymous: bool,
    /// What an open transaction may buffer, in bytes.
    pub max_transaction_bytes: usize,
    /// How long a share consumer's records stay locked.
    pub share_lock: std::time::Duration,
}

/// `--kafka-advertise`: a host (name or address) and a port other than 0.
#[derive(Clone, Debug)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl std::str::FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<HostPort, String> {
        s.rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .filter(|(host, port)| !host.is_empty() && *port != 0)
            .map(|(host, port)| HostPort {
                host: host.trim_matches(['[', ']']).to_string(),
                port,
            })
            .ok_or_else(|| {
                format!("`{s}` is not HOST:PORT with a port above 0 (e.g. 127.0.0.1:9092)")
            })
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `--kafka-bootstrap`: one or more HOST:PORT, comma-separated.
#[derive(Clone, Debug)]
pub struct Bootstrap(Vec<HostPort>);

impl std::str::FromStr for Bootstrap {
    type Err = String;

    fn from_str(s: &str) -> Result<Bootstrap, String> {
        let servers = s
            .split(',')
            .map(|one| one.trim().parse())
            .collect::<Result<Vec<HostPort>, String>>()?;
        Ok(Bootstrap(servers))
    }
}

impl std::fmt::Display for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, server) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{server}")?;
        }
        Ok(())
    }
}

/// `--kafka-setting`: a librdkafka setting, `KEY=VALUE`.
#[derive(Clone, Debug)]
pub struct KafkaSetting {
    /// The property, e.g. `session.timeout.ms`.
    pub key: String,
    /// Its value.
    pub value: String,
}

impl std::str::FromStr for KafkaSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<KafkaSetting, String> {
        match s.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(KafkaSetting {
                key: key.trim().to_owned(),
                value: value.to_owned(),
            }),
            _ => Err(format!(
                "`{s}` is not KEY=VALUE (a librdkafka property, e.g. session.timeout.ms=10000)"
            )),
        }
    }
}

/// The host and port Kafka clients are told to connect to, for a listener
/// bound at `local`.
fn advertised(local: SocketAddr) -> (String, u16) {
    let ip = if local.ip().is_unspecified() {
        // Listening on every address: clients on this machine reach
        // 127.0.0.1 (not `localhost`, which librdkafka may resolve to ::1).
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        local.ip()
    };
    (ip.to_string(), local.port())
}

pub fn serve(
    data_dir: &Path,
    listen: &str,
    given_token: Option<String>,
    options: Options,
) -> Result<()> {
    let addr: SocketAddr = listen.parse().with_context(|| {
        format!("`{listen}` is not an address: use IP:PORT, e.g. 127.0.0.1:7070")
    })?;
    let token = token(data_dir, given_token)?;
    let broker = open_broker(data_dir)?;
    let kafka_broker = broker.clone();
    let control_dir = data_dir.to_path_buf();
    let engine = Engine::new(EngineConfig {
        cache_dir: Some(data_dir.join("compiled")),
        call_timeout: options.call_timeout,
        memory_limit: options.memory_limit,
        perf_map: options.perf_map,
        ..EngineConfig::default()
    })
    .context("starting the Wasm engine")?;
    let runtime = Runtime::new(broker, engine).context("opening the schema registry")?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("leat-server")
        .build()
        .context("starting the async runtime")?;
    let result = tokio.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        // Restores the processors kept in the data directory, before either
        // listener accepts a connection.
        let schemas = runtime.schemas().clone();
        let on_kafka = options.on_kafka;
        if let Some(k) = &on_kafka {
            tracing::info!(
                "processors run on the Kafka cluster at {} as host {}",
                k.options.bootstrap,
                k.options.host
            );
        }
        let control = tokio::task::spawn_blocking(move || match on_kafka {
            Some(kafka) => Control::open_on_kafka(&control_dir, runtime, kafka),
            None => Ok(Control::open(&control_dir, runtime)),
        })
        .await
        .context("restoring the processors")??;
        let control = Arc::new(control);
        // Caught before either listener is announced (see `Shutdown`).
        let shutdown = Shutdown::install()?;
        // One signal stops both listeners.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let stopping = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let kafka = match options.kafka {
            Some(kafka) => {
                let addr = kafka.listen;
                let kafka_listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for Kafka clients on {addr}"))?;
                let kafka_local = kafka_listener.local_addr()?;
                let (host, port) = match kafka.advertise {
                    Some(HostPort { host, port }) => (host, port),
                    None => advertised(kafka_local),
                };
                let mut config = leat_kafka::Config::new(host.clone(), port, token.clone());
                config.schemas = Some(schemas);
                config.anonymous = kafka.anonymous;
                config.processors = Arc::new(ControlProcessors(control.clone()));
                config.max_transaction_bytes = kafka.max_transaction_bytes;
                config.share_lock = kafka.share_lock;
                println!(
                    "leat: kafka listening on {kafka_local} (advertised as {host}:{port}, {})",
                    if kafka.anonymous {
                        "anonymous clients served"
                    } else {
                        "SASL/PLAIN with the token as password"
                    }
                );
                let shutdown = stopping(stopped.clone());
                Some(tokio::spawn(leat_kafka::serve(
                    kafka_listener,
                    kafka_broker,
                    config,
                    shutdown,
                )))
            }
            None => None,
        };
        println!("leat: listening on http://{local}");
        std::io::stdout().flush()?;
        tracing::info!("serving {} on {local}", data_dir.display());
        let config = ServerConfig {
            token,
            open_reads: options.open_reads,
            allowed_hosts: options.allowed_hosts,
            max_connections: options.max_connections,
        };
        tokio::spawn(async move {
            shutdown.received().await;
            let _ = stop.send(true);
        });
        let served = leat_server::serve(config, control, listener, stopping(stopped)).await;
        if let Some(kafka) = kafka {
            if served.is_err() {
                kafka.abort();
            }
            match kafka.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("the Kafka listener failed: {e}"),
                Err(e) if e.is_cancelled() => {}
                Err(e) => tracing::warn!("the Kafka listener failed: {e}"),
            }
        }
        served.context("serving")?;
        println!("leat: stopped");
        anyhow::Ok(())
    });
    tokio.shutdown_timeout(Duration::from_secs(2));
    result
}

/// The Kafka listener's view of the deployed processors.
struct ControlProcessors(Arc<Control>);

impl leat_kafka::Processors for ControlProcessors {
    fn writer_of(&self, stream: &str) -> Option<String> {
        self.0.writer_of(stream)
    }
    fn user_of(&self, stream: &str) -> Option<String> {
        self.0.user_of(stream)
    }
    fn owns_group(&self, group: &str) -> bool {
        self.0.is_processor(group)
    }
}

/// SIGTERM and Ctrl-C, caught from the moment [`Shutdown::install`] returns.
///
/// Install it before announcing that the process is ready: a signal that
/// arrives between the announcement and the handler's registration would
/// otherwise take its default action and kill the process uncleanly (a CI
/// run saw `leat serve` die so when a test stopped it right after it
/// printed its address).
pub struct Shutdown {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Registers the handlers; call it inside a Tokio runtime with I/O enabled.
    pub fn install() -> anyhow::Result<Shutdown> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Shutdown {
                term: signal(SignalKind::terminate()).context("catching SIGTERM")?,
                interrupt: signal(SignalKind::interrupt()).context("catching Ctrl-C")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Shutdown {})
    }

    /// Registers the handlers on a runtime of their own, for a process that
    /// runs no Tokio runtime; [`Shutdown::wait`] then blocks on it.
    pub fn install_blocking() -> anyhow::Result<(Shutdown, tokio::runtime::Runtime)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the signal handler")?;
        let shutdown = {
            let _entered = runtime.enter();
            Shutdown::install()?
        };
        Ok((shutdown, runtime))
    }

    /// Completes on the first SIGTERM or Ctrl-C.
    #[cfg_attr(not(unix), allow(unused_mut))]
    pub async fn received(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => tracing::info!("Ctrl-C received"),
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("Ctrl-C received");
            } else {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Bootstrap;

    #[test]
    fn a_bootstrap_list_is_checked_at_the_command_line() {
        let ok: Bootstrap = "kafka-1:9092, 10.0.0.2:9093,[::1]:9094".parse().unwrap();
        assert_eq!(ok.to_string(), "kafka-1:9092,10.0.0.2:9093,[::1]:9094");
        for bad in [
            "",
            "kafka-1",
            "kafka-1:0",
            "kafka-1:9092,",
            ":9092",
            "h:99999",
        ] {
            let err = bad.parse::<Bootstrap>().unwrap_err();
            assert!(err.contains("is not HOST:PORT"), "{bad}: {err}");
        }
    }
}
