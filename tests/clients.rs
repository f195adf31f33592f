//! A client generated from docs/openapi.yaml works: openapi-python-client
//! generates a Python client from the document (failing on any warning,
//! such as a schema it cannot type), and `tests/clients/tour.py` runs the
//! README tour through it against a live three-node cluster, one node of
//! which is down: writes and reads with their contexts, concurrent writes
//! and their 300, a resolve, a quorum that cannot be met, conditions,
//! idempotent retries, JSON null, a batch, a scan, CRDTs and the change
//! feed. The client raises on a status the document does not declare.
//!
//! The generator is installed from PyPI into a virtualenv under `$TMPDIR`
//! by `.ci/run` (a test sends nothing beyond loopback, so it never
//! installs anything itself); without it, and without
//! `CHORUS_REQUIRE_CLIENTS=1`, the test says so and passes, as the
//! real-Prometheus test does without Prometheus.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cluster::TestCluster;
use tokio::process::Command;

/// The pinned generator: a newer one may generate other names.
const GENERATOR: &str = "openapi-python-client==0.29.1";

/// The virtualenv holding the generator, as `.ci/run` makes it.
fn generator_env() -> Option<PathBuf> {
    let tmp = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let venv = tmp.join("chorus-openapi-client");
    if venv.join("bin/openapi-python-client").exists() {
        return Some(venv);
    }
    let install = format!(
        "python3 -m venv {0} && {0}/bin/pip install {GENERATOR} (as .ci/run does)",
        venv.display()
    );
    assert!(
        std::env::var_os("CHORUS_REQUIRE_CLIENTS").is_none(),
        "CHORUS_REQUIRE_CLIENTS is set but the generator is not installed: {install}"
    );
    eprintln!("\n*** SKIPPED: no openapi-python-client; install it with {install} ***\n");
    None
}

/// Runs `command` to its end within `secs` seconds, failing the test
/// (with what it printed) unless it succeeds; its standard output.
async fn run(command: &mut Command, secs: u64, what: &str) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(secs),
        command.kill_on_drop(true).output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
    .unwrap_or_else(|e| panic!("{what} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Generates the client package `chorus_client` under `dir`.
async fn generate(venv: &Path, dir: &Path) {
    let config = dir.join("generator.yaml");
    // No formatter runs over the generated code (ruff is not installed).
    std::fs::write(&config, "post_hooks: []\n").expect("write the config");
    let mut generator = Command::new(venv.join("bin/openapi-python-client"));
    generator
        .args(["generate", "--path", "docs/openapi.yaml", "--meta", "none"])
        .arg("--output-path")
        .arg(dir.join("chorus_client"))
        .arg("--config")
        .arg(&config)
        .arg("--fail-on-warning");
    run(
        &mut generator,
        120,
        "openapi-python-client on docs/openapi.yaml",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_client_generated_from_the_document_runs_the_tour() {
    let Some(venv) = generator_env() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    generate(&venv, dir.path()).await;

    let mut cluster = TestCluster::start(3, 0, 3).await;
    // Request digests (a reused Idempotency-Key's 422) need every member
    // heard speaking their protocol; then n3 goes down, so that w=all
    // cannot be met.
    cluster.await_protocols_heard(Duration::from_secs(10)).await;
    cluster.stop(2).await;
    let url = cluster.node(0).url();
    let mut tour = Command::new(venv.join("bin/python"));
    tour.arg("tests/clients/tour.py")
        .arg(&url)
        .arg(cluster.node(1).url())
        .arg("n3")
        .env("PYTHONPATH", dir.path());
    let stdout = run(&mut tour, 180, "the tour").await;
    let checks: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("checks: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the tour says how many checks passed");
    assert!(checks >= 60, "the tour checked too little: {checks}");
    eprintln!("the generated client's tour: {checks} checks");
}
