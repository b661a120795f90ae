//! The range each configured duration must fall in. The upper bounds are far past any
//! sensible setting and far below what would overflow a deadline (`Instant + Duration`
//! panics, and hyper computes its header deadline that way): a value `check` accepts can
//! never make a request handler panic, so the guard never fails open on a typo like
//! `"10000y"`. README's config table states each bound.

use std::ops::RangeInclusive;
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// The kernel gives up a TCP connect after about two minutes anyway.
pub(super) const CONNECT_TIMEOUT: RangeInclusive<Duration> = MS..=Duration::from_secs(300);
/// Rides through an app restart; clients have long given up after an hour.
pub(super) const UPSTREAM_RETRY: RangeInclusive<Duration> = Duration::ZERO..=HOUR;
/// A request head takes milliseconds; an idle keep-alive connection an hour at most.
pub(super) const HEADER_TIMEOUT: RangeInclusive<Duration> = MS..=HOUR;
pub(super) const BODY_IDLE_TIMEOUT: RangeInclusive<Duration> = MS..=HOUR;
/// A large upload over a slow link may take hours, not days.
pub(super) const BODY_TIMEOUT: RangeInclusive<Duration> = MS..=DAY;
/// A slow report or export may take hours to start answering, not days.
pub(super) const UPSTREAM_TIMEOUT: RangeInclusive<Duration> = MS..=DAY;
/// Clients do not wait a day to retry; the value is capped by the engagement's end anyway.
pub(super) const RETRY_AFTER: RangeInclusive<Duration> = Duration::from_secs(1)..=DAY;
/// No deploy takes a week: past that, a lost "complete" webhook or a forgotten manual
/// engagement would lock writes for longer than anyone would notice and fix it.
pub(super) const MAX_ENGAGED: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(7 * 86_400);
/// Browsers give up on a form post after minutes; each held write keeps a connection open.
pub(super) const HOLD: RangeInclusive<Duration> = Duration::ZERO..=HOUR;
/// Orchestrators kill a stopping process after seconds to minutes.
pub(super) const SHUTDOWN_GRACE: RangeInclusive<Duration> = Duration::ZERO..=HOUR;
/// A replica confirms the shared state at least four times per `stale_after`: shorter than
/// half a second would flap on a poll that is merely late; past minutes, writes flow into a
/// deploy unseen.
pub(super) const STALE_AFTER: RangeInclusive<Duration> =
    Duration::from_millis(500)..=Duration::from_secs(300);
/// Past a week, a page is no longer what the site says; deploys take minutes.
pub(super) const STALE_GRACE: RangeInclusive<Duration> =
    Duration::ZERO..=Duration::from_secs(7 * 86_400);
