//! `veritrace devnet ...`: start, inspect, break and demonstrate a local network of real
//! node processes (docs/devnet.md). A thin layer over the `veritrace-devnet` library: every
//! command opens the network from its directory's manifest, acts, and leaves the nodes
//! running (or stopped) for the next command.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use veritrace_devnet::demo::{self, DemoReport, DemoTarget, Served, Step};
use veritrace_devnet::locate::{NODE_BINARY_ENV, NODE_BINARY_NAME};
use veritrace_devnet::manifest::{Cut, Manifest};
use veritrace_devnet::{NetMode, Network, NetworkSpec, NodeStatus, netns};

use crate::exit::{EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_UNAVAILABLE, Failure, OrExit};
use crate::output::Out;

/// Default number of validators of a new network.
const VALIDATORS_DEFAULT: u32 = 3;
/// Default number of observers of a new network.
const OBSERVERS_DEFAULT: u32 = 1;
/// Default longest wait for a leader, and for every node to answer.
const TIMEOUT_SECS_DEFAULT: u64 = 60;
/// Default number of log lines `logs` prints.
const LOG_LINES_DEFAULT: usize = 200;
/// How often `logs --follow` looks for more.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);
/// Most bytes of a log read to print its last lines.
const LOG_TAIL_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Hex digits of a root shown in the status table (`--json` has them whole).
const ROOT_HEX_SHOWN: usize = 16;

#[derive(Subcommand)]
pub enum DevnetCmd {
    /// Create a network in DIR (keys, genesis, configs) and start it, or restart the one
    /// already there keeping its data; returns once a leader is elected and every node
    /// answers.
    Up(UpArgs),
    /// Per node: organisation, role, process, Raft state and leader, height, roots,
    /// latest complete checkpoint, addresses, cuts.
    Status(DirArg),
    /// Stop every node and remove the network's namespaces; `--purge` deletes DIR too.
    Down {
        #[command(flatten)]
        dir: DirArg,
        /// Also delete the network directory: keys, genesis, data, logs.
        #[arg(long)]
        purge: bool,
    },
    /// SIGKILL a node, like a crash or a power cut.
    Kill(NodeArg),
    /// SIGSTOP a node: frozen with its sockets open.
    Pause(NodeArg),
    /// SIGCONT a paused node.
    Resume(NodeArg),
    /// Stop a node (SIGTERM, SIGKILL after a grace period) and start it again.
    Restart(NodeArg),
    /// Cut the given nodes off from all the others, both ways (namespaces mode).
    Partition {
        #[command(flatten)]
        dir: DirArg,
        /// The nodes on one side of the cut.
        #[arg(required = true, num_args = 1..)]
        nodes: Vec<String>,
    },
    /// One-way cut: FROM can no longer send to TO (namespaces mode).
    Cut {
        #[command(flatten)]
        dir: DirArg,
        from: String,
        to: String,
    },
    /// Remove every cut.
    Heal(DirArg),
    /// Print a node's log (stdout and stderr of every run).
    Logs {
        #[command(flatten)]
        node: NodeArg,
        /// Last lines to print; 0 prints the whole log.
        #[arg(long, short = 'n', default_value_t = LOG_LINES_DEFAULT)]
        lines: usize,
        /// Keep printing what the node writes, until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Play the seeds' traceability chains through the gRPC API and verify the bundles of
    /// a few codes offline.
    Demo {
        #[command(flatten)]
        dir: DirArg,
        /// Node to send every request to (default: the current leader).
        #[arg(long)]
        via: Option<String>,
        /// Longest wait for a leader, in seconds.
        #[arg(long, default_value_t = TIMEOUT_SECS_DEFAULT)]
        timeout: u64,
    },
    /// Grow the network by a node the genesis does not name: start it, submit the
    /// governance record that admits it as a validator (signed by the cast's regulators),
    /// and wait until it is a Raft voter holding the same ledger as the others.
    AddNode {
        #[command(flatten)]
        dir: DirArg,
        /// The organisation that operates it (default: the first validator operator of the
        /// cast that runs no validator yet).
        #[arg(long)]
        org: Option<String>,
        /// Longest wait for each step (leader, commit, catching up), in seconds.
        #[arg(long, default_value_t = TIMEOUT_SECS_DEFAULT)]
        timeout: u64,
    },
}

#[derive(Args)]
pub struct DirArg {
    /// The network directory (its manifest is DIR/devnet.json).
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Args)]
pub struct NodeArg {
    #[command(flatten)]
    dir: DirArg,
    /// The node, e.g. node-2.
    node: String,
}

