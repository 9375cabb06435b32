//! The agent: capture → decode → join → attribute → history → sinks, until a signal, then drain
//! and stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya_log::EbpfLogger;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::attribute::{ATTRIBUTION_BUDGET, Attributor};
use crate::capture::{Capture, CaptureOptions, CapturePlan, privileges, ringbuf};
use crate::cli::{Format, RunArgs};
use crate::clock::KernelClock;
use crate::explain::Explainer;
use crate::flood::SigkillFlood;
use crate::history::History;
use crate::history::store::Retention;
use crate::incident::{Event, Joiner, TargetProc};
use crate::metrics::{self, Metrics};
use crate::observe::Observer;
use crate::observe::cgroupfs::MemoryHierarchy;
use crate::observe::timeline::warning::{PressureWarning, Thresholds};
use crate::observe::timeline::{Prepared, Warnings};
use crate::record::agent::AgentInfo;
use crate::record::{Body, Context, Record, Totals, build};
use crate::sink::journald::JournaldSink;
use crate::sink::{Sink, json::JsonSink, metrics::MetricsSink, text::LogSink};
use crate::stages::{self, Stages};
use crate::{badness, decode};

type Logger = EbpfLogger<&'static dyn log::Log>;

/// How long after attach the startup's last work (the runtimes' watchers connecting and
/// listing) is done, so that what it touched can be given back.
const STARTUP_SETTLES: Duration = Duration::from_secs(2);

