//! Free TCP ports on 127.0.0.1, chosen at run time so tests can run side by side.
//!
//! A port is picked by binding port 0 and closing the listener; another process can take
//! it before the node binds it. That race is rare and is handled where it shows: a port is
//! probed again just before a node starts, and a node that fails to bind is given new
//! ports and started again (`Network::start`).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};

use anyhow::{Context, Result, bail};

/// Attempts at finding `n` ports outside the excluded set before giving up.
const PICK_ATTEMPTS_MAX: u32 = 32;

/// `n` distinct free ports on 127.0.0.1, none of them in `exclude` (ports the network has
/// handed out already, whose nodes may be down right now).
pub fn pick_ports(n: usize, exclude: &BTreeSet<u16>) -> Result<Vec<u16>> {
    for _ in 0..PICK_ATTEMPTS_MAX {
        // Hold every listener until all are picked, so the kernel cannot hand out one port
        // twice.
        let mut held = Vec::with_capacity(n);
        let mut ports = Vec::with_capacity(n);
        for _ in 0..n {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0 to pick a free port")?;
            let port = l.local_addr().context("local address of a picked port")?.port();
            held.push(l);
            ports.push(port);
        }
        if ports.iter().all(|p| !exclude.contains(p)) {
            return Ok(ports);
        }
    }
    bail!("could not find {n} free ports outside the {} already used after {PICK_ATTEMPTS_MAX} tries", exclude.len())
}

/// Whether `port` on 127.0.0.1 can be bound right now.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_outside_the_excluded_set() {
        let first = pick_ports(30, &BTreeSet::new()).expect("ports");
        assert_eq!(first.iter().collect::<BTreeSet<_>>().len(), 30, "{first:?}");
        assert!(first.iter().all(|p| *p != 0));
        let exclude: BTreeSet<u16> = first.iter().copied().collect();
        let second = pick_ports(30, &exclude).expect("ports");
        assert!(second.iter().all(|p| !exclude.contains(p)), "{second:?} overlaps {first:?}");
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let port = held.local_addr().expect("addr").port();
        assert!(!is_free(port));
        drop(held);
        assert!(is_free(port));
    }
}
