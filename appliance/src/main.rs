//! `vigil`: the edge video analytics appliance.

mod access_cmd;
mod analyse;
mod bench;
mod cli;
mod commands;
mod demo;
mod logging;
mod model_cmd;
mod mqtt;
mod pipeline;
mod poll;
mod reload;
mod service;
mod shutdown;
mod snapshot;

use std::process::ExitCode;

use clap::Parser;
use vigil::config;

use crate::cli::{Cli, Command};
use crate::config::ConfigError;

/// Exit status for a configuration the appliance refuses.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The bench prints a table; only warnings and errors interrupt it.
    let quiet = matches!(cli.command, Command::Bench(_));
    if prints_only(&cli.command) {
        end_quietly_on_closed_stdout();
    }
    init_logging(cli.verbose, quiet);
    vigil_inference::memory::reuse_large_buffers();
    let result = match cli.command {
        Command::Run { config } => commands::run(&config),
        Command::Demo(args) => demo::run(args),
        Command::CheckConfig { config } => commands::check_config(&config),
        Command::Detect(args) => commands::detect(args),
        Command::ImportTfjs(args) => commands::import_tfjs(args),
        Command::Model(cmd) => model_cmd::run(cmd),
        Command::User(cmd) => access_cmd::user(cmd),
        Command::Token(cmd) => access_cmd::token(cmd),
        Command::Poll(args) => poll::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Openapi => {
            println!("{}", vigil_web_ui::openapi_json());
            Ok(())
        }
        Command::Version => {
            commands::version();
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(cfg) = e.downcast_ref::<ConfigError>() {
                eprintln!("error: invalid configuration: {cfg}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Commands that print and touch no socket or camera.
fn prints_only(command: &Command) -> bool {
    matches!(
        command,
        Command::Openapi
            | Command::Version
            | Command::Detect(_)
            | Command::CheckConfig { .. }
            | Command::ImportTfjs(_)
            | Command::User(_)
            | Command::Token(_)
    )
}

/// `vigil openapi | head` ends as other Unix tools do, by SIGPIPE, instead
/// of panicking on a failed print. Only for printing commands: the service
/// keeps Rust's ignored SIGPIPE, under which a closed socket is an error
/// to handle, not the end of the process.
fn end_quietly_on_closed_stdout() {
    // SAFETY: restoring a signal's default action before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    logging::init(match verbose {
        0 if quiet => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    });
}
