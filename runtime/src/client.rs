//! A small blocking HTTP/1.1 client for the `leat serve` API: one
//! connection per request (`Connection: close`), JSON in and out.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest answer accepted.
const MAX_RESPONSE: u64 = 256 << 20;

/// Where the server is and the token for changing calls.
#[derive(Clone, Debug)]
pub struct Client {
    addr: String,
    token: Option<String>,
}

/// A non-2xx answer.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            401 => write!(f, "the server refused the request (401): {}", self.message),
            s => write!(f, "{} (HTTP {s})", self.message),
        }
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    /// A client for the server at `server` (`HOST:PORT` or `http://HOST:PORT`).
    pub fn new(server: &str, token: Option<String>) -> Result<Client> {
        let addr = server
            .strip_prefix("http://")
            .unwrap_or(server)
            .trim_end_matches('/')
            .to_string();
        if server.starts_with("https://") {
            bail!(
                "`{server}`: the leat server speaks plain HTTP; use HOST:PORT or http://HOST:PORT"
            );
        }
        if addr.is_empty() || addr.contains('/') {
            bail!("`{server}` is not a server address: use HOST:PORT, e.g. 127.0.0.1:7070");
        }
        Ok(Client { addr, token })
    }

    fn connect(&self) -> Result<TcpStream> {
        let addrs: Vec<_> = self
            .addr
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve the server address `{}`", self.addr))?
            .collect();
        let mut last = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        let reason = last.map_or_else(|| "no address".to_string(), |e| e.to_string());
        bail!(
            "cannot reach the leat server at {}: {reason}. Is `leat serve` running there? \
             (the address comes from --server or LEAT_SERVER)",
            self.addr
        )
    }

    /// Sends a request and returns the status and the body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let mut stream = self.connect()?;
        stream.set_read_timeout(Some(Duration::from_secs(600)))?;
        stream.set_write_timeout(Some(Duration::from_secs(60)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: leat/{}\r\nContent-Length: {}\r\n",
            self.addr,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        if !body.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        let sent = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .and_then(|()| stream.flush());
        let mut reader = BufReader::new(stream.take(MAX_RESPONSE));
        let mut status_line = String::new();
        let read = reader.read_line(&mut status_line);
        if let Err(e) = sent {
            // The server may have answered (and closed) before reading the
            // whole body, e.g. with 413: prefer its answer.
            if status_line.is_empty() {
                return Err(anyhow!(e).context(format!("sending to the server at {}", self.addr)));
            }
        }
        read.with_context(|| format!("reading the answer of the server at {}", self.addr))?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("the server at {} did not answer in HTTP", self.addr))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("transfer-encoding")
                    && value.eq_ignore_ascii_case("chunked")
                {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .context("bad chunked encoding from the server")?;
                if size == 0 {
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                reader.read_exact(&mut body[start..])?;
                let mut crlf = [0u8; 2];
                reader.read_exact(&mut crlf)?;
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            reader
                .read_exact(&mut body)
                .context("the server closed the connection mid-answer")?;
        } else {
            reader.read_to_end(&mut body)?;
        }
        Ok((status, body))
    }

    fn decode<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T> {
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<leat_runtime::server::api::ErrorBody>(body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
            return Err(ApiFailure { status, message }.into());
        }
        serde_json::from_slice(body).context("the server's answer is not the JSON expected")
    }

    /// `GET path`, decoded.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (status, body) = self.request("GET", path, "", &[])?;
        Self::decode(status, &body)
    }

    /// `METHOD path` with a JSON body, decoded.
    pub fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        let body = serde_json::to_vec(body)?;
        let (status, answer) = self.request(method, path, "application/json", &body)?;
        Self::decode(status, &answer)
    }

    /// `POST path` with a binary body, decoded.
    pub fn upload<T: DeserializeOwned>(&self, path: &str, bytes: &[u8]) -> Result<T> {
        let (status, answer) = self.request("POST", path, "application/wasm", bytes)?;
        Self::decode(status, &answer)
    }
}