/// How `up` connects the nodes of a new network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NetChoice {
    /// Namespaces if this process may make them (root), else loopback.
    Auto,
    /// Every node on 127.0.0.1 with ports picked at run time; no partitions.
    Loopback,
    /// One network namespace per node on a bridge; partitions work; needs root.
    Netns,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Validators of a new network (Raft voters run by regulators and inspection bodies).
    #[arg(long)]
    validators: Option<u32>,
    /// Observers of a new network (replicas run by enterprises).
    #[arg(long)]
    observers: Option<u32>,
    /// How the nodes of a new network are connected.
    #[arg(long, value_enum, default_value_t = NetChoice::Auto)]
    net: NetChoice,
    /// The veritrace-node executable (default: $VERITRACE_NODE_BIN, else the one next to
    /// this veritrace).
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Longest wait for a leader and for every node to answer, in seconds.
    #[arg(long, default_value_t = TIMEOUT_SECS_DEFAULT)]
    timeout: u64,
}

/// Runs one devnet command.
pub fn run(cmd: &DevnetCmd, out: &Out) -> Result<(), Failure> {
    match cmd {
        DevnetCmd::Up(a) => up(a, out),
        DevnetCmd::Status(d) => {
            let net = open(&d.dir)?;
            let (value, text) = network_view(&net, "status", json!({}));
            out.emit(value, || text);
            Ok(())
        }
        DevnetCmd::Down { dir, purge } => down(dir, *purge, out),
        DevnetCmd::Kill(n) => node_action(n, "kill", out, |net, node| net.kill(node)),
        DevnetCmd::Pause(n) => node_action(n, "pause", out, |net, node| {
            net.pause(node)?;
            net.wait_until(Duration::from_secs(5), &format!("{node} shows as paused"), |n| Ok(n.status(node)?.paused))
        }),
        DevnetCmd::Resume(n) => node_action(n, "resume", out, |net, node| {
            net.resume(node)?;
            net.wait_until(Duration::from_secs(10), &format!("{node} answers again"), |n| Ok(n.status(node)?.up))
        }),
        DevnetCmd::Restart(n) => node_action(n, "restart", out, |net, node| net.restart(node).map(|_| ())),
        DevnetCmd::Partition { dir, nodes } => {
            let net = open(&dir.dir)?;
            let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
            let cuts = net.partition(&names).or_bad_input()?;
            print_cuts(&net, out, "partition", &cuts);
            Ok(())
        }
        DevnetCmd::Cut { dir, from, to } => {
            let net = open(&dir.dir)?;
            let cuts = net.cut(from, to).or_bad_input()?;
            print_cuts(&net, out, "cut", &cuts);
            Ok(())
        }
        DevnetCmd::Heal(d) => {
            let net = open(&d.dir)?;
            let healed = net.heal().or_exit(EXIT_UNAVAILABLE)?;
            out.emit(json!({"ok": true, "action": "heal", "healed": healed}), || {
                format!("healed {} cut(s); every node reaches every other again", healed.len())
            });
            Ok(())
        }
        DevnetCmd::Logs { node, lines, follow } => logs(node, *lines, *follow, out),
        DevnetCmd::Demo { dir, via, timeout } => play_demo(&dir.dir, via.as_deref(), *timeout, out),
        DevnetCmd::AddNode { dir, org, timeout } => add_node(&dir.dir, org.as_deref(), *timeout, out),
    }
}

fn add_node(dir: &Path, org: Option<&str>, timeout: u64, out: &Out) -> Result<(), Failure> {
    let net = open(dir)?;
    let org = match org {
        Some(o) => net.organisation(o).or_bad_input()?.to_string(),
        None => {
            let manifest = net.manifest();
            let running: Vec<&str> = manifest.nodes.iter().map(|n| n.org.as_str()).collect();
            let free = veritrace_devnet::cast::VALIDATOR_OPERATORS.iter().find(|o| !running.contains(o));
            let Some(free) = free else {
                return Err(Failure::bad_input(anyhow!(
                    "every validator operator of the cast already runs a node; name one with --org"
                )));
            };
            free.to_string()
        }
    };
    let bar = out.spinner(format!("adding a validator node for {org}"));
    let added = veritrace_devnet::admit::add_validator(&net, &org, Duration::from_secs(timeout));
    bar.finish_and_clear();
    // The node started runs on after this command, whatever happens next.
    net.detach();
    let added = added.or_exit(EXIT_UNAVAILABLE)?;
    out.emit(json!({"ok": true, "action": "add-node", "added": added}), || {
        format!(
            "{} (operated by {}, key {}) admitted by governance at log index {} through {}; voters now {}; \
             every node at height {} after {:.1} s",
            added.node_id,
            added.org,
            added.public_key,
            added.log_index,
            added.via,
            added.voters.join(", "),
            added.height,
            added.elapsed_ms as f64 / 1000.0
        )
    });
    Ok(())
}

