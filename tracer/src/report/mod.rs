//! `oomtrace history`, `show` and `stats`: the stored kills, read back for people (or as JSON).
//! They open the history read-only and need no privileges beyond reading its file.

mod composition;
mod list;
mod parties;
mod show;
mod sparklines;
mod stats;
pub mod style;
mod table;

use std::io::Write as _;

use anyhow::Context as _;

use self::style::Style;
use crate::cli::{
    DomainArg, HistoryArgs, HistoryFile, KindArg, ListFormat, ShowArgs, ShowFormat, StatsArgs,
};
use crate::escape::{self, Terminal};
use crate::history::query::{self, Filter};
use crate::history::schema;

pub fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let HistoryArgs {
        file: HistoryFile { path },
        since,
        until,
        container,
        pod,
        namespace,
        victim,
        trigger,
        service,
        project,
        domain,
        kind,
        limit,
        format,
    } = args;
    let conn = schema::open_read_only(&path)?;
    let style = Style::for_stdout();
    let filter = Filter {
        since_ns: since.map(|since| since.resolve(style.now)),
        until_ns: until.map(|until| until.resolve(style.now)),
        kind: kind.map(|kind| match kind {
            KindArg::OomKill => "oom_kill",
            KindArg::Sigkill => "sigkill",
        }),
        container,
        pod,
        namespace,
        victim,
        trigger,
        service,
        project,
        domain: domain.map(|domain| match domain {
            DomainArg::Host => "host",
            DomainArg::Container => "cgroup",
        }),
        limit: Some(limit),
    };
    let events = query::events(&conn, &filter)
        .with_context(|| format!("reading the history at {}", path.display()))?;
    let mut out = Terminal::new(std::io::stdout().lock(), style.color);
    match format {
        ListFormat::Table if events.is_empty() => {
            writeln!(out, "no kills in {} match", path.display())?;
        }
        ListFormat::Table => {
            for line in list::table(&events, &style) {
                writeln!(out, "{line}")?;
            }
        }
        ListFormat::Json => {
            let records: Vec<_> = events.iter().map(|event| event.listed()).collect();
            escape::to_json_writer_pretty(&mut out, &records)?;
            writeln!(out)?;
        }
        ListFormat::Jsonl => {
            for event in &events {
                escape::to_json_writer(&mut out, &event.listed())?;
                writeln!(out)?;
            }
        }
    }
    Ok(())
}

pub fn show(args: ShowArgs) -> anyhow::Result<()> {
    let ShowArgs {
        id,
        file: HistoryFile { path },
        format,
    } = args;
    let conn = schema::open_read_only(&path)?;
    let event = query::event(&conn, id)
        .with_context(|| format!("reading the history at {}", path.display()))?
        .with_context(|| format!("no kill #{id} in {}", path.display()))?;
    let style = Style::for_stdout();
    let mut out = Terminal::new(std::io::stdout().lock(), style.color);
    match format {
        ShowFormat::Json => {
            escape::to_json_writer_pretty(&mut out, &event.listed())?;
            writeln!(out)?;
        }
        ShowFormat::Text => {
            let others = match &event.incident_id {
                Some(incident) => query::incident_victims(&conn, &event.boot_id, incident)?,
                None => Vec::new(),
            };
            for line in show::text(&event, &others, &style) {
                writeln!(out, "{line}")?;
            }
        }
    }
    Ok(())
}

pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let StatsArgs {
        file: HistoryFile { path },
        since,
        restart_loop_window,
    } = args;
    let conn = schema::open_read_only(&path)?;
    let style = Style::for_stdout();
    let since_ns = since.resolve(style.now);
    let events = query::events(
        &conn,
        &Filter {
            since_ns: Some(since_ns),
            ..Filter::default()
        },
    )
    .with_context(|| format!("reading the history at {}", path.display()))?;
    let mut out = Terminal::new(std::io::stdout().lock(), style.color);
    for line in stats::text(&events, since_ns, restart_loop_window.into(), &style) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
