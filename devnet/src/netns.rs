//! Network namespaces: each node of a network in a namespace of its own, joined to a
//! bridge of the network's own, so that a partition is a real cut of the network path
//! between two processes rather than something the node is asked to pretend.
//!
//! Layout of one network (subnet index `I`, node `K` of the manifest counted from 1):
//!
//! ```text
//!  root namespace                                   namespace vtdI-node-K
//!  bridge vtdIbr 10.A.B.1/24 ── veth vtdIhK ═══ veth eth0 10.A.B.(K+1)/24, lo
//! ```
//!
//! The subnet `10.A.B.0/24` is the `I`-th of `10.200.0.0/24 ..= 10.215.255.0/24`. Nodes
//! listen on their own address; clients in the root namespace (the CLI, tests) reach them
//! through the bridge's address without any routing or forwarding. A cut from node X to
//! node Y is the route `unreachable Y/32` in X's namespace: X can no longer send anything
//! to Y (its connects and sends fail with "No route to host", and a TCP connection already
//! open between them stops carrying data), while both still answer clients in the root
//! namespace. A partition is a cut both ways between every pair across the divide.
//!
//! Subnets are handed out under an exclusive lock on `/run/veritrace-devnet/alloc.lock`:
//! an index is free when no allocation file names it, no bridge of its name exists, and
//! no address or route of the host overlaps its subnet. The allocation file records the
//! network directory and everything created, so that it can be removed again by a later
//! process; `/run` is a tmpfs, so allocation files go with the namespaces at reboot.
//!
//! All of it needs CAP_NET_ADMIN (root) and iproute2's `ip`; [`available`] says whether
//! this process has them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Where allocation files and the allocation lock live.
pub const STATE_DIR: &str = "/run/veritrace-devnet";
/// Subnets available to devnet networks: `10.200.0.0/24` to `10.215.255.0/24`.
pub const SUBNETS_MAX: u32 = 4096;
/// Second octet of the first subnet.
const SUBNET_FIRST_OCTET2: u32 = 200;
/// Prefix length of a network's subnet.
pub const SUBNET_PREFIX_LEN: u8 = 24;
/// Most nodes in one subnet: `.2` to `.254`.
pub const SUBNET_NODES_MAX: u32 = 253;
/// Prefix of every name devnet gives a bridge, veth or namespace.
pub const NAME_PREFIX: &str = "vtd";
/// Longest Linux interface name.
const IFNAME_BYTES_MAX: usize = 15;
/// Name of a node's interface inside its namespace.
pub const NODE_IFNAME: &str = "eth0";

/// The bridge and subnet of a network whose namespaces exist.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetLayout {
    /// Which subnet of the devnet range: `10.(200 + I / 256).(I % 256).0/24`.
    pub subnet_index: u32,
    pub bridge: String,
    /// The bridge's address in the root namespace: `.1` of the subnet.
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
}

/// One node's namespace and link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLink {
    pub netns: String,
    /// The root-namespace end of its veth pair, enslaved to the bridge.
    pub veth: String,
    pub ip: Ipv4Addr,
}

/// What an allocation file records: enough to remove everything without the manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Allocation {
    /// The network directory that owns the subnet.
    dir: PathBuf,
    layout: NetLayout,
    links: Vec<NodeLink>,
}

/// Bit of CAP_NET_ADMIN in the capability sets of `/proc/PID/status`.
const CAP_NET_ADMIN_BIT: u32 = 12;
/// Bit of CAP_SYS_ADMIN (`ip netns add` and `exec` mount and unshare; `mount`).
pub const CAP_SYS_ADMIN_BIT: u32 = 21;

/// Set on a machine that cannot run namespaces at all, to let tests that need them skip.
pub const SKIP_ENV: &str = "VERITRACE_DEVNET_SKIP_NETNS";

/// For a test that needs namespaces (`what` names it): see [`needed_for_test`].
pub fn available_for_test(what: &str) -> bool {
    needed_for_test(what, SKIP_ENV, available())
}

