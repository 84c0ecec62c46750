//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[allow(unused_imports)]
pub use gatehouse_testkit::{closed_port, get, request, Gateway, Upstream};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gatehouse"))
}

/// Writes a declarative config and starts the gateway on it.
pub fn start_with_config(dir: &Path, yaml: &str, extra: &[&str]) -> Gateway {
    let file = dir.join("gatehouse.yaml");
    std::fs::write(&file, yaml).expect("write config");
    let f = file.display().to_string();
    let mut args = vec!["--config", f.as_str()];
    args.extend_from_slice(extra);
    Gateway::start_in(&bin(), dir, &args)
}

/// Runs curl with arguments; returns (exit ok, stdout, stderr).
pub fn curl(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The Python of the test virtualenv that scripts/test.sh makes (grpcio, schemathesis).
pub fn test_python() -> PathBuf {
    let p = std::env::var_os("GATEHOUSE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/gatehouse-venv/bin/python")
        });
    assert!(
        p.exists(),
        "{} not found: run ./scripts/test.sh, which makes the test virtualenv",
        p.display()
    );
    p
}

/// The directory where scripts/test.sh installed the JavaScript clients (`node_modules`).
pub fn test_node_dir() -> PathBuf {
    let p = std::env::var_os("GATEHOUSE_TEST_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/gatehouse-node")
        });
    assert!(
        p.join("node_modules").exists(),
        "{}/node_modules not found: run ./scripts/test.sh, which installs the JS clients",
        p.display()
    );
    p
}

/// Runs a Python script with the test virtualenv's interpreter and reads the JSON its last
/// line of output prints.
pub fn python(script: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(test_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
