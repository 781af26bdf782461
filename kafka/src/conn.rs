//! One client connection: frames in, requests answered one at a time and
//! in order, frames out; the SASL state of the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use leat_broker::Broker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::handlers::{self, Reply};
use crate::request::{self, Refusal, SUPPORTED};
use crate::{codes, Config, AUTH_TIMEOUT, PRE_AUTH_MAX_FRAME_BYTES};

/// What every connection of a listener shares.
pub struct Shared {
    pub broker: Broker,
    pub config: Config,
    pub groups: crate::groups::Coordinator,
    pub producers: Arc<crate::producers::Producers>,
    pub shares: crate::share::Shares,
}

/// Where a connection is in SASL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sasl {
    /// No handshake yet.
    Start,
    /// SaslHandshake v1 done: SaslAuthenticate comes next.
    Handshaken,
    /// SaslHandshake v0 done: the next frame is the bare PLAIN token.
    RawTokenNext,
    /// Authenticated.
    Done,
}

/// A connection's state.
pub struct Session {
    pub authenticated: bool,
    pub sasl: Sasl,
    pub peer: SocketAddr,
}

pub async fn run(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut session = Session {
        authenticated: shared.config.anonymous,
        sasl: Sasl::Start,
        peer,
    };
    let started = tokio::time::Instant::now();
    loop {
        let cap = if session.authenticated {
            shared.config.max_frame_bytes
        } else {
            PRE_AUTH_MAX_FRAME_BYTES
        };
        let frame = if session.authenticated {
            read_frame(&mut rd, cap).await
        } else {
            match tokio::time::timeout_at(started + AUTH_TIMEOUT, read_frame(&mut rd, cap)).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "not authenticated after {}s",
                    AUTH_TIMEOUT.as_secs()
                )),
            }
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("kafka: closing {peer}: {e}");
                return;
            }
        };
        let reply = if session.sasl == Sasl::RawTokenNext {
            handlers::raw_plain_token(&shared, &mut session, &frame)
        } else {
            match request::decode(frame, session.authenticated) {
                Ok(req) => handlers::handle(&shared, &mut session, req).await,
                Err(Refusal::TooNewApiVersions { correlation_id }) => {
                    Reply::Send(too_new_api_versions(correlation_id))
                }
                Err(Refusal::Close(reason)) => Reply::Close(reason),
            }
        };
        match reply {
            Reply::Send(bytes) => {
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::SendThenClose(bytes, reason) => {
                let _ = wr.write_all(&bytes).await;
                let _ = wr.shutdown().await;
                tracing::info!("kafka: closing {peer}: {reason}");
                return;
            }
            Reply::Nothing => {}
            Reply::Close(reason) => {
                tracing::info!("kafka: closing {peer}: {reason}");
                return;
            }
        }
    }
}

/// Reads one length-prefixed frame of at most `cap` bytes; `None` at a
/// clean end of the stream.
async fn read_frame(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    cap: usize,
) -> Result<Option<Bytes>, String> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = i32::from_be_bytes(len);
    let len = usize::try_from(len).map_err(|_| format!("negative frame size {len}"))?;
    if len > cap {
        return Err(format!("a frame of {len} bytes exceeds the limit of {cap}"));
    }
    let mut frame = BytesMut::zeroed(len);
    rd.read_exact(&mut frame)
        .await
        .map_err(|e| format!("reading a frame of {len} bytes: {e}"))?;
    Ok(Some(frame.freeze()))
}

/// A response frame: length, the response header of `key`'s `version`,
/// then `body` at that version.
pub fn frame<M: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> anyhow::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, key.response_header_version(version))?;
    body.encode(&mut buf, version)?;
    let len = i32::try_from(buf.len() - 4)?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// The answer to an ApiVersions request of a version above ours (KIP-511),
/// written by hand: a version-0 header and body, error
/// UNSUPPORTED_VERSION, and the supported ranges.
pub fn too_new_api_versions(correlation_id: i32) -> Bytes {
    let mut buf = BytesMut::new();
    let body_len = 4 + 2 + 4 + 6 * SUPPORTED.len();
    buf.put_i32(body_len as i32);
    buf.put_i32(correlation_id);
    buf.put_i16(codes::UNSUPPORTED_VERSION);
    buf.put_i32(SUPPORTED.len() as i32);
    for &(key, min, max) in SUPPORTED {
        buf.put_i16(key as i16);
        buf.put_i16(min);
        buf.put_i16(max);
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kip_511_answer_is_a_v0_api_versions_response() {
        use kafka_protocol::messages::ApiVersionsResponse;
        use kafka_protocol::protocol::Decodable;
        let mut raw = too_new_api_versions(7);
        let len = i32::from_be_bytes(raw[..4].try_into().unwrap()) as usize;
        assert_eq!(len, raw.len() - 4);
        let mut body = raw.split_off(8);
        assert_eq!(i32::from_be_bytes(raw[4..8].try_into().unwrap()), 7);
        let decoded = ApiVersionsResponse::decode(&mut body, 0).unwrap();
        assert_eq!(decoded.error_code, codes::UNSUPPORTED_VERSION);
        assert_eq!(decoded.api_keys.len(), SUPPORTED.len());
    }
}
