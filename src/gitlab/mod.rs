//! GitLab's deploy webhook: the Deployment Hook (`object_kind: "deployment"`),
//! authenticated by the webhook's secret token (`X-Gitlab-Token`) or its signing token
//! (Standard Webhooks headers, see `stdwebhook`). Bytes in, facts out; no HTTP types.

mod event;

pub use event::Deployment;
