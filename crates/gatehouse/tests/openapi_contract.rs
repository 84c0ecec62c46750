//! The admin API's OpenAPI document tells the truth: schemathesis (installed by
//! scripts/test.sh) runs every check in every phase — examples, coverage, fuzzing and the
//! stateful phase that chains creates, reads, edits and deletes — against the real binary,
//! and must find nothing. Settings in scripts/schemathesis.toml say why they differ from
//! schemathesis' defaults.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn repo_file(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
        .display()
        .to_string()
}

/// Runs schemathesis with `phases` against a fresh node; its report when it found something.
fn schemathesis(phases: &str, extra: &[&str]) -> Result<(), String> {
    let gw = Gateway::start(&bin(), &[]);
    let python = test_python();
    let exe = python.with_file_name("schemathesis");
    let url = format!("http://{}/openapi.json", gw.admin);
    let auth = format!("Authorization: Bearer {}", gw.token);
    // Fixed seed: a failure here is reproducible with the same command; set
    // GATEHOUSE_SCHEMATHESIS_SEED to explore other cases.
    let seed =
        std::env::var("GATEHOUSE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261202".to_string());
    let out = Command::new(&exe)
        .args([
            "--config-file",
            &repo_file("scripts/schemathesis.toml"),
            "run",
            &url,
        ])
        .args([
            "-H", &auth, "--checks", "all", "--phases", phases, "--seed", &seed,
        ])
        .args(["--no-color"])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() && !text.contains("Traceback") {
        Ok(())
    } else {
        Err(text)
    }
}

#[test]
fn schemathesis_finds_nothing_stateless() {
    // A time budget, not a case count: the coverage phase alone would enumerate for a
    // quarter of an hour over this document's constraints. GATEHOUSE_SCHEMATHESIS_TIME
    // raises it for a deeper run.
    let budget = std::env::var("GATEHOUSE_SCHEMATHESIS_TIME").unwrap_or_else(|_| "150".into());
    if let Err(report) = schemathesis(
        "examples,coverage,fuzzing",
        &["--max-examples", "25", "--max-time", &budget],
    ) {
        panic!("schemathesis found mismatches:\n{report}");
    }
}

#[test]
fn schemathesis_finds_nothing_stateful() {
    let budget = std::env::var("GATEHOUSE_SCHEMATHESIS_TIME").unwrap_or_else(|_| "60".into());
    // See scripts/schemathesis.toml: credentials have two addresses (Kong's), which this
    // one check cannot tell apart from a lost resource.
    // Positive data: the stateful phase chains calls that must succeed; invalid data is the
    // stateless run's job.
    let args = [
        "--max-examples",
        "40",
        "--max-time",
        &budget,
        "--mode",
        "positive",
        "--exclude-checks",
        "ensure_resource_availability",
    ];
    if let Err(report) = schemathesis("stateful", &args) {
        panic!("schemathesis found mismatches in the stateful phase:\n{report}");
    }
}