/// For a test that needs what only root may do (`what` names the test, `available` says
/// whether this process may): `true` when it may; `false`, after saying so, when it may not
/// and `skip_env` is set; otherwise it panics with the reason and both ways out. Never a
/// silent skip.
pub fn needed_for_test(what: &str, skip_env: &str, available: Result<(), String>) -> bool {
    match available {
        Ok(()) => true,
        Err(why) if std::env::var_os(skip_env).is_some() => {
            eprintln!("skipped {what}: {skip_env} is set, and {why}");
            false
        }
        Err(why) => panic!("{why}; run the tests as root, or set {skip_env}=1 to skip {what}"),
    }
}

/// Whether this process holds capability `bit` (linux/capability.h) in its effective set.
pub fn has_capability(bit: u32) -> Result<bool, String> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("read /proc/self/status: {e}"))?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or("no CapEff line in /proc/self/status")?;
    Ok(effective & (1 << bit) != 0)
}

/// `Ok` if this process can create namespaces, else why not.
pub fn available() -> Result<(), String> {
    if !(has_capability(CAP_NET_ADMIN_BIT)? && has_capability(CAP_SYS_ADMIN_BIT)?) {
        return Err("network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN), which this process lacks".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`ip -V` failed ({}): is iproute2 installed?", o.status)),
        Err(e) => Err(format!("cannot run `ip` ({e}): install iproute2")),
    }
}

/// The subnet's network address for index `i`.
pub fn subnet_of(i: u32) -> Ipv4Addr {
    assert!(i < SUBNETS_MAX, "subnet index {i} is out of range");
    Ipv4Addr::new(10, (SUBNET_FIRST_OCTET2 + i / 256) as u8, (i % 256) as u8, 0)
}

/// The subnet index of an address in the devnet range, if it is in it.
pub fn index_of(ip: Ipv4Addr) -> Option<u32> {
    let o = ip.octets();
    let second = u32::from(o[1]);
    (o[0] == 10 && (SUBNET_FIRST_OCTET2..SUBNET_FIRST_OCTET2 + SUBNETS_MAX / 256).contains(&second))
        .then(|| (second - SUBNET_FIRST_OCTET2) * 256 + u32::from(o[2]))
}

/// Host `h` of subnet `i` (`.1` is the bridge, `.2` the first node).
fn host(i: u32, h: u32) -> Ipv4Addr {
    let o = subnet_of(i).octets();
    Ipv4Addr::new(o[0], o[1], o[2], h as u8)
}

fn bridge_name(i: u32) -> String {
    format!("{NAME_PREFIX}{i}br")
}

fn veth_name(i: u32, k: u32) -> String {
    format!("{NAME_PREFIX}{i}h{k}")
}

fn netns_name(i: u32, node_id: &str) -> String {
    format!("{NAME_PREFIX}{i}-{node_id}")
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().with_context(|| format!("run ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("ip {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs `ip ARGS` and returns its stdout.
fn ip_output(args: &[&str]) -> Result<String> {
    let out = Command::new("ip").args(args).output().with_context(|| format!("run ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("ip {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout).with_context(|| format!("output of ip {} is not utf-8", args.join(" ")))
}

/// Whether an error of `ip` says the thing to delete is not there.
fn is_absent(e: &anyhow::Error) -> bool {
    let t = format!("{e:#}");
    t.contains("Cannot find device")
        || t.contains("No such file or directory")
        || t.contains("No such process")
        || t.contains("does not exist")
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Whether every namespace and link of a layout still exists (they do not survive a
/// reboot, while the manifest does).
pub fn exists(layout: &NetLayout, links: &[NodeLink]) -> bool {
    link_exists(&layout.bridge) && links.iter().all(|l| netns_exists(&l.netns) && link_exists(&l.veth))
}

/// Creates a bridge on a free subnet and one namespace per node, for the network in `dir`.
/// `prefer` is tried first (the subnet the network had before, so its addresses stay).
/// Either everything is created or nothing is left behind.
pub fn create(dir: &Path, node_ids: &[String], prefer: Option<u32>) -> Result<(NetLayout, Vec<NodeLink>)> {
    if let Err(why) = available() {
        bail!("{why}");
    }
    if node_ids.len() as u32 > SUBNET_NODES_MAX {
        bail!("{} nodes do not fit in one /24 subnet (at most {SUBNET_NODES_MAX})", node_ids.len());
    }
    let state = Path::new(STATE_DIR);
    std::fs::create_dir_all(state).with_context(|| format!("create {}", state.display()))?;
    let lock_path = state.join("alloc.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("open {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("lock {}", lock_path.display()))?;

    // Under the lock: pick, record, and create the bridge, so the next allocator sees it.
    let picked = (|| -> Result<(NetLayout, Vec<NodeLink>)> {
        reclaim_abandoned(state);
        let taken = taken_indexes(state)?;
        let i = prefer
            .filter(|p| *p < SUBNETS_MAX && !taken.contains(p))
            .or_else(|| (0..SUBNETS_MAX).find(|i| !taken.contains(i)))
            .with_context(|| format!("all {SUBNETS_MAX} devnet subnets are in use"))?;
        let layout =
            NetLayout { subnet_index: i, bridge: bridge_name(i), gateway: host(i, 1), prefix_len: SUBNET_PREFIX_LEN };
        let links: Vec<NodeLink> = node_ids
            .iter()
            .enumerate()
            .map(|(k, id)| NodeLink {
                netns: netns_name(i, id),
                veth: veth_name(i, k as u32 + 1),
                ip: host(i, k as u32 + 2),
            })
            .collect();
        for name in std::iter::once(&layout.bridge).chain(links.iter().map(|l| &l.veth)) {
            assert!(name.len() <= IFNAME_BYTES_MAX, "interface name {name:?} is longer than {IFNAME_BYTES_MAX}");
        }
        let record = Allocation { dir: dir.to_path_buf(), layout: layout.clone(), links: links.clone() };
        let text = serde_json::to_string_pretty(&record).context("encode allocation")?;
        crate::fsutil::write_atomic(&allocation_path(state, i), text.as_bytes())?;
        let made = ip(&["link", "add", &layout.bridge, "type", "bridge"])
            .and_then(|()| {
                ip(&["addr", "add", &format!("{}/{}", layout.gateway, layout.prefix_len), "dev", &layout.bridge])
            })
            .and_then(|()| ip(&["link", "set", &layout.bridge, "up"]));
        if let Err(e) = made {
            let _ = remove(&layout, &[]);
            return Err(e.context(format!("create bridge {}", layout.bridge)));
        }
        Ok((layout, links))
    })();
    drop(lock);
    let (layout, links) = picked?;

    for l in &links {
        if let Err(e) = create_node(&layout, l) {
            let _ = remove(&layout, &links);
            return Err(e.context(format!("create namespace {}", l.netns)));
        }
    }
    Ok((layout, links))
}

/// Adds a namespace for one more node, `node_id`, to a layout made by [`create`] for the
/// network in `dir`, whose nodes have `links`: the next address and veth of the subnet.
/// The allocation record is updated first, so a later [`remove`] finds it.
pub fn add(dir: &Path, layout: &NetLayout, links: &[NodeLink], node_id: &str) -> Result<NodeLink> {
    if let Err(why) = available() {
        bail!("{why}");
    }
    let k = links.len() as u32 + 1;
    if k > SUBNET_NODES_MAX {
        bail!("{k} nodes do not fit in one /24 subnet (at most {SUBNET_NODES_MAX})");
    }
    let i = layout.subnet_index;
    let link = NodeLink { netns: netns_name(i, node_id), veth: veth_name(i, k), ip: host(i, k + 1) };
    assert!(link.veth.len() <= IFNAME_BYTES_MAX, "interface name {:?} is longer than {IFNAME_BYTES_MAX}", link.veth);
    let mut all = links.to_vec();
    all.push(link.clone());
    let record = Allocation { dir: dir.to_path_buf(), layout: layout.clone(), links: all };
    let text = serde_json::to_string_pretty(&record).context("encode allocation")?;
    crate::fsutil::write_atomic(&allocation_path(Path::new(STATE_DIR), i), text.as_bytes())?;
    if let Err(e) = create_node(layout, &link) {
        remove_node(&link, &mut Vec::new());
        return Err(e.context(format!("create namespace {}", link.netns)));
    }
    Ok(link)
}

fn create_node(layout: &NetLayout, l: &NodeLink) -> Result<()> {
    ip(&["netns", "add", &l.netns])?;
    ip(&["link", "add", &l.veth, "type", "veth", "peer", "name", NODE_IFNAME, "netns", &l.netns])?;
    ip(&["link", "set", &l.veth, "master", &layout.bridge])?;
    ip(&["link", "set", &l.veth, "up"])?;
    ip(&["-n", &l.netns, "addr", "add", &format!("{}/{}", l.ip, layout.prefix_len), "dev", NODE_IFNAME])?;
    ip(&["-n", &l.netns, "link", "set", NODE_IFNAME, "up"])?;
    ip(&["-n", &l.netns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Removes one node's namespace and veth, killing what runs in it; errors go to `errors`.
fn remove_node(l: &NodeLink, errors: &mut Vec<String>) {
    if netns_exists(&l.netns) {
        kill_processes_in(&l.netns);
        if let Err(e) = ip(&["netns", "del", &l.netns])
            && !is_absent(&e)
        {
            errors.push(format!("{e:#}"));
        }
    }
    // Deleting the namespace deletes the veth pair with it; this is for a pair left in
    // the root namespace by a creation that failed half-way.
    if link_exists(&l.veth)
        && let Err(e) = ip(&["link", "del", &l.veth])
        && !is_absent(&e)
    {
        errors.push(format!("{e:#}"));
    }
}

/// Removes the namespaces, veths and bridge of a layout, and its allocation. Any process
/// still running in one of the namespaces is killed first (devnet started it there; a
/// namespace with a process in it would outlive its name). Goes on past errors and
/// reports them all at the end; what is already gone is not an error.
pub fn remove(layout: &NetLayout, links: &[NodeLink]) -> Result<()> {
    let mut errors = Vec::new();
    for l in links {
        remove_node(l, &mut errors);
    }
    if link_exists(&layout.bridge)
        && let Err(e) = ip(&["link", "del", &layout.bridge])
        && !is_absent(&e)
    {
        errors.push(format!("{e:#}"));
    }
    let alloc = allocation_path(Path::new(STATE_DIR), layout.subnet_index);
    if let Err(e) = std::fs::remove_file(&alloc)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        errors.push(format!("remove {}: {e}", alloc.display()));
    }
    if !errors.is_empty() {
        bail!("could not remove all of network {}:\n{}", layout.bridge, errors.join("\n"));
    }
    Ok(())
}

/// SIGKILLs every process in namespace `netns` (`ip netns pids`).
fn kill_processes_in(netns: &str) {
    let Ok(text) = ip_output(&["netns", "pids", netns]) else { return };
    for pid in text.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Makes `from` unable to send to `to_ip`: the route `unreachable TO/32` in its namespace.
/// Adding a cut that exists already is not an error.
pub fn add_cut(from: &NodeLink, to_ip: Ipv4Addr) -> Result<()> {
    match ip(&["-n", &from.netns, "route", "add", "unreachable", &format!("{to_ip}/32")]) {
        Err(e) if format!("{e:#}").contains("File exists") => Ok(()),
        other => other,
    }
}

/// Removes a cut made by [`add_cut`]; removing one that is not there is not an error.
pub fn remove_cut(from: &NodeLink, to_ip: Ipv4Addr) -> Result<()> {
    match ip(&["-n", &from.netns, "route", "del", "unreachable", &format!("{to_ip}/32")]) {
        Err(e) if is_absent(&e) || !netns_exists(&from.netns) => Ok(()),
        other => other,
    }
}

fn allocation_path(state: &Path, i: u32) -> PathBuf {
    state.join(format!("subnet-{i}.json"))
}

/// Removes the namespaces of networks whose directory no longer exists (deleted without
/// `devnet down`). A directory that exists keeps its subnet: `devnet down --dir` frees it.
fn reclaim_abandoned(state: &Path) {
    let Ok(entries) = std::fs::read_dir(state) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with("subnet-") && name.ends_with(".json")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else { continue };
        let Ok(a) = serde_json::from_str::<Allocation>(&text) else { continue };
        if !a.dir.exists() {
            eprintln!(
                "veritrace-devnet: removing network {} of {}, whose directory is gone",
                a.layout.bridge,
                a.dir.display()
            );
            if let Err(err) = remove(&a.layout, &a.links) {
                eprintln!("veritrace-devnet: {err:#}");
            }
        }
    }
}

/// Subnet indexes that are in use: allocated, bridged, or overlapping the host's routes.
fn taken_indexes(state: &Path) -> Result<BTreeSet<u32>> {
    let mut taken = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(state) {
        for e in entries.flatten() {
            let name = e.file_name();
            if let Some(i) = name
                .to_str()
                .and_then(|n| n.strip_prefix("subnet-"))
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                taken.insert(i);
            }
        }
    }
    let host_nets = host_networks()?;
    for i in 0..SUBNETS_MAX {
        if taken.contains(&i) {
            continue;
        }
        let mine = (subnet_of(i), SUBNET_PREFIX_LEN);
        if link_exists(&bridge_name(i)) || host_nets.iter().any(|n| overlaps(*n, mine)) {
            taken.insert(i);
        }
    }
    Ok(taken)
}

/// Every IPv4 network of the host's addresses and routes (all tables), default excluded.
fn host_networks() -> Result<Vec<(Ipv4Addr, u8)>> {
    let mut out = Vec::new();
    let addrs: serde_json::Value =
        serde_json::from_str(&ip_output(&["-j", "-4", "addr", "show"])?).context("parse `ip -j addr`")?;
    for link in addrs.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let (Some(local), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64())
                && let Ok(ip) = local.parse::<Ipv4Addr>()
            {
                out.push((ip, len.min(32) as u8));
            }
        }
    }
    let routes: serde_json::Value = serde_json::from_str(&ip_output(&["-j", "-4", "route", "show", "table", "all"])?)
        .context("parse `ip -j route`")?;
    for r in routes.as_array().into_iter().flatten() {
        if let Some(n) = r["dst"].as_str().and_then(parse_prefix) {
            out.push(n);
        }
    }
    Ok(out)
}

/// `A.B.C.D/N` or a bare address (a /32); `None` for `default` and anything else.
fn parse_prefix(s: &str) -> Option<(Ipv4Addr, u8)> {
    match s.split_once('/') {
        Some((a, n)) => Some((a.parse().ok()?, n.parse::<u8>().ok()?.min(32))),
        None => Some((s.parse().ok()?, 32)),
    }
}

/// Whether two IPv4 prefixes share an address.
fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let len = a.1.min(b.1);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    (u32::from(a.0) & mask) == (u32::from(b.0) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_names_and_overlaps() {
        assert_eq!(subnet_of(0), Ipv4Addr::new(10, 200, 0, 0));
        assert_eq!(subnet_of(257), Ipv4Addr::new(10, 201, 1, 0));
        assert_eq!(subnet_of(SUBNETS_MAX - 1), Ipv4Addr::new(10, 215, 255, 0));
        assert_eq!(host(3, 2), Ipv4Addr::new(10, 200, 3, 2));
        assert_eq!(index_of(host(300, 9)), Some(300));
        assert_eq!(index_of(Ipv4Addr::LOCALHOST), None);
        assert_eq!(index_of(Ipv4Addr::new(10, 216, 0, 2)), None);
        // The longest names stay within Linux's 15 bytes.
        assert!(bridge_name(SUBNETS_MAX - 1).len() <= IFNAME_BYTES_MAX);
        assert!(veth_name(SUBNETS_MAX - 1, SUBNET_NODES_MAX).len() <= IFNAME_BYTES_MAX);
        let net = |s: &str| parse_prefix(s).expect("prefix");
        assert!(overlaps(net("10.0.0.0/8"), (subnet_of(5), 24)));
        assert!(overlaps(net("10.200.5.7"), (subnet_of(5), 24)));
        assert!(!overlaps(net("10.200.6.0/24"), (subnet_of(5), 24)));
        assert!(overlaps(net("0.0.0.0/0"), net("1.2.3.4/32")));
        assert!(parse_prefix("default").is_none());
    }
}
