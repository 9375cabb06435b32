//! The `oomtrace` command: `run` the agent, `check` a host before, or read the agent's history
//! back (`history`, `show`, `stats`). Everything else is in the library.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use env_logger::fmt::style::{AnsiColor, Style};
use oomtrace::cli::{Cli, Command, Format, RunArgs};
use oomtrace::{agent, check, escape, report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `check` says everything in its report; the log would only repeat it.
    let default_level = match cli.command {
        Command::Check(_) => "error",
        _ => "info",
    };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    // bollard logs each answer of the Docker API whole at debug level: whoever listens at the
    // socket writes it, and no line of the agent quotes what a runtime answered.
    logger.filter_module("bollard", log::LevelFilter::Info);
    // Names in messages come from containers and users: one escaping rule for every line.
    if oomtrace::stderr_is_journal() {
        // The journal stamps each line itself, and reads its priority from a `<N>` prefix.
        logger.format(|out, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(
                out,
                "<{priority}>{}: {}",
                escape::escape(record.target()),
                escape::escape(&record.args().to_string())
            )
        });
    } else {
        logger.format(|buf, record| {
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
        // The reader went away (`oomtrace history | head`): what it wanted, it has.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
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
    let written = write_check(&report, args.format);
    match written {
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
        Ok(()) if report.can_trace => ExitCode::SUCCESS,
        Ok(()) => ExitCode::FAILURE,
    }
}

/// Names in the report come from the host (runtimes' sockets, directories): escaped by the rule,
/// as every printed line.
fn write_check(report: &check::Report, format: Format) -> anyhow::Result<()> {
    let style = report::style::Style::for_stdout();
    let mut out = escape::Terminal::new(std::io::stdout().lock(), style.color);
    match format {
        Format::Json => escape::to_json_writer(&mut out, report)?,
        Format::Text => write!(out, "{}", check::table::lines(report, &style).join("\n"))?,
    }
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

fn fail(err: &anyhow::Error) -> ExitCode {
    // One line, the whole cause chain, no backtrace.
    eprintln!("oomtrace: error: {}", escape::escape(&format!("{err:#}")));
    ExitCode::FAILURE
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
