//! The `gatehouse` binary: command line, wiring of store, proxy, admin and status listeners,
//! signals and graceful shutdown.

mod calls;
mod cli;
mod config_cmd;
mod listen;
mod serve;
mod stores;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: measurably faster than the system allocator for the proxy's many small,
/// short-lived allocations (see bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => match serve::run(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gatehouse: {e:#}");
                ExitCode::FAILURE
            }
        },
        cli::Command::Validate { file } => validate(&file),
        cli::Command::Migrate { store, data_dir } => {
            match stores::migrate(store.as_deref(), &data_dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gatehouse: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        cli::Command::Keyring { action } => match keyring(action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gatehouse: {e:#}");
                ExitCode::FAILURE
            }
        },
        cli::Command::Config { action } => match config(action) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("gatehouse: {e:#}");
                ExitCode::FAILURE
            }
        },
        cli::Command::Schema => print_out(&format!(
            "{:#}",
            gatehouse_model::schema::json_schema_with(&gatehouse_plugins::registry())
        )),
    }
}

/// `gatehouse validate FILE`: every error (and every note) with its line and column.
fn validate(file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let at = |fe: &gatehouse_model::FieldError| match (fe.line, fe.column) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}", file.display()),
        _ => file.display().to_string(),
    };
    match gatehouse_model::parse_document_noted(&text, &gatehouse_plugins::registry(), None) {
        Ok(parsed) => {
            for n in &parsed.notes {
                eprintln!("{}: note: {}: {}: {}", at(n), n.entity, n.path, n.message);
            }
            let cfg = parsed.config;
            println!(
                "{}: ok ({} services, {} routes, {} upstreams, {} consumers, {} plugins, {} certificates)",
                file.display(),
                cfg.services.len(),
                cfg.routes.len(),
                cfg.upstreams.len(),
                cfg.consumers.len(),
                cfg.plugins.len(),
                cfg.certificates.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for fe in &e.errors {
                let path = if fe.path.is_empty() {
                    "(root)"
                } else {
                    &fe.path
                };
                eprintln!("{}: {}: {path}: {}", at(fe), fe.entity, fe.message);
            }
            eprintln!(
                "{}: {} error{}",
                file.display(),
                e.errors.len(),
                if e.errors.len() == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

/// Writes a command's output to stdout. A reader that closed the pipe (`gatehouse schema |
/// head`) wanted no more: that ends the command quietly instead of panicking as `println!`
/// does.
fn print_out(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse: writing to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `gatehouse config dump|diff|sync`.
fn config(action: cli::ConfigAction) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let remote = |r: &cli::RemoteArgs| -> anyhow::Result<config_cmd::Remote> {
        let token = match &r.admin_token_file {
            Some(f) => Some(serve::read_token_file(f)?),
            None => r.admin_token.clone(),
        };
        config_cmd::Remote::new(&r.admin_url, token)
    };
    let read = |f: &std::path::Path| {
        std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let mut out = std::io::stdout().lock();
    match action {
        cli::ConfigAction::Dump {
            remote: r,
            json,
            output,
        } => {
            let text = rt.block_on(config_cmd::dump(&remote(&r)?, json))?;
            match output {
                Some(f) => {
                    std::fs::write(&f, text).with_context(|| format!("writing {}", f.display()))?
                }
                None => return Ok(print_out(text.trim_end())),
            }
            Ok(ExitCode::SUCCESS)
        }
        cli::ConfigAction::Diff {
            file,
            remote: r,
            non_zero_exit_code,
        } => {
            let changes = rt.block_on(config_cmd::diff(&remote(&r)?, &read(&file)?))?;
            config_cmd::print(&changes, &mut out)?;
            Ok(if non_zero_exit_code && !changes.is_empty() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        cli::ConfigAction::Sync { file, remote: r } => {
            rt.block_on(config_cmd::sync(&remote(&r)?, &read(&file)?, &mut out))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `gatehouse keyring rotate|prune`: works on the data dir's keyring file and database.
fn keyring(action: cli::KeyringAction) -> anyhow::Result<()> {
    use anyhow::Context;
    use gatehouse_store::keyring::{prune_file, rotate_file, Keyring, ENV};
    anyhow::ensure!(
        std::env::var_os(ENV).is_none(),
        "{ENV} is set: the keyring comes from the environment; rotate by putting a new key first there and restarting (see docs/security.md)"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    rt.block_on(async move {
        let (data_dir, rotate) = match &action {
            cli::KeyringAction::Rotate { data_dir } => (data_dir, true),
            cli::KeyringAction::Prune { data_dir } => (data_dir, false),
        };
        let db = data_dir.join("gatehouse.db");
        anyhow::ensure!(db.exists(), "no database at {}", db.display());
        if rotate {
            let id = rotate_file(data_dir).context("rotating the keyring")?;
            let ring = std::sync::Arc::new(Keyring::load(data_dir)?);
            // Opening the store seals every secret again with the new first key.
            gatehouse_store::sqlite::SqliteStore::open(&db, ring)
                .await
                .with_context(|| format!("opening {}", db.display()))?;
            println!(
                "new keyring key {id}; every secret in {} is sealed with it",
                db.display()
            );
        } else {
            let ring = std::sync::Arc::new(Keyring::load(data_dir)?);
            let store = gatehouse_store::sqlite::SqliteStore::open(&db, ring)
                .await
                .with_context(|| format!("opening {}", db.display()))?;
            let used = store.sealed_key_ids().await?;
            let dropped = prune_file(data_dir, &used)?;
            println!(
                "dropped {} unused key(s): {}",
                dropped.len(),
                dropped.join(", ")
            );
        }
        Ok(())
    })
}
