//! berth: the command line. `berth daemon` runs the engine; every other command is a client
//! of a berth (or Docker) daemon, with docker's commands and flags.
//!
//! Each subcommand is one variant of [`Command`] whose arguments and code live in a module of
//! their own; adding one is a variant here and a line in `main`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod containers;
mod cp;
mod daemon;
mod events;
mod exec;
mod format;
mod http;
mod images;
mod ops;
mod registry;
mod runopts;
mod session;
mod stream;
mod system;
mod userns;
mod volumes;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A container engine that puts user namespaces first"
)]
struct Cli {
    /// Daemon socket to connect to (unix:///PATH).
    #[arg(
        short = 'H',
        long = "host",
        env = "BERTH_HOST",
        default_value = "unix:///run/berth.sock",
        global = false
    )]
    host: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// User namespace settings: who container root is on the host
    #[command(subcommand)]
    Userns(userns::Command),

    /// Run the berth daemon: the Docker Engine API over the engine
    Daemon(Box<daemon::DaemonArgs>),

    /// One container's monitor, exec'd by the daemon (internal)
    #[command(hide = true)]
    Monitor(daemon::MonitorArgs),

    /// The client commands (run, ps, images, ...), flattened to the top level as in docker.
    #[command(flatten)]
    Client(Box<commands::ClientCommand>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Userns(cmd) => {
            init_logging("warn");
            userns::run(cmd)
        }
        Command::Daemon(args) => daemon::run(*args),
        Command::Monitor(args) => return daemon::monitor(args),
        Command::Client(cmd) => {
            init_logging("warn");
            commands::run(&cli.host, *cmd)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `level` unless RUST_LOG says otherwise. Commands call it themselves so
/// that `daemon` can pass its own `--log-level`.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
