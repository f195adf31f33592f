//! `chorus sim`: the simulations, run in this process or, for a campaign
//! of cluster seeds, each seed in a process of its own.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Sim {
    /// Chord routing of many nodes: hops, convergence, churn, load.
    Ring(chorus::sim::ring::Options),
    /// Anti-entropy: rounds and bytes to converge replicas that drifted.
    Antientropy(chorus::sim::antientropy::Options),
    /// Whole 5-node clusters under a nemesis, every run checked for lost
    /// writes, convergence, sessions and siblings (deterministic by seed).
    Cluster(SimCluster),
}

#[derive(clap::Args)]
pub struct SimCluster {
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How many seeds, from --seed on.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Print every run's summary, not only the failing ones, and the
    /// nodes' logs (RUST_LOG chooses them too).
    #[arg(long)]
    pub verbose: bool,
    /// Anti-entropy rounds after the heal before the check (the
    /// convergence bound; default 40 in state mode, 100 in operation mode).
    #[arg(long)]
    pub settle_rounds: Option<u32>,
    /// Print each run as one JSON object a line (seed, counts, faults by
    /// class, what each checker examined, violations) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Seeds run at once in a campaign (each in a process of its own).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
}

impl Sim {
    /// Whether the run's logs are asked for (`sim cluster --verbose`).
    pub fn verbose(&self) -> bool {
        matches!(self, Sim::Cluster(args) if args.verbose)
    }
}

/// Runs one `chorus sim` command.
pub async fn run(sim: Sim) -> chorus::error::Result<ExitCode> {
    match sim {
        Sim::Ring(options) => {
            let report = tokio::task::spawn_blocking(move || {
                let report = chorus::sim::ring::run(&options);
                (report, options.json)
            })
            .await
            .map_err(|e| chorus::error::Error::Protocol(format!("the simulation died: {e}")))?;
            match report {
                (report, true) => println!("{}", serde_json::json!(report)),
                (report, false) => print!("{}", report.table()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Sim::Antientropy(options) => {
            let report = chorus::sim::antientropy::run(&options).await?;
            if options.json {
                println!("{}", serde_json::json!(report));
            } else {
                print!("{}", report.table());
            }
            Ok(ExitCode::SUCCESS)
        }
        Sim::Cluster(args) => cluster(args).await,
    }
}

/// `chorus sim cluster`: one seed in this process (deterministic, see
/// `sim::cluster`), or a campaign of seeds, each in a process of its own so
/// that it runs exactly as its replay will. Fails if any run broke a
/// promise or proved too little.
pub async fn cluster(args: SimCluster) -> chorus::error::Result<ExitCode> {
    if args.seeds == 1 {
        let mut options = chorus::sim::cluster::Options::new(args.seed);
        options.settle_rounds = args.settle_rounds;
        let report = std::thread::spawn(move || chorus::sim::cluster::run(&options))
            .join()
            .map_err(|_| chorus::error::Error::Protocol("the simulation panicked".into()))??;
        if args.json {
            println!("{}", report.json());
        } else {
            print!("{}", report.summary_with(args.verbose));
        }
        return Ok(if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let me = std::env::current_exe()?;
    let seeds: Vec<u64> = (args.seed..args.seed.saturating_add(args.seeds)).collect();
    let runs = futures_util::stream::iter(seeds.into_iter().map(|seed| {
        let mut command = tokio::process::Command::new(&me);
        command.args(["sim", "cluster", "--seed", &seed.to_string()]);
        if let Some(rounds) = args.settle_rounds {
            command.args(["--settle-rounds", &rounds.to_string()]);
        }
        if args.json {
            command.arg("--json");
        }
        if std::env::var_os("RUST_LOG").is_none() {
            // A run's info lines are many and not read unless it fails.
            command.env("RUST_LOG", "warn");
        }
        async move { (seed, command.output().await) }
    }));
    let mut runs = futures_util::StreamExt::buffer_unordered(runs, args.jobs.max(1));
    let mut failed = Vec::new();
    while let Some((seed, out)) = futures_util::StreamExt::next(&mut runs).await {
        let out = out?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            failed.push(seed);
            if !args.json {
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
            }
        }
        if args.json || args.verbose || !out.status.success() {
            print!("{text}");
        }
    }
    failed.sort_unstable();
    eprintln!(
        "{} seeds from {}: {} broke a promise or proved too little {:?}",
        args.seeds,
        args.seed,
        failed.len(),
        failed
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
