//! `tailwarden`: the server (`serve`) and the management CLI, which reaches a running server over its unix socket
//! or, with `cli.address` and an API key, over HTTP(S).

mod acme;
mod cli;
mod derpmap;
mod live;
mod oidc_http;
mod serve;
mod tls;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tailwarden_config::Config;

/// The system allocator by default; mimalloc with `--features mimalloc`. Once HTTP/2 stopped holding buffers per
/// connection, glibc's malloc cost the same CPU per join and ~7% more per change, and kept 12–15 KiB of resident
/// memory per connected node where mimalloc kept 22–49 KiB: the transient buffers of joins and first maps leave
/// mimalloc's pages fragmented (`docs/benchmarks.md`, "Our own HTTP/2"). Heap profilers such as heaptrack only see
/// the system allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tailwarden", version, about = "Self-hosted Tailscale-compatible coordination server")]
struct Cli {
    /// Headscale-style config.yaml; without it, built-in loopback defaults (plus environment overrides) apply.
    #[arg(short, long, global = true, env = "TAILWARDEN_CONFIG")]
    config: Option<PathBuf>,
    /// Output format for listings: json, json-line or yaml (default: a table).
    #[arg(short, long, global = true, default_value = "")]
    output: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control server with its embedded DERP relay and STUN server.
    Serve,
    /// Check the configuration file and exit.
    Configtest,
    /// Manage users.
    #[command(subcommand, alias = "user")]
    Users(cli::UsersCommand),
    /// Manage pre-auth keys.
    #[command(subcommand, alias = "preauthkey")]
    Preauthkeys(cli::PreauthkeysCommand),
    /// Manage nodes.
    #[command(subcommand, alias = "node")]
    Nodes(cli::NodesCommand),
    /// Manage API keys for the remote CLI and the REST API.
    #[command(subcommand, alias = "apikey", alias = "api")]
    Apikeys(cli::ApikeysCommand),
    /// Check the health of the running server (its database connectivity).
    Health,
    /// Inspect how the policy applies to nodes.
    #[command(subcommand)]
    Debug(cli::DebugCommand),
    /// Show, replace or check the tailnet policy.
    #[command(subcommand)]
    Policy(cli::PolicyCommand),
    /// Print the version.
    Version,
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    let (config, warnings) = match path {
        Some(p) => Config::load(p).with_context(|| format!("loading {}", p.display()))?,
        None => Config::from_env().context("loading built-in defaults")?,
    };
    for w in warnings {
        eprintln!("config warning: {w}");
    }
    Ok(config)
}

fn main() {
    let cli = Cli::parse();
    let result =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting runtime").and_then(|rt| {
            rt.block_on(async {
                match cli.command {
                    Command::Serve => serve::run(load_config(cli.config.as_ref())?).await,
                    Command::Configtest => {
                        load_config(cli.config.as_ref())?;
                        println!("configuration OK");
                        Ok(())
                    }
                    Command::Users(c) => cli::users(&load_config(cli.config.as_ref())?, &cli.output, c).await,
                    Command::Preauthkeys(c) => {
                        cli::preauthkeys(&load_config(cli.config.as_ref())?, &cli.output, c).await
                    }
                    Command::Nodes(c) => cli::nodes(&load_config(cli.config.as_ref())?, &cli.output, c).await,
                    Command::Apikeys(c) => cli::apikeys(&load_config(cli.config.as_ref())?, &cli.output, c).await,
                    Command::Health => cli::health(&load_config(cli.config.as_ref())?, &cli.output).await,
                    Command::Debug(c) => cli::debug(&load_config(cli.config.as_ref())?, &cli.output, c).await,
                    Command::Policy(c) => cli::policy(&load_config(cli.config.as_ref())?, &cli.output, c).await,
                    Command::Version => cli::version(&cli.output),
                }
            })
        });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
