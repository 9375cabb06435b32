//! The `oomtrace` command: `run` the agent, `check` a host before, or read the agent's history
//! back (`history`, `show`, `stats`). Everything else is in the library.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use oomtrace::cli::{Cli, Command, Format, RunArgs};
use oomtrace::{agent, check, report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `check` says everything in its report; the log would only repeat it.
    let default_level = match cli.command {
        Command::Check(_) => "error",
        _ => "info",
    };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    if oomtrace::stderr_is_journal() {
        // The journal stamps each line itself, and reads its priority from a `<N>` prefix.
        logger.format(|out, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(out, "<{priority}>{}: {}", record.target(), record.args())
        });
    }
    logger.init();
    let result = match cli.command {
        Command::Run(args) => {
            tokio_runtime().and_then(|runtime| runtime.block_on(agent::run(args)))
        }
        Command::Check(args) => return check_host(&args),
        Command::History(args) => report::history(args),
        Command::Show(args) => report::show(args),
        Command::Stats(args) => report::stats(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The report on stdout; exit 0 when `run` would trace, 1 when it would not.
fn check_host(args: &RunArgs) -> ExitCode {
    let report = match tokio_runtime() {
        Ok(runtime) => runtime.block_on(check::check(args)),
        Err(err) => return fail(&err),
    };
    let text = match args.format {
        Format::Json => serde_json::to_string(&report).map_err(anyhow::Error::from),
        Format::Text => {
            Ok(check::table::lines(&report, &report::style::Style::for_stdout()).join("\n"))
        }
    };
    let written = text.and_then(|text| Ok(writeln!(std::io::stdout().lock(), "{text}")?));
    match written {
        Err(err) => fail(&err),
        Ok(()) if report.can_trace => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    // One line, the whole cause chain, no backtrace.
    eprintln!("oomtrace: error: {err:#}");
    ExitCode::FAILURE
}
