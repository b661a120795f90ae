//! The names one site's guard state lives under. The braces are a hash tag: a Redis Cluster
//! keeps every key of a site in one slot, so the commit script may touch them together.

#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// A hash: `version` and `doc` (the state as JSON).
    pub state: String,
    /// A stream of audit records, one field `record` each.
    pub audit: String,
    /// A hash of live replicas (see `announce.lua`).
    pub replicas: String,
    /// Where each committed version is published.
    pub changes: String,
}

impl Keys {
    pub(super) fn new(site: &str) -> Self {
        let key = |name: &str| format!("writeguard:{{{site}}}:{name}");
        Keys {
            state: key("state"),
            audit: key("audit"),
            replicas: key("replicas"),
            changes: key("changes"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_key_of_a_site_shares_its_hash_tag() {
        let k = super::Keys::new("shop-main");
        assert_eq!(k.state, "writeguard:{shop-main}:state");
        assert_eq!(k.audit, "writeguard:{shop-main}:audit");
        assert_eq!(k.replicas, "writeguard:{shop-main}:replicas");
        assert_eq!(k.changes, "writeguard:{shop-main}:changes");
    }
}
