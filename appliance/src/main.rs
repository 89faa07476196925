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

fn init_logging(verbose: u8, quiet: bool) {
    logging::init(match verbose {
        0 if quiet => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    });
}
