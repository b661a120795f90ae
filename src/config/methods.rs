//! Method names `guard.methods` may list. Any token is a valid extension method, so a typo
//! like `DELET` would silently leave `DELETE` unguarded: a name one or two letters away from a
//! registered method is refused as a typo of it, while a name far from all of them (a
//! private extension such as `FROBNICATE`) is taken as meant.

/// RFC 9110, PATCH (RFC 5789), WebDAV and its extensions (RFC 4918, 3253, 3648, 3744, 4437,
/// 4791, 5323, 5842), LINK/UNLINK (RFC 2068), PURGE (caches) and QUERY (HTTP WG draft).
const KNOWN: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "VERSION-CONTROL",
    "REPORT",
    "CHECKOUT",
    "CHECKIN",
    "UNCHECKOUT",
    "MKWORKSPACE",
    "UPDATE",
    "LABEL",
    "MERGE",
    "BASELINE-CONTROL",
    "MKACTIVITY",
    "ORDERPATCH",
    "ACL",
    "MKREDIRECTREF",
    "UPDATEREDIRECTREF",
    "MKCALENDAR",
    "SEARCH",
    "BIND",
    "UNBIND",
    "REBIND",
    "LINK",
    "UNLINK",
    "PURGE",
    "QUERY",
];

/// The known method `name` (upper case) is likely a typo of; `None` when it is known, or far
/// from every known one.
pub(super) fn typo_of(name: &str) -> Option<&'static str> {
    if KNOWN.contains(&name) {
        return None;
    }
    super::suggest::closest(name, KNOWN.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_typos_and_known_or_distant_names_are_not() {
        assert_eq!(typo_of("DELET"), Some("DELETE"));
        assert_eq!(typo_of("POTS"), Some("POST"));
        assert_eq!(typo_of("PACTH"), Some("PATCH"));
        for name in [
            "DELETE",
            "PROPPATCH",
            "UNLINK",
            "PURGE",
            "FROBNICATE",
            "FOO",
        ] {
            assert_eq!(typo_of(name), None, "{name}");
        }
    }
}