/// Joined events waiting for attribution. A burst of kills queues here while the first one
/// waits for a runtime; past this, capture waits too and the ring buffer absorbs the rest.
const EVENT_QUEUE: usize = 4096;
/// How long after the last event a burst counts as over, and the memory it took is given back.
const BURST_SETTLES: Duration = Duration::from_secs(5);
/// Warnings waiting to be named; the recorder drops (and counts) what does not fit.
const PRESSURE_QUEUE: usize = 64;

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let attribution = args.attribution();
    let RunArgs {
        format,
        log_target,
        max_tier,
        function_hook,
        // In `attribution`.
        runtime_sockets: _,
        cri_sockets: _,
        kubelet_log_dir: _,
        no_kubelet_logs: _,
        runtime_state: _,
        runtime_state_only: _,
        tombstone_ttl: _,
        restart_loop_window,
        oom_score_adj,
        ringbuf_size,
        history,
        no_history,
        history_group,
        history_retention,
        history_max_rows,
        timeline,
        timeline_max_cgroups,
        warn_pressure,
        warn_usage,
        warn_stall,
        metrics_addr,
    } = args;
    if warn_pressure && timeline.0.is_zero() {
        anyhow::bail!(
            "--warn-pressure needs the memory timeline's recorder, which samples the cgroups it \
             warns of; --timeline 0 turns it off"
        );
    }
    // Before attaching: a journal asked for and not there stops the agent at once.
    let journal = JournaldSink::for_target(log_target)?;
    let clock = KernelClock::now();
    let mut capture = Capture::attach(CaptureOptions {
        max_tier,
        function_hook,
        ringbuf_bytes: ringbuf_size.0,
    })?;
    // Before the capabilities are dropped: lowering it needs CAP_SYS_RESOURCE.
    crate::protect::set_oom_score_adj(oom_score_adj);
    // Keep the logger alive for as long as the programs run: dropping it stops their messages.
    let mut logger = match capture.logger() {
        Some(logger) => Some(ringbuf::readable(logger)?),
        None => None,
    };
    // Kills from before the programs were attached are only in the kernel's log. Read while
    // the capabilities are held: with kernel.dmesg_restrict, /dev/kmsg needs CAP_SYSLOG.
    let attached_ktime_ns = crate::clock::monotonic_ns();
    let earlier_kills = crate::kmsg::kills_since_boot();
    // Each kill's report, as the kernel writes it: opened now for the same reason.
    let kernel_log = crate::kmsg::open_for_reports();
    let records = capture.records()?;
    let drops = Arc::new(capture.drop_counter()?);
    // The memory timeline's pressure trigger may need privileges on older kernels.
    let timeline_window = timeline.0;
    let timeline_prepared = (!timeline_window.is_zero()).then(Prepared::new);
    // Joined while CAP_SETGID is held: the history's group, so the file can be given to it.
    if let Some(gid) = history_group.filter(|_| !no_history) {
        crate::history::join_group(gid)
            .with_context(|| format!("joining group {gid} for --history-group"))?;
    }
    // Attached: from here on nothing needs the capabilities loading did. Before any thread
    // starts, since each thread keeps its own.
    let retained = privileges::drop_after_attach(|| drops.try_read())?;
    log::info!("{}", retained.describe());
    let kernel_log = crate::kmsg::follow_reports(kernel_log);
    let mut records = ringbuf::RecordDrain::start(records)?;
    let plan = &capture.plan;

    let attributor = Attributor::start(attribution);
    // Started once the programs are attached: an agent that cannot attach creates no file.
    let mut history = if no_history {
        None
    } else {
        let retention = Retention::new(history_retention.into(), history_max_rows);
        Some(
            History::start(history, retention, history_group)
                .context("starting the history writer")?,
        )
    };
    let history_errors = history.as_ref().map(History::error_counter);
    if let (Some(history), Some(earlier)) = (history.as_mut(), earlier_kills) {
        backfill(history, &earlier, attached_ktime_ns, &clock).await;
    }
    let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(LogSink {
        events: journal.is_none(),
    })];
    if let Some(journal) = journal {
        log::info!(
            "kills, SIGKILLs and pressure warnings go to the journal as entries of their own: \
             journalctl SYSLOG_IDENTIFIER={} -x (OOMTRACE_CONTAINER=…, OOMTRACE_POD=… select)",
            crate::sink::journald::entry::IDENTIFIER
        );
        sinks.push(Box::new(journal));
    }
    if format == Format::Json {
        sinks.push(Box::new(JsonSink::new(std::io::stdout().lock())));
    }
    if let Some(addr) = metrics_addr {
        let ringbuf_dropped = Arc::clone(&drops);
        // Without a history, nothing fails to be written.
        let history_write_errors = history_errors
            .clone()
            .unwrap_or_else(|| Arc::new(AtomicU64::new(0)));
        let metrics = Arc::new(Metrics::new(
            Box::new(move || ringbuf_dropped.total()),
            history_write_errors,
            restart_loop_window.into(),
        ));
        metrics::http::start(addr, Arc::clone(&metrics)).await?;
        sinks.push(Box::new(MetricsSink::new(metrics)));
    }
    let mut output = Output {
        plan,
        history,
        sinks,
        flood: SigkillFlood::default(),
        clock,
        totals: Totals::default(),
    };
    let mut joiner = {
        let (host_totalpages, page_kb) = badness::host_totalpages();
        Joiner::new(plan.task_hook.is_some(), plan.function_hook.is_some())
            .with_sigkill_targets(plan.signal_task_hook.is_some())
            .with_host_memory(host_totalpages, page_kb)
    };
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;

    // The recorder runs before the agent says it started: its lead-up covers the first kill.
    let (warnings, mut warned) = if warn_pressure {
        let (sender, receiver) = mpsc::channel(PRESSURE_QUEUE);
        let thresholds = Thresholds {
            usage: warn_usage,
            stall: warn_stall,
        };
        log::info!(
            "--warn-pressure: a memory_pressure record when a limited cgroup's working set \
             reaches {} % of its limit or its tasks stall on memory {} % of a second",
            warn_usage.0,
            warn_stall.0
        );
        (Some(Warnings { thresholds, sender }), Some(receiver))
    } else {
        (None, None)
    };
    let mut observer = Observer::new(
        MemoryHierarchy::find(),
        timeline_window,
        timeline_max_cgroups,
        timeline_prepared,
        warnings,
        kernel_log,
    );
    // Once the runtimes' watchers have made their first connection or listing, everything
    // that only starting needs has run.
    tokio::spawn(async {
        tokio::time::sleep(STARTUP_SETTLES).await;
        release_idle_memory();
    });
    let timeline_coverage = observer.timeline_coverage();
    output.write_to_sinks(&build::agent_started(
        plan,
        jiff::Timestamp::now(),
        AgentInfo::this(),
        timeline_coverage
            .as_ref()
            .map(|(coverage, window)| (coverage, *window)),
    ));
    let (events, mut joined) = mpsc::channel::<(Event, Instant, Stages)>(EVENT_QUEUE);
    // Capture → decode → join on one side of the queue; attribute → sinks on the other, so a
    // kill waiting for its container's name never holds up reading the ring buffer.
    let capture_side = async move {
        let mut counts = CaptureCounts::default();
        let mut batch = Vec::new();
        loop {
            let deadline = joiner.next_deadline();
            let joined_now = tokio::select! {
                read = records.read(&mut batch) => {
                    read?;
                    join(&mut joiner, plan, batch.drain(..), &mut counts)
                }
                () = flush_logger(&mut logger) => Vec::new(),
                () = sleep_until(deadline) => timed(joiner.expire(Instant::now()), "wait"),
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
            };
            send(&events, joined_now).await;
        }
        // Whatever the kernel already wrote is reported before exiting.
        records.finish(&mut batch).await?;
        let mut last = join(&mut joiner, plan, batch.drain(..), &mut counts);
        last.extend(timed(joiner.flush(), "wait"));
        send(&events, last).await;
        if let Some(logger) = &mut logger {
            logger.get_mut().flush();
        }
        counts.oom_sigkills = joiner.oom_sigkills();
        anyhow::Ok(counts)
    };
    let mut explainer = Explainer::new(restart_loop_window.into());
    let output_side = async {
        // Set after each event: once events stop for a while, what the burst took is given
        // back, so that an agent after a flood costs what an idle one does.
        let mut settled_at: Option<Instant> = None;
        loop {
            let (event, joined_at, mut stages) = tokio::select! {
                joined = joined.recv() => match joined {
                    Some(joined) => joined,
                    None => break,
                },
                () = sleep_until(settled_at) => {
                    settled_at = None;
                    if let Some(history) = &mut output.history {
                        history.release_memory().await;
                    }
                    release_idle_memory();
                    continue;
                }
                Some(warning) = next_warning(&mut warned) => {
                    let deadline = Instant::now() + ATTRIBUTION_BUDGET;
                    let domain = attributor.resolve(&warning.domain, deadline).await;
                    let grower = match &warning.grower {
                        Some(grower) => Some(attributor.resolve(&grower.path, deadline).await),
                        None => None,
                    };
                    let record = build::memory_pressure(
                        &warning,
                        Some(&domain),
                        grower.as_ref(),
                        output.clock,
                    );
                    output.write_to_sinks(&record);
                    continue;
                }
            };
            stages.mark("queue");
            settled_at = Some(Instant::now() + BURST_SETTLES);
            let deadline = joined_at + ATTRIBUTION_BUDGET;
            let mut killed = None;
            // Each record is built once, after explain, and every output takes that one.
            let record = match event {
                Event::Kill(kill) => {
                    killed = Some(kill.victim.pid);
                    // Read what changes first; then name, which may wait; then explain. The
                    // reads wait at most their budget, so records keep their order.
                    let (kill, observed) = observer.observe(kill).await;
                    stages.mark("observe");
                    let crate::observe::Observed {
                        moment,
                        snapshot,
                        timeline,
                        composition,
                        cut,
                    } = observed;
                    let kmsg_oom_group = moment.kmsg_oom_group.clone();
                    let kill = attributor.kill(kill, moment, deadline).await;
                    stages.mark("attribute");
                    let (explanation, domain_memory, composition) = explainer.explain(
                        &kill,
                        snapshot,
                        timeline.as_deref(),
                        composition.as_deref(),
                        &attributor,
                        Instant::now(),
                    );
                    let context = output.context(drops.total());
                    let record = build::with_oom_group(
                        build::with_cut(
                            build::with_composition(
                                build::oom_kill(
                                    &kill,
                                    Some(explanation),
                                    Some(&domain_memory),
                                    &context,
                                ),
                                composition,
                            ),
                            cut,
                        ),
                        kmsg_oom_group,
                    );
                    stages.mark("explain");
                    record
                }
                Event::Incident(incident) => {
                    build::oom_incident(&incident, &output.context(drops.total()))
                }
                Event::Sigkill(sigkill) => {
                    let part = &sigkill.part;
                    let (sender_paths, cut) = observer
                        .sender_paths(
                            part.sender_cgroup.as_ref(),
                            part.sender_memcg.as_ref(),
                            part.sender.pid,
                        )
                        .await;
                    let sigkill = attributor.sigkill(sigkill, sender_paths, deadline).await;
                    build::with_cut(
                        build::sigkill(&sigkill, &output.context(drops.total())),
                        cut,
                    )
                }
            };
            output.write(record, &mut stages).await;
            if let Some(pid) = killed
                && Stages::enabled()
            {
                log::debug!(
                    target: stages::LOG_TARGET,
                    "oom_kill of pid {pid}: {}",
                    stages.describe()
                );
            }
        }
    };
    let (counts, ()) = tokio::join!(capture_side, output_side);
    let CaptureCounts {
        records,
        decode_errors,
        oom_sigkills,
    } = counts?;
    output.totals.records = records;
    output.totals.decode_errors = decode_errors;
    output.totals.oom_sigkills = oom_sigkills;
    if let Some(history) = output.history.take() {
        history.close();
    }
    output.totals.history_write_errors =
        history_errors.map_or(0, |errors| errors.load(Ordering::Relaxed));
    output.totals.ringbuf_dropped_total = drops.read_now();
    output.totals.sigkills_rate_limited = output.flood.limited;
    output.totals.observe_reads_given_up = observer.reads_given_up();
    output.write_to_sinks(&build::agent_stopped(output.totals, jiff::Timestamp::now()));
    Ok(())
}

