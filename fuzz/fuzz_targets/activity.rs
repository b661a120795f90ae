//! `Activity::parse` on any bytes: never panics, and what it accepts has the three required
//! fields non-empty; `phase` and `redeploys` are total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use writeguard::upsun::Activity;

fuzz_target!(|data: &[u8]| {
    if let Ok(activity) = Activity::parse(data) {
        assert!(!activity.id.is_empty());
        assert!(!activity.kind.is_empty());
        assert!(!activity.state.is_empty());
        let _ = activity.phase();
        let _ = activity.redeploys();
    }
});
