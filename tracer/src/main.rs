//! oomtrace: an eBPF tracer that explains OOM kills.
//!
//! The pipeline reads top to bottom: [`capture`] loads the programs and reads their records,
//! [`decode`] turns bytes into typed parts, [`incident`] joins the parts of one kill,
//! [`attribute`] names the containers, pods and services involved, and [`sink`] writes the
//! result, after [`history`] stored it; [`agent`] runs it. [`report`] reads the history back.

mod agent;
mod attribute;
mod badness;
mod capture;
mod cli;
mod clock;
mod decode;
mod explain;
mod history;
mod incident;
mod kmsg;
mod metrics;
mod names;
mod observe;
mod protect;
mod report;
mod sink;
mod stages;
mod units;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(agent::run(args))),
        Command::History(args) => report::history(args),
        Command::Show(args) => report::show(args),
        Command::Stats(args) => report::stats(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, the whole cause chain, no backtrace.
            eprintln!("oomtrace: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
