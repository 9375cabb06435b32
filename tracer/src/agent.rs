//! The agent: capture → decode → join → sinks, until a signal, then drain and stop.

use std::time::Instant;

use anyhow::Context as _;
use aya_log::EbpfLogger;
use bytes::Bytes;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::capture::{Capture, CaptureOptions, CapturePlan, ringbuf};
use crate::cli::{Format, RunArgs};
use crate::clock::KernelClock;
use crate::incident::{Event, Joiner};
use crate::sink::{Context, Sink, Totals, json::JsonSink, text::LogSink};
use crate::{badness, decode};

type Logger = EbpfLogger<&'static dyn log::Log>;

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        format,
        max_tier,
        function_hook,
    } = args;
    let clock = KernelClock::now();
    let mut capture = Capture::attach(CaptureOptions {
        max_tier,
        function_hook,
    })?;
    // Keep the logger alive for as long as the programs run: dropping it stops their messages.
    let mut logger = match capture.logger() {
        Some(logger) => Some(ringbuf::readable(logger)?),
        None => None,
    };
    release_startup_memory();
    let mut records = capture.records()?;
    let drops = capture.drop_counter()?;

    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(LogSink)];
    if format == Format::Json {
        sinks.push(Box::new(JsonSink::new(std::io::stdout().lock())));
    }
    let mut pipeline = Pipeline {
        plan: &capture.plan,
        joiner: {
            let (host_totalpages, page_kb) = badness::host_totalpages();
            Joiner::new(
                capture.plan.task_hook.is_some(),
                capture.plan.function_hook.is_some(),
            )
            .with_host_memory(host_totalpages, page_kb)
        },
        sinks,
        clock,
        totals: Totals::default(),
    };
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;

    pipeline.started(drops.total());
    let mut batch = Vec::new();
    loop {
        let deadline = pipeline.joiner.next_deadline();
        tokio::select! {
            read = records.read(&mut batch) => {
                read.context("reading the ring buffer")?;
                pipeline.records(batch.drain(..), drops.total());
            }
            () = flush_logger(&mut logger) => {}
            () = sleep_until(deadline) => {
                let events = pipeline.joiner.expire(Instant::now());
                pipeline.events(events, drops.total());
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }

    // Whatever the kernel already wrote is reported before exiting.
    records.read_now(&mut batch);
    pipeline.records(batch.drain(..), drops.total());
    let events = pipeline.joiner.flush();
    pipeline.events(events, drops.total());
    if let Some(logger) = &mut logger {
        logger.get_mut().flush();
    }
    pipeline.stopped(drops.total());
    Ok(())
}

struct Pipeline<'a> {
    plan: &'a CapturePlan,
    joiner: Joiner,
    sinks: Vec<Box<dyn Sink>>,
    clock: KernelClock,
    totals: Totals,
}

impl<'a> Pipeline<'a> {
    fn context(&self, ringbuf_dropped_total: u64) -> Context<'a> {
        Context {
            plan: self.plan,
            ringbuf_dropped_total,
            clock: self.clock,
        }
    }

    fn records(&mut self, records: impl Iterator<Item = Bytes>, dropped: u64) {
        let now = Instant::now();
        let mut events = Vec::new();
        for record in records {
            self.totals.records += 1;
            match decode::decode(&record, &self.plan.layout) {
                Ok(part) => events.extend(self.joiner.push(part, now)),
                Err(err) => {
                    self.totals.decode_errors += 1;
                    log::error!("dropping an undecodable record: {err}");
                }
            }
        }
        self.events(events, dropped);
    }

    fn events(&mut self, events: Vec<Event>, dropped: u64) {
        let context = self.context(dropped);
        for event in events {
            match &event {
                Event::Kill(kill) if !kill.marked_without_kill => self.totals.oom_kills += 1,
                Event::Kill(_) | Event::Incident(_) => {}
            }
            for sink in &mut self.sinks {
                let written = match &event {
                    Event::Kill(kill) => sink.oom_kill(kill, &context),
                    Event::Incident(incident) => sink.oom_incident(incident, &context),
                };
                if let Err(err) = written {
                    log::error!("writing a record: {err}");
                }
            }
        }
    }

    fn started(&mut self, dropped: u64) {
        let context = self.context(dropped);
        for sink in &mut self.sinks {
            if let Err(err) = sink.started(&context) {
                log::error!("writing the start record: {err}");
            }
        }
    }

    fn stopped(&mut self, dropped: u64) {
        let context = self.context(dropped);
        let totals = self.totals;
        for sink in &mut self.sinks {
            if let Err(err) = sink.stopped(&totals, &context) {
                log::error!("writing the stop record: {err}");
            }
        }
    }
}

/// Forwards the programs' log messages when there are some; never resolves without a logger.
async fn flush_logger(logger: &mut Option<AsyncFd<Logger>>) {
    match logger {
        Some(logger) => match logger.readable_mut().await {
            Ok(mut guard) => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Err(err) => log::warn!("eBPF log messages: {err}"),
        },
        None => std::future::pending().await,
    }
}

/// Loading parsed the kernel's BTF (megabytes) twice; it is freed, but glibc keeps freed heap
/// for reuse. Give it back: an idle agent should cost the host next to nothing.
fn release_startup_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}
