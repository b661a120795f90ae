//! GitHub's deploy webhook: `deployment_status` events, signed with the webhook's secret
//! (`X-Hub-Signature-256`). Bytes in, facts out; no HTTP types.

mod event;
mod signature;

pub use event::{DeploymentStatus, EventError};
pub use signature::{sign, Signature, SignatureError};
