//! Provision: copy a content package onto a free drive, verify it, and pin it to a
//! reservation. Answers UNSUPPORTED until the chunk cache and content client land (issue 10).

use sneakernet_proto::gateway::v1::FailureReason;

use super::{Answer, Executor, Failed};
use crate::bays::Bays;

/// Answers UNSUPPORTED without touching anything.
pub(super) async fn execute<B: Bays>(ex: &Executor<B>, id: &str) -> Answer {
    Ok(Some(ex.failure(
        id,
        Failed::new(
            FailureReason::Unsupported,
            "provisioning arrives with the content issue",
        ),
    )))
}
