//! The `gatehouse` binary: command line, wiring of store, proxy, admin and status listeners,
//! signals and graceful shutdown.

mod cli;
mod serve;

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
        cli::Command::Validate { file } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            match gatehouse_model::parse_document(&text, &gatehouse_plugins::registry()) {
                Ok(cfg) => {
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
                        let at = match (fe.line, fe.column) {
                            (Some(l), Some(c)) => format!("{}:{l}:{c}", file.display()),
                            _ => file.display().to_string(),
                        };
                        let path = if fe.path.is_empty() {
                            "(root)"
                        } else {
                            &fe.path
                        };
                        eprintln!("{at}: {}: {path}: {}", fe.entity, fe.message);
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
        cli::Command::Schema => {
            println!(
                "{:#}",
                gatehouse_model::schema::json_schema_with(&gatehouse_plugins::registry())
            );
            ExitCode::SUCCESS
        }
    }
}