#[derive(Default)]
struct CaptureCounts {
    records: u64,
    decode_errors: u64,
    oom_sigkills: u64,
}

fn join(
    joiner: &mut Joiner,
    plan: &CapturePlan,
    records: impl Iterator<Item = ringbuf::Drained>,
    counts: &mut CaptureCounts,
) -> Vec<(Event, Stages)> {
    let now = Instant::now();
    let mut events = Vec::new();
    for ringbuf::Drained {
        record,
        at_ns: drained_ns,
    } in records
    {
        counts.records += 1;
        let read_ns = crate::clock::monotonic_ns();
        match decode::decode_with(&record, &plan.layout, plan.signal_layout.as_ref()) {
            Ok(part) => {
                let decoded_ns = crate::clock::monotonic_ns();
                let target_proc = sigkill_target_proc(&part, plan);
                let joined = joiner.push_with(part, target_proc, now);
                let joined_ns = crate::clock::monotonic_ns();
                events.extend(joined.into_iter().map(|event| {
                    let mut stages = Stages::since(captured_ns(&event).unwrap_or(drained_ns));
                    stages.mark_at("wake", drained_ns);
                    stages.mark_at("handover", read_ns);
                    stages.mark_at("decode", decoded_ns);
                    stages.mark_at("join", joined_ns);
                    (event, stages)
                }));
            }
            Err(err) => {
                counts.decode_errors += 1;
                log::error!("dropping an undecodable record: {err}");
            }
        }
    }
    events
}

