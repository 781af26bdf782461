//! Kafka's classic consumer groups: the group coordinator (members,
//! generations, assignments) and the offsets a group commits, kept in
//! Leat's group offsets.
//!
//! Not served yet: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit and OffsetFetch are not advertised, so no
//! group has members.

/// The group coordinator of one listener.
#[derive(Default)]
pub struct Coordinator {}

impl Coordinator {
    /// Whether `member_id` is a member of `group` in generation
    /// `generation_id`, as a transactional offset commit must be (KIP-447:
    /// the generation fences zombies). `Err` holds the Kafka error code to
    /// answer with (UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, ...).
    ///
    /// A generation of -1 with an empty member id is a commit from outside
    /// any group generation (a producer that does not use the group
    /// protocol), which Kafka accepts for a group without members.
    pub fn check_member(
        &self,
        group: &str,
        member_id: &str,
        generation_id: i32,
    ) -> Result<(), i16> {
        let _ = group;
        if generation_id < 0 && member_id.is_empty() {
            Ok(())
        } else {
            // No group has members: the coordinator is not served yet.
            Err(crate::codes::UNKNOWN_MEMBER_ID)
        }
    }
}
