//! The `Date` header of the answers this engine writes when the app sent none (as hyper's
//! server adds one): IMF-fixdate (RFC 9110 §5.6.7), formatted at most once a second per
//! worker thread.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use time::macros::format_description;
use time::OffsetDateTime;

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
const LEN: usize = 29;

thread_local! {
    static CACHED: RefCell<(u64, [u8; LEN])> = const { RefCell::new((u64::MAX, [0; LEN])) };
}

/// Appends `date: <now>\r\n` to `out`.
pub fn append(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != now {
            let format = format_description!(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
            );
            let text = OffsetDateTime::from_unix_timestamp(now as i64)
                .ok()
                .and_then(|t| t.format(&format).ok());
            if let Some(text) = text.filter(|t| t.len() == LEN) {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = now;
            }
        }
        if cached.0 == now {
            out.extend_from_slice(b"date: ");
            out.extend_from_slice(&cached.1);
            out.extend_from_slice(b"\r\n");
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn imf_fixdate() {
        let mut out = Vec::new();
        super::append(&mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.starts_with("date: ") && line.ends_with(" GMT\r\n"),
            "{line}"
        );
        assert_eq!(line.len(), 6 + super::LEN + 2);
        let date = &line[6..6 + super::LEN];
        assert!(httpdate_like(date), "{date}");
    }

    fn httpdate_like(d: &str) -> bool {
        let b = d.as_bytes();
        b[3] == b',' && b[4] == b' ' && b[7] == b' ' && b[11] == b' ' && b[16] == b' '
    }
}
