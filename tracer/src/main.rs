//! The `oomtrace` command: `run` the agent, or read its history back (`history`, `show`,
//! `stats`). Everything else is in the library.

use std::process::ExitCode;

use clap::Parser as _;
use env_logger::fmt::style::{AnsiColor, Style};
use oomtrace::cli::{Cli, Command};
use oomtrace::{agent, escape, report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        // Names in messages come from containers and users: one escaping rule for every line.
        .format(|buf, record| {
            let level_style = buf.default_level_style(record.level());
            let dim = if buf.default_level_style(log::Level::Info) == Style::new() {
                Style::new()
            } else {
                AnsiColor::BrightBlack.on_default()
            };
            let time = buf.timestamp();
            escape::log_line(
                buf,
                time,
                record.level(),
                record.target(),
                record.args(),
                (level_style, dim),
            )
        })
        .init();
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
        // The reader went away (`oomtrace history | head`): what it wanted, it has.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, the whole cause chain, no backtrace.
            eprintln!("oomtrace: error: {}", escape::escape(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|err| err.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(|err| err.io_error_kind())
                == Some(std::io::ErrorKind::BrokenPipe)
    })
}
