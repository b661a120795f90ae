//! Upsun webhooks: signature verification and activity parsing. Bytes in, facts out:
//! no HTTP types and no state here (README "Upsun integration"; the test fixtures are in `tests/fixtures/upsun`).

mod activity;
mod jws;

pub use activity::{Activity, ActivityError, Phase};
pub use jws::{sign, verify, Detached, JwsError, SignedPayload};
