//! Decoding one request frame: the header, then the body of a supported
//! API at a supported version. Everything else is a [`Refusal`], which
//! the connection answers or closes on; nothing here panics on input.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, ApiKey, ApiVersionsRequest,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest,
    DescribeGroupsRequest, EndTxnRequest, FetchRequest, FindCoordinatorRequest, HeartbeatRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest,
    RequestHeader, SaslAuthenticateRequest, SaslHandshakeRequest, ShareAcknowledgeRequest,
    ShareFetchRequest, ShareGroupHeartbeatRequest, SyncGroupRequest, TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::Decodable;

/// The APIs this listener serves and the versions of each, as ApiVersions
/// advertises them.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 10),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::ShareGroupHeartbeat, 1, 1),
    (ApiKey::ShareFetch, 1, 1),
    (ApiKey::ShareAcknowledge, 1, 1),
];

/// The supported versions of `key`, if it is served.
pub fn versions(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// A decoded request body.
#[derive(Debug)]
pub enum Body {
    ApiVersions(ApiVersionsRequest),
    Metadata(MetadataRequest),
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    SaslHandshake(SaslHandshakeRequest),
    SaslAuthenticate(SaslAuthenticateRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    DescribeConfigs(DescribeConfigsRequest),
    CreatePartitions(CreatePartitionsRequest),
    FindCoordinator(FindCoordinatorRequest),
    InitProducerId(InitProducerIdRequest),
    AddPartitionsToTxn(AddPartitionsToTxnRequest),
    AddOffsetsToTxn(AddOffsetsToTxnRequest),
    EndTxn(EndTxnRequest),
    TxnOffsetCommit(TxnOffsetCommitRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(DescribeGroupsRequest),
    ShareGroupHeartbeat(ShareGroupHeartbeatRequest),
    ShareFetch(ShareFetchRequest),
    ShareAcknowledge(ShareAcknowledgeRequest),
}

/// A request this listener can answer.
#[derive(Debug)]
pub struct Request {
    pub key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
    pub body: Body,
}

/// A frame that is not a [`Request`].
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// ApiVersions at a version above the supported ones: answered with a
    /// version-0 body holding UNSUPPORTED_VERSION and the supported
    /// ranges (KIP-511), so that the client retries with one of them.
    TooNewApiVersions { correlation_id: i32 },
    /// Anything else (an unknown API, an unsupported version, a malformed
    /// header or body): the connection is closed, as Kafka does.
    Close(String),
}

/// The APIs a connection may call before it has authenticated.
pub const BEFORE_AUTHENTICATION: &[ApiKey] = &[
    ApiKey::ApiVersions,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
];

/// Decodes one frame (without its length prefix) of a connection that has
/// `authenticated` or not: before it has, a request for any API but those
/// of [`BEFORE_AUTHENTICATION`] is refused from its header, before its body
/// is decoded.
pub fn decode(frame: Bytes, authenticated: bool) -> Result<Request, Refusal> {
    let mut buf = frame;
    let (raw_key, version, correlation_id) = match buf.get(..8) {
        Some(h) => (
            i16::from_be_bytes([h[0], h[1]]),
            i16::from_be_bytes([h[2], h[3]]),
            i32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ),
        None => {
            return Err(Refusal::Close(format!(
                "a request of {} bytes has no header",
                buf.len()
            )))
        }
    };
    let key = ApiKey::try_from(raw_key)
        .map_err(|_| Refusal::Close(format!("unknown API key {raw_key}")))?;
    let Some((min, max)) = versions(key) else {
        return Err(Refusal::Close(format!(
            "{key:?} is not supported by Leat yet"
        )));
    };
    if !authenticated && !BEFORE_AUTHENTICATION.contains(&key) {
        return Err(Refusal::Close(format!("{key:?} before authenticating")));
    }
    if version > max && key == ApiKey::ApiVersions {
        return Err(Refusal::TooNewApiVersions { correlation_id });
    }
    if version < min || version > max {
        return Err(Refusal::Close(format!(
            "{key:?} version {version} is not supported (versions {min} to {max} are)"
        )));
    }
    let malformed = |what: &str, e: anyhow::Error| {
        Refusal::Close(format!("malformed {key:?} v{version} {what}: {e}"))
    };
    let header = RequestHeader::decode(&mut buf, key.request_header_version(version))
        .map_err(|e| malformed("header", e))?;
    let body = match key {
        ApiKey::ApiVersions => ApiVersionsRequest::decode(&mut buf, version).map(Body::ApiVersions),
        ApiKey::Metadata => MetadataRequest::decode(&mut buf, version).map(Body::Metadata),
        ApiKey::Produce => ProduceRequest::decode(&mut buf, version).map(Body::Produce),
        ApiKey::Fetch => FetchRequest::decode(&mut buf, version).map(Body::Fetch),
        ApiKey::ListOffsets => ListOffsetsRequest::decode(&mut buf, version).map(Body::ListOffsets),
        ApiKey::SaslHandshake => {
            SaslHandshakeRequest::decode(&mut buf, version).map(Body::SaslHandshake)
        }
        ApiKey::SaslAuthenticate => {
            SaslAuthenticateRequest::decode(&mut buf, version).map(Body::SaslAuthenticate)
        }
        ApiKey::CreateTopics => {
            CreateTopicsRequest::decode(&mut buf, version).map(Body::CreateTopics)
        }
        ApiKey::DeleteTopics => {
            DeleteTopicsRequest::decode(&mut buf, version).map(Body::DeleteTopics)
        }
        ApiKey::DescribeConfigs => {
            DescribeConfigsRequest::decode(&mut buf, version).map(Body::DescribeConfigs)
        }
        ApiKey::CreatePartitions => {
            CreatePartitionsRequest::decode(&mut buf, version).map(Body::CreatePartitions)
        }
        ApiKey::FindCoordinator => {
            FindCoordinatorRequest::decode(&mut buf, version).map(Body::FindCoordinator)
        }
        ApiKey::InitProducerId => {
            InitProducerIdRequest::decode(&mut buf, version).map(Body::InitProducerId)
        }
        ApiKey::AddPartitionsToTxn => {
            AddPartitionsToTxnRequest::decode(&mut buf, version).map(Body::AddPartitionsToTxn)
        }
        ApiKey::AddOffsetsToTxn => {
            AddOffsetsToTxnRequest::decode(&mut buf, version).map(Body::AddOffsetsToTxn)
        }
        ApiKey::EndTxn => EndTxnRequest::decode(&mut buf, version).map(Body::EndTxn),
        ApiKey::TxnOffsetCommit => {
            TxnOffsetCommitRequest::decode(&mut buf, version).map(Body::TxnOffsetCommit)
        }
        ApiKey::JoinGroup => JoinGroupRequest::decode(&mut buf, version).map(Body::JoinGroup),
        ApiKey::SyncGroup => SyncGroupRequest::decode(&mut buf, version).map(Body::SyncGroup),
        ApiKey::Heartbeat => HeartbeatRequest::decode(&mut buf, version).map(Body::Heartbeat),
        ApiKey::LeaveGroup => LeaveGroupRequest::decode(&mut buf, version).map(Body::LeaveGroup),
        ApiKey::OffsetCommit => {
            OffsetCommitRequest::decode(&mut buf, version).map(Body::OffsetCommit)
        }
        ApiKey::OffsetFetch => OffsetFetchRequest::decode(&mut buf, version).map(Body::OffsetFetch),
        ApiKey::ListGroups => ListGroupsRequest::decode(&mut buf, version).map(Body::ListGroups),
        ApiKey::DescribeGroups => {
            DescribeGroupsRequest::decode(&mut buf, version).map(Body::DescribeGroups)
        }
        ApiKey::ShareGroupHeartbeat => {
            ShareGroupHeartbeatRequest::decode(&mut buf, version).map(Body::ShareGroupHeartbeat)
        }
        ApiKey::ShareFetch => ShareFetchRequest::decode(&mut buf, version).map(Body::ShareFetch),
        ApiKey::ShareAcknowledge => {
            ShareAcknowledgeRequest::decode(&mut buf, version).map(Body::ShareAcknowledge)
        }
        _ => {
            return Err(Refusal::Close(format!(
                "{key:?} is not supported by Leat yet"
            )))
        }
    }
    .map_err(|e| malformed("body", e))?;
    // Bytes after the body are ignored, as Kafka's own broker does:
    // librdkafka 2.16's Metadata v12 carries 3 of them.
    if buf.has_remaining() {
        tracing::debug!(
            "kafka: {key:?} v{version}: {} bytes after the body, ignored",
            buf.remaining()
        );
    }
    Ok(Request {
        key,
        version,
        header,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every served API and version, with a valid header and arbitrary
    /// (pseudo-random, truncated or extended) bodies: decoding answers or
    /// refuses, and never panics.
    #[test]
    fn arbitrary_bodies_of_every_served_api_do_not_panic() {
        use bytes::BufMut;
        use kafka_protocol::protocol::Encodable;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for &(key, min, max) in SUPPORTED {
            for version in min..=max {
                for round in 0..300 {
                    let mut frame = bytes::BytesMut::new();
                    RequestHeader::default()
                        .with_request_api_key(key as i16)
                        .with_request_api_version(version)
                        .with_correlation_id(round)
                        .encode(&mut frame, key.request_header_version(version))
                        .unwrap();
                    let len = (next() % 96) as usize;
                    for _ in 0..len {
                        // Small values are lengths and counts more often.
                        let b = next();
                        frame.put_u8(if b % 3 == 0 {
                            (b >> 8) as u8
                        } else {
                            (b % 4) as u8
                        });
                    }
                    let _ = decode(frame.freeze(), true);
                }
            }
        }
    }
}
