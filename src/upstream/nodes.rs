//! The managed nodes of one account and region: [`NodeSource`], the
//! boundary `DescribeInstanceInformation` goes through.
//!
//! It is a trait of its own, beside [`super::SessionSource`], because its
//! caller is different (the node loader in [`crate::nodes`], batching the
//! targets of many sessions) and so that tests can fake it alone.

use async_trait::async_trait;

use super::UpstreamError;
use crate::model::{InstanceId, ManagedNode};

/// `DescribeInstanceInformation` accepts at most this many ids per
/// `InstanceIds` filter in one call the gateway makes (the model allows 100
/// values, but `MaxResults` stops at 50, so 50 ids fit one page).
pub const MAX_IDS_PER_CALL: usize = 50;

/// Looks up managed nodes in one account and region.
#[async_trait]
pub trait NodeSource: Send + Sync {
    /// The nodes registered under `ids`, in any order. An id that is not a
    /// registered node is simply absent from the answer. Callers send at
    /// most [`MAX_IDS_PER_CALL`] ids to make one upstream call of it;
    /// implementations must accept more (in several calls).
    async fn describe_instances(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<ManagedNode>, UpstreamError>;
}