/// What /proc says of a SIGKILL's target, asked at once (a SIGKILLed process is soon reaped),
/// where the kernel did not read the target's task itself: with no program for it, or when that
/// program's read found neither of its cgroups. Not asked otherwise: reading a victim's
/// `status` waits for its task lock, which the OOM killer holds until its `Killed process` line
/// is printed (milliseconds on a serial console), and every record after it would wait too.
fn sigkill_target_proc(part: &decode::Part, plan: &CapturePlan) -> Option<TargetProc> {
    match part {
        decode::Part::Sigkill(sigkill) if plan.signal_task_hook.is_none() => {
            Some(TargetProc::read(sigkill.target.pid))
        }
        decode::Part::SigkillTarget(target)
            if target.target_cgroup.is_none() && target.target_memcg.is_none() =>
        {
            Some(TargetProc::read(target.target.pid))
        }
        _ => None,
    }
}

/// The kernel's capture time of an event, where it has one.
fn captured_ns(event: &Event) -> Option<u64> {
    match event {
        Event::Kill(kill) => Some(kill.ktime_ns),
        Event::Sigkill(sigkill) => Some(sigkill.part.ktime_ns),
        Event::Incident(incident) => Some(incident.context.entry.ktime_ns),
    }
}

/// Events that waited in the joiner for a partner that never came, their last span `name`.
fn timed(events: Vec<Event>, name: &'static str) -> Vec<(Event, Stages)> {
    let now_ns = crate::clock::monotonic_ns();
    events
        .into_iter()
        .map(|event| {
            let mut stages = Stages::since(captured_ns(&event).unwrap_or(now_ns));
            stages.mark_at(name, now_ns);
            (event, stages)
        })
        .collect()
}

/// Queues joined events for the output side. Every kill passes here (joined, expired or
/// flushed), still on the capture side: where the kernel could not say whether the victim is a
/// container's main process, `/proc` is asked now, before its runtime reaps it.
///
/// This read, like `sigkill_target_proc`'s, stays here rather than on the observer's bounded
/// reads thread: it must come before the reaping, and `/proc/<pid>/status` and `cgroup` are the
/// kernel's own text (never a FIFO or a symlink), written without waiting on the process's
/// memory, unlike `cmdline` or `maps` (which this agent never reads).
async fn send(queue: &mpsc::Sender<(Event, Instant, Stages)>, mut events: Vec<(Event, Stages)>) {
    for (event, stages) in &mut events {
        if let Event::Kill(kill) = event
            && kill.namespace_init.is_none()
        {
            let pid = kill.victim.tgid.unwrap_or(kill.victim.pid);
            kill.namespace_init = crate::procfs::is_namespace_init(pid);
            stages.mark("proc");
        }
    }
    let now = Instant::now();
    for (event, stages) in events {
        // Only fails once the output side is gone, i.e. never before shutdown.
        if queue.send((event, now, stages)).await.is_err() {
            log::error!("the output stage stopped; an event was not written");
        }
    }
}

