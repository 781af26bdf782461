//! The Kafka error codes this listener answers with (Kafka's `Errors`
//! enum), and the mapping from the broker's errors to them.

use leat_broker::Error;

pub const NONE: i16 = 0;
pub const OFFSET_OUT_OF_RANGE: i16 = 1;
pub const CORRUPT_MESSAGE: i16 = 2;
pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
pub const MESSAGE_TOO_LARGE: i16 = 10;
pub const INVALID_REQUIRED_ACKS: i16 = 21;
pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
pub const RECORD_LIST_TOO_LARGE: i16 = 18;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const TOPIC_ALREADY_EXISTS: i16 = 36;
pub const INVALID_PARTITIONS: i16 = 37;
pub const INVALID_REPLICATION_FACTOR: i16 = 38;
pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
pub const INVALID_CONFIG: i16 = 40;
pub const ILLEGAL_SASL_STATE: i16 = 34;
pub const UNSUPPORTED_VERSION: i16 = 35;
pub const POLICY_VIOLATION: i16 = 44;
pub const INVALID_REQUEST: i16 = 42;
pub const KAFKA_STORAGE_ERROR: i16 = 56;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const INVALID_RECORD: i16 = 87;
pub const UNKNOWN_TOPIC_ID: i16 = 100;
pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
pub const INVALID_PRODUCER_EPOCH: i16 = 47;
pub const INVALID_TXN_STATE: i16 = 48;
pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
pub const CONCURRENT_TRANSACTIONS: i16 = 51;
pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
pub const UNKNOWN_PRODUCER_ID: i16 = 59;
pub const PRODUCER_FENCED: i16 = 90;
pub const FENCED_MEMBER_EPOCH: i16 = 110;
pub const INVALID_RECORD_STATE: i16 = 121;
pub const SHARE_SESSION_NOT_FOUND: i16 = 122;
pub const INVALID_SHARE_SESSION_EPOCH: i16 = 123;

/// The Kafka error code for a broker error met serving a partition.
pub fn of(e: &Error) -> i16 {
    match e {
        Error::UnknownStream(_) | Error::PartitionOutOfRange { .. } => UNKNOWN_TOPIC_OR_PARTITION,
        Error::InvalidName { .. } => INVALID_TOPIC_EXCEPTION,
        Error::EventTooLarge { .. } => MESSAGE_TOO_LARGE,
        Error::OffsetOutOfRange { .. } => OFFSET_OUT_OF_RANGE,
        Error::InvalidConfig(_) => INVALID_CONFIG,
        Error::StreamExists(_) => TOPIC_ALREADY_EXISTS,
        Error::PartitionsCannotShrink { .. } => INVALID_PARTITIONS,
        // Storage failures, a closed broker, corrupt stored data: the
        // client may retry (KAFKA_STORAGE_ERROR is retriable).
        _ => KAFKA_STORAGE_ERROR,
    }
}