fn open(dir: &Path) -> Result<Network, Failure> {
    if !Manifest::path(dir).is_file() {
        return Err(Failure::bad_input(anyhow!(
            "{} holds no network (no {}); make one with `veritrace devnet up --dir {}`",
            dir.display(),
            Manifest::path(dir).display(),
            dir.display()
        )));
    }
    Network::open(dir).or_bad_input()
}

/// The node binary for a new network, or for an existing one whose binary moved.
fn node_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(NODE_BINARY_ENV) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("path of this executable")?;
    let sibling = exe.with_file_name(NODE_BINARY_NAME);
    if sibling.is_file() {
        return Ok(sibling);
    }
    bail!(
        "no {NODE_BINARY_NAME} next to {}; build it (cargo build --workspace --bins), or pass --node-bin, or set \
         {NODE_BINARY_ENV}",
        exe.display()
    )
}

fn up(a: &UpArgs, out: &Out) -> Result<(), Failure> {
    let timeout = Duration::from_secs(a.timeout);
    let dir = &a.dir.dir;
    let created = !Manifest::path(dir).exists();
    let net = if created {
        let mode = match a.net {
            NetChoice::Loopback => NetMode::Loopback,
            NetChoice::Netns => NetMode::Namespaces,
            NetChoice::Auto if netns::available().is_ok() => NetMode::Namespaces,
            NetChoice::Auto => NetMode::Loopback,
        };
        let bin = node_binary(a.node_bin.as_deref()).or_bad_input()?;
        let mut spec = NetworkSpec::new(
            dir,
            a.validators.unwrap_or(VALIDATORS_DEFAULT),
            a.observers.unwrap_or(OBSERVERS_DEFAULT),
            bin,
        );
        spec.net = mode;
        let bar = out.spinner(format!("creating keys, genesis and configs in {}", dir.display()));
        let net = Network::create(spec).or_bad_input();
        bar.finish_and_clear();
        net?
    } else {
        let net = open(dir)?;
        let m = net.manifest();
        let count = |role| m.nodes.iter().filter(|n| n.role == role).count() as u32;
        let (v, o) =
            (count(veritrace_devnet::cast::NodeRole::Validator), count(veritrace_devnet::cast::NodeRole::Observer));
        if a.validators.is_some_and(|x| x != v) || a.observers.is_some_and(|x| x != o) {
            return Err(Failure::bad_input(anyhow!(
                "{} holds a network of {v} validators and {o} observers; `up` restarts it as it is (use another \
                 --dir, or `devnet down --dir {} --purge` first)",
                dir.display(),
                dir.display()
            )));
        }
        let wanted = match a.net {
            NetChoice::Auto => None,
            NetChoice::Loopback => Some(NetMode::Loopback),
            NetChoice::Netns => Some(NetMode::Namespaces),
        };
        if wanted.is_some_and(|w| w != m.net) {
            return Err(Failure::bad_input(anyhow!(
                "{} holds a network in {} mode; its mode cannot change",
                dir.display(),
                m.net.as_str()
            )));
        }
        if a.node_bin.is_some() || !m.node_binary.is_file() {
            let bin = node_binary(a.node_bin.as_deref()).or_bad_input()?;
            net.set_node_binary(&bin).or_bad_input()?;
        }
        net
    };
    let n = net.node_ids().len();
    let bar = out.spinner(format!("starting {n} nodes"));
    let started = net.start_all();
    bar.finish_and_clear();
    started.or_exit(EXIT_UNAVAILABLE)?;
    let bar = out.spinner("waiting for a leader and for every node to answer");
    let ready = net
        .wait_for_leader(timeout)
        .and_then(|_| net.wait_until(timeout, "every node answers", |n| Ok(n.statuses().iter().all(|s| s.up))));
    bar.finish_and_clear();
    // On failure the handle's drop stops what it started (and removes namespaces it made).
    ready.or_exit(EXIT_UNAVAILABLE)?;
    let (value, text) = network_view(&net, if created { "created" } else { "restarted" }, json!({"created": created}));
    let d = net.dir().display().to_string();
    // Let go of the nodes before printing: nothing that happens to stdout may stop them.
    net.detach();
    out.emit(value, || {
        format!(
            "{text}\n\nnext: veritrace devnet demo --dir {d}\n      veritrace devnet status --dir {d}\n      veritrace \
             devnet logs --dir {d} node-1\n      veritrace devnet down --dir {d} [--purge]"
        )
    });
    Ok(())
}

