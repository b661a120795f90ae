//! Standard Webhooks (<https://www.standardwebhooks.com/>, v1): a deploy event from any
//! pipeline, signed with a shared `whsec_` secret. `signature` verifies (and, for
//! `writeguard deploy`, makes) the `webhook-signature` header; `event` reads the body.

mod event;
mod signature;

pub use event::DeployMessage;
pub use signature::{sign, Key, SignatureError, Signed};