/// Stores the kills the kernel logged before the programs were attached, unless the history
/// knows them already (traced live, or stored by an earlier run's backfill). A few at a time:
/// the kernel log may hold thousands, and the agent's footprint should not grow with them.
async fn backfill(
    history: &mut History,
    earlier: &crate::kmsg::KernelLogKills,
    attached_ktime_ns: u64,
    clock: &KernelClock,
) {
    use crate::kmsg::backfill;
    const AT_ONCE: usize = 64;
    let before = || {
        earlier
            .kills
            .iter()
            .filter(|kill| kill.usec.saturating_mul(1000) < attached_ktime_ns)
    };
    let Some(tolerance) = before().map(backfill::tolerance).max() else {
        return;
    };
    let mut done = crate::history::writer::Backfilled::default();
    let mut kills = before().peekable();
    while kills.peek().is_some() {
        let records: Vec<Record> = kills
            .by_ref()
            .take(AT_ONCE)
            .map(|kill| backfill::record(kill, clock))
            .collect();
        match history.backfill(&records, tolerance).await {
            Ok(some) => {
                done.stored += some.stored;
                done.known += some.known;
            }
            Err(err) => {
                log::error!("history: storing the kernel log's OOM kills: {err:#}");
                return;
            }
        }
    }
    log::info!(
        "history: {} OOM kills from the kernel log stored, {} known already",
        done.stored,
        done.known
    );
}

/// Records to every sink, then to the history.
struct Output<'a> {
    plan: &'a CapturePlan,
    history: Option<History>,
    sinks: Vec<Box<dyn Sink>>,
    flood: SigkillFlood,
    clock: KernelClock,
    totals: Totals,
}

impl<'a> Output<'a> {
    fn context(&self, ringbuf_dropped_total: u64) -> Context<'a> {
        Context {
            plan: self.plan,
            ringbuf_dropped_total,
            clock: self.clock,
        }
    }

    async fn write(&mut self, mut record: Record, stages: &mut Stages) {
        let kept = self.flood.admit(&record, Instant::now());
        // Where it will be stored is known now: every output says it, and none waits for the
        // disk. The history's writer takes the record once it is written out.
        if let Some(history) = self.history.as_mut().filter(|_| kept) {
            record.history = history.place(&record);
        }
        match &record.body {
            Body::OomKill(_) => self.totals.oom_kills += 1,
            Body::Sigkill(_) => self.totals.sigkills += 1,
            Body::AgentStarted(_)
            | Body::OomMarkExiting(_)
            | Body::OomIncident(_)
            | Body::MemoryPressure(_)
            | Body::AgentStopped(_) => {}
        }
        if kept {
            self.write_to_sinks(&record);
        } else {
            for sink in &mut self.sinks {
                if sink.is_aggregate() {
                    sink.sigkill_rate_limited();
                } else if let Err(err) = sink.write(&record) {
                    log::error!("writing the {} record: {err}", record.kind());
                }
            }
        }
        stages.mark("write");
        if let Some(history) = self.history.as_mut().filter(|_| kept) {
            history.store(record).await;
            stages.mark("history");
        }
    }

    fn write_to_sinks(&mut self, record: &Record) {
        for sink in &mut self.sinks {
            if let Err(err) = sink.write(record) {
                log::error!("writing the {} record: {err}", record.kind());
            }
        }
    }
}

/// The recorder's next warning; never resolves without `--warn-pressure`.
async fn next_warning(
    warned: &mut Option<mpsc::Receiver<PressureWarning>>,
) -> Option<PressureWarning> {
    match warned {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
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

/// Starting, or a burst of kills, touched memory an idle agent has no use for; give it back
/// (once startup settles, and after each burst), so that an idle agent costs the host next to
/// nothing. The heap: glibc keeps freed memory for reuse (the backfill's records, the loader's,
/// a SIGKILL flood's). The executable's code and constants: most of what startup ran (argument
/// parsing, the BTF reader, the loader with the embedded eBPF object, the history's schema)
/// never runs again, and what a burst ran is idle until the next; yet their pages would stay
/// mapped. They are the file's own, unmodified: what runs again is mapped back from the page
/// cache on its first use, which the first kill after a quiet spell pays for once.
fn release_idle_memory() {
    release_heap();
    for (start, len) in crate::procfs::executable_clean_mappings() {
        // SAFETY: whole mappings of the executable that cannot be written and hold nothing but
        // the file's pages: MADV_DONTNEED only drops this process's references to them.
        unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    }
}

/// glibc keeps freed memory for reuse, in every arena and in the middle of the heap: give the
/// free pages back.
fn release_heap() {
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