fn down(dir: &DirArg, purge: bool, out: &Out) -> Result<(), Failure> {
    let net = open(&dir.dir)?;
    let root = net.dir().to_path_buf();
    let n = net.node_ids().len();
    let bar = out.spinner(format!("stopping {n} nodes"));
    let done = if purge { net.destroy() } else { net.down() };
    bar.finish_and_clear();
    done.or_exit(EXIT_UNAVAILABLE)?;
    out.emit(json!({"ok": true, "action": "down", "dir": root, "purged": purge}), || {
        if purge {
            format!("stopped every node and deleted {}", root.display())
        } else {
            format!(
                "stopped every node; data kept in {} (`devnet up --dir {}` starts it again)",
                root.display(),
                root.display()
            )
        }
    });
    Ok(())
}

fn node_action(
    n: &NodeArg,
    action: &str,
    out: &Out,
    act: impl FnOnce(&Network, &str) -> Result<()>,
) -> Result<(), Failure> {
    let net = open(&n.dir.dir)?;
    net.node(&n.node).or_bad_input()?;
    let bar = out.spinner(format!("{action} {}", n.node));
    let done = act(&net, &n.node);
    bar.finish_and_clear();
    done.or_exit(EXIT_UNAVAILABLE)?;
    let status = net.status(&n.node);
    // The node it started (restart) runs on after this command, whatever happens next.
    net.detach();
    let status = status.or_exit(EXIT_UNAVAILABLE)?;
    out.emit(json!({"ok": true, "action": action, "node": n.node, "status": status}), || {
        format!("{action}: done\n{}", table(std::slice::from_ref(&status)))
    });
    Ok(())
}

fn print_cuts(net: &Network, out: &Out, action: &str, cuts: &[Cut]) {
    out.emit(json!({"ok": true, "action": action, "cuts": cuts}), || {
        format!("cuts in force:\n{}", describe_cuts(net, cuts))
    });
}

/// One line per node that cannot send to some others.
fn describe_cuts(net: &Network, cuts: &[Cut]) -> String {
    if cuts.is_empty() {
        return "  none: every node reaches every other".into();
    }
    let mut lines = Vec::new();
    for id in net.node_ids() {
        let to: Vec<&str> = cuts.iter().filter(|c| c.from == id).map(|c| c.to.as_str()).collect();
        if !to.is_empty() {
            lines.push(format!("  {id} cannot send to {}", to.join(", ")));
        }
    }
    lines.join("\n")
}

/// The status of every node, as one JSON object and as a table.
fn network_view(net: &Network, action: &str, extra: Value) -> (Value, String) {
    let statuses = net.statuses();
    let m = net.manifest();
    let leader = net.leader();
    let subnet = m.layout.as_ref().map(|l| format!("{}/{}", netns::subnet_of(l.subnet_index), l.prefix_len));
    let mut value = json!({
        "ok": true,
        "action": action,
        "dir": net.dir(),
        "ledger_id": m.ledger_id,
        "net": m.net.as_str(),
        "subnet": subnet,
        "leader": leader,
        "cuts": m.cuts,
        "nodes": statuses,
    });
    if let (Value::Object(v), Value::Object(e)) = (&mut value, extra) {
        v.extend(e);
    }
    let text = {
        let net_line = match (&m.net, &subnet) {
            (NetMode::Namespaces, Some(s)) => format!("namespaces on {s} (partitions available)"),
            (NetMode::Namespaces, None) => "namespaces (down: none exist now)".to_string(),
            (NetMode::Loopback, _) => "loopback 127.0.0.1 (no partitions)".to_string(),
        };
        format!(
            "network {} ({action}): ledger {}, {net_line}\nleader: {}\n{}\ncuts:\n{}",
            net.dir().display(),
            m.ledger_id,
            leader.as_deref().unwrap_or("none"),
            table(&statuses),
            describe_cuts(net, &m.cuts)
        )
    };
    (value, text)
}

