//! Upsun webhooks: signature verification and activity parsing. Bytes in, facts out:
//! no HTTP types and no state here (see `../shared/upsun/UPSUN.md` §2-§4).

mod activity;
mod jws;

pub use activity::{Activity, ActivityError, Phase};
pub use jws::{sign, verify, JwsError, SignedPayload};
