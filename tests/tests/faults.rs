//! The fault suite (issue 8): 3- and 5-validator networks in namespaces mode under
//! concurrent clients while a seeded nemesis kills, pauses, partitions, restarts and wipes
//! nodes and changes the validator set; then the checker holds every node's ledger against
//! the clients' history. docs/faults.md describes it.
//!
//! `VERITRACE_FAULTS=long` runs the long profile; `VERITRACE_FAULTS_SEED=N` replays a
//! seed. Needs root for the namespaces unless `VERITRACE_DEVNET_SKIP_NETNS=1` is set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use veritrace_devnet::netns;
use veritrace_tests::faults::{
    NemesisLog, Profile, check, checkpoint_sampler, client_loop, fault_network, profiles, run_nemesis, schedule, seed,
};

async fn run(profile: &Profile, seed: u64) {
    let faults = schedule(seed, profile);
    println!(
        "faults [{}]: seed {seed}: schedule {:?}",
        profile.name,
        faults.iter().map(|f| f.kind).collect::<Vec<_>>()
    );
    let started = Instant::now();
    let net = Arc::new(tokio::task::block_in_place(|| fault_network(profile)));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> =
        (0..profile.clients).map(|id| tokio::spawn(client_loop(net.clone(), id, seed, stop.clone()))).collect();
    let sampler = tokio::spawn(checkpoint_sampler(net.clone(), seed, stop.clone()));
    // Load alone for a moment, so that there is something to lose.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = Arc::new(Mutex::new(NemesisLog::default()));
    let nemesis = {
        let (net, log, rt) = (net.clone(), log.clone(), tokio::runtime::Handle::current());
        tokio::task::spawn_blocking(move || run_nemesis(rt, &net, &faults, &log))
    };
    nemesis.await.expect("nemesis thread");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut history = Vec::new();
    for c in clients {
        history.extend(c.await.expect("client task"));
    }
    let checkpoints = sampler.await.expect("sampler task");
    let load_s = started.elapsed().as_secs_f64();
    let mut log = std::mem::take(&mut *log.lock().expect("nemesis log"));
    history.append(&mut log.probes);
    let (summary, violations) = check(&net, &history, checkpoints, &log).await;
    println!(
        "faults [{}]: {} (load {load_s:.0} s, total {:.0} s)",
        profile.name,
        summary.line(seed),
        started.elapsed().as_secs_f64()
    );
    if !violations.is_empty() || !summary.clean() {
        let mut net = Arc::try_unwrap(net).ok().expect("the only handle");
        net.keep();
        for v in violations.iter().take(50) {
            eprintln!("violation: {v}");
        }
        panic!(
            "seed {seed} [{}]: {} violations; replay with VERITRACE_FAULTS_SEED={seed}; network kept at {}",
            profile.name,
            violations.len(),
            net.dir().display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_records_survive_a_seeded_nemesis() {
    if !netns::available_for_test("the fault suite") {
        return;
    }
    let seed = seed();
    println!("faults: seed {seed} (replay with VERITRACE_FAULTS_SEED={seed})");
    // One network at a time: two at once would starve each other on a small machine.
    for p in profiles() {
        run(&p, seed).await;
    }
}