fn short(root: &Option<String>) -> String {
    match root {
        Some(r) => r.chars().take(ROOT_HEX_SHOWN).collect(),
        None => "-".into(),
    }
}

fn table(statuses: &[NodeStatus]) -> String {
    let mut rows = vec![
        [
            "NODE",
            "ORG",
            "ROLE",
            "PROCESS",
            "RAFT",
            "LEADER",
            "HEIGHT",
            "LOG ROOT",
            "STATE ROOT",
            "CHECKPOINT",
            "GRPC",
            "HTTP",
        ]
        .map(String::from),
    ];
    for s in statuses {
        let process = match (s.pid, s.paused, s.up) {
            (None, _, _) => "down".to_string(),
            (Some(p), true, _) => format!("paused {p}"),
            (Some(p), false, true) => format!("up {p}"),
            (Some(p), false, false) => format!("silent {p}"),
        };
        rows.push([
            s.node_id.clone(),
            s.org.clone(),
            s.role.as_str().to_string(),
            process,
            s.raft_role.clone().unwrap_or_else(|| "-".into()),
            s.leader.clone().unwrap_or_else(|| "-".into()),
            if s.up { s.height.to_string() } else { "-".into() },
            short(&s.log_root),
            short(&s.state_root),
            if s.up { s.complete_checkpoint_height.to_string() } else { "-".into() },
            s.grpc.to_string(),
            s.http.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut text: Vec<String> = rows
        .iter()
        .map(|r| r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect::<Vec<_>>().join("  "))
        .map(|l| l.trim_end().to_string())
        .collect();
    for s in statuses {
        if let (Some(e), Some(_)) = (&s.error, s.pid)
            && !s.paused
        {
            text.push(format!("  {}: {e}", s.node_id));
        }
    }
    text.join("\n")
}

fn logs(n: &NodeArg, lines: usize, follow: bool, out: &Out) -> Result<(), Failure> {
    if follow && out.json {
        return Err(Failure::bad_input(anyhow!("--follow prints the log as it grows; it has no --json form")));
    }
    let net = open(&n.dir.dir)?;
    let path = net.logs_path(&n.node).or_bad_input()?;
    let mut f = std::fs::File::open(&path)
        .with_context(|| format!("open {} (has {} ever started?)", path.display(), n.node))
        .or_exit(EXIT_BAD_INPUT)?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = if lines == 0 { 0 } else { len.saturating_sub(LOG_TAIL_BYTES_MAX) };
    let mut text = String::new();
    f.seek(SeekFrom::Start(from))
        .and_then(|_| f.read_to_string(&mut text))
        .with_context(|| format!("read {}", path.display()))
        .or_bad_input()?;
    let all: Vec<&str> = text.lines().collect();
    let shown = if lines == 0 { &all[..] } else { &all[all.len().saturating_sub(lines)..] };
    out.emit(json!({"ok": true, "node": n.node, "path": path, "lines": shown}), || shown.join("\n"));
    if !follow {
        return Ok(());
    }
    let mut at = len;
    loop {
        std::thread::sleep(FOLLOW_INTERVAL);
        let now = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(at);
        if now < at {
            at = 0; // Replaced: start again.
        }
        if now > at {
            let mut more = Vec::new();
            f.seek(SeekFrom::Start(at))
                .and_then(|_| f.read_to_end(&mut more))
                .with_context(|| format!("read {}", path.display()))
                .or_bad_input()?;
            at += more.len() as u64;
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(&more);
            let _ = stdout.flush();
        }
    }
}

fn play_demo(dir: &Path, via: Option<&str>, timeout: u64, out: &Out) -> Result<(), Failure> {
    let net = open(dir)?;
    let target = DemoTarget::of(&net, via, Duration::from_secs(timeout)).or_exit(EXIT_UNAVAILABLE)?;
    if !out.json {
        let _ = writeln!(
            std::io::stdout(),
            "demo on {} through {} (gRPC {}), signing each record with its organisation's key",
            net.dir().display(),
            target.via,
            target.grpc
        );
    }
    let bar = if out.json {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(demo::STEP_COUNT);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} records ({elapsed})") {
            bar.set_style(style);
        }
        bar
    };
    let json = out.json;
    let mut chain = 0;
    let mut on_step = |s: &Step| {
        bar.inc(1);
        if json {
            return;
        }
        let mut text = String::new();
        if s.chain != chain {
            chain = s.chain;
            text = format!("\n{chain}. {}\n", demo::chain_title(chain));
        }
        text.push_str(&step_line(s));
        // Above the bar on a terminal; plain lines otherwise (the bar is hidden then).
        if bar.is_hidden() {
            // A closed pipe (`| head`) must not stop the demo half-way.
            let _ = writeln!(std::io::stdout(), "{text}");
        } else {
            bar.println(text);
        }
    };
    let played = demo::run(&target, &mut on_step);
    bar.finish_and_clear();
    let report = played.or_exit(EXIT_REFUSED)?;
    let failures = report.failures();
    let mut value = serde_json::to_value(&report).unwrap_or(Value::Null);
    if let Value::Object(v) = &mut value {
        v.insert("ok".into(), Value::Bool(failures.is_empty()));
    }
    let genesis = net.genesis_path();
    out.emit(value, || render_codes(&report, &genesis));
    if !failures.is_empty() {
        return Err(Failure::verify_failed(anyhow!("{}", failures.join("\n"))));
    }
    Ok(())
}

fn step_line(s: &Step) -> String {
    let outcome = if s.accepted {
        format!("accepted  height {:<4} log index {}", s.height, s.log_index.unwrap_or(0))
    } else {
        format!("REFUSED   {}: {}", s.reject_reason.as_deref().unwrap_or("?"), s.message)
    };
    format!("   {:<16} {:<18} {outcome}\n   {:<16} {}", s.author, s.kind, "", s.what)
}

fn render_codes(r: &DemoReport, genesis: &Path) -> String {
    let mut t = format!("\ncodes (bundles cut at the latest complete checkpoint, height {}):", r.checkpoint_height);
    for c in &r.codes {
        t.push_str(&format!("\n\n  {}\n    code    {}", c.label, c.code));
        let page = match c.page_status {
            Some(200) => "served".to_string(),
            Some(s) => format!("not served: HTTP {s}"),
            None => "the node's HTTP did not answer".to_string(),
        };
        t.push_str(&format!("\n    page    {}  ({page})", c.page_url));
        match &c.trace {
            Served::Ok(v) => {
                // An item that only moved with its lot has no custodian of its own.
                let custodian = v.subjects.iter().map(|s| s.custodian.as_str()).find(|c| !c.is_empty());
                let cleared = v.subjects.iter().any(|s| s.customs_cleared);
                t.push_str(&format!(
                    "\n    trace   {}{}{}; {} record(s):",
                    v.effective_status,
                    custodian.map(|c| format!(", custodian {c}")).unwrap_or_default(),
                    if cleared { ", customs cleared" } else { "" },
                    v.records.len()
                ));
                for e in &v.records {
                    t.push_str(&format!(
                        "\n              #{:<5} height {:<4} {:<18} by {}",
                        e.log_index, e.height, e.kind, e.author
                    ));
                }
            }
            Served::NotServed { reason } => {
                t.push_str(&format!("\n    trace   not served by this node yet ({reason})"))
            }
            Served::Failed { error } => t.push_str(&format!("\n    trace   FAILED: {error}")),
        }
        match &c.bundle {
            Served::Ok(b) => t.push_str(&format!(
                "\n    bundle  verified offline against the genesis validators: {} records, checkpoint at height {} \
                 signed by {} of {} validators ({}); {} bytes",
                b.verdict.records,
                b.verdict.height,
                b.verdict.signers.len(),
                b.verdict.validators,
                b.verdict.signers.join(", "),
                b.bytes
            )),
            Served::NotServed { reason } => {
                t.push_str(&format!("\n    bundle  not served by this node yet ({reason})"))
            }
            Served::Failed { error } => t.push_str(&format!("\n    bundle  DOES NOT VERIFY: {error}")),
        }
    }
    if let Some(c) = r.codes.first() {
        t.push_str(&format!(
            "\n\ncheck one yourself:\n  veritrace trace --node {grpc} {code}\n  veritrace bundle --node {grpc} {code} \
             --out bundle.json\n  veritrace verify bundle.json --genesis {genesis}",
            grpc = r.grpc,
            code = c.code,
            genesis = genesis.display()
        ));
    }
    t
}
