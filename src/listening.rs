//! Whether a process itself holds the listening socket on an address, read from Linux
//! `/proc` (the socket table, then the process's file descriptors). A connection to the
//! address cannot tell: another process may hold the port. pingora's service API has no hook
//! that says a listener was built, so readiness asks this; the tests ask it of the binary.

use std::net::SocketAddr;

/// `None` when `/proc` cannot tell (no procfs, or another user's process).
pub fn holds(pid: u32, addr: &SocketAddr) -> Option<bool> {
    let (table, local) = match addr {
        SocketAddr::V4(a) => (
            "net/tcp",
            format!(
                "{:08X}:{:04X}",
                u32::from_ne_bytes(a.ip().octets()),
                a.port()
            ),
        ),
        SocketAddr::V6(a) => {
            let o = a.ip().octets();
            let words: String = o
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                .collect();
            ("net/tcp6", format!("{words}:{:04X}", a.port()))
        }
    };
    let text = std::fs::read_to_string(format!("/proc/{pid}/{table}")).ok()?;
    let sockets: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        // State 0A is LISTEN.
        .filter(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    if sockets.is_empty() {
        return Some(false);
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| sockets.iter().any(|s| target.as_os_str() == s.as_str()))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_our_listener_from_someone_elses() {
        let me = std::process::id();
        let ours = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(holds(me, &ours.local_addr().unwrap()), Some(true));
        let v6 = std::net::TcpListener::bind("[::1]:0");
        if let Ok(v6) = v6 {
            assert_eq!(holds(me, &v6.local_addr().unwrap()), Some(true));
        }
        let addr = ours.local_addr().unwrap();
        drop(ours);
        assert_eq!(holds(me, &addr), Some(false));
    }
}
