//! The verdict: one paragraph that says what happened, in the words a person would use after
//! reading `dmesg`, `docker inspect` and `docker stats` side by side.

use std::fmt::Write as _;
use std::time::Duration;

use super::filled;
use super::patterns::Flags;
use crate::attribute::{AttributedKill, Attribution, DomainKind};
use crate::record::build::names;
use crate::record::composition::Composition;
use crate::wording::{printable, spoken_bytes};

/// The snapshot's biggest users, already named: cgroups as `(name, bytes)`, biggest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Top {
    pub cgroups: Vec<(String, u64)>,
    pub processes: Vec<TopProcess>,
    /// How they moved in the minute before, in words (from the memory timeline).
    pub lead_up: Option<String>,
    /// What filled the domain at the kill, its tmpfs mounts named.
    pub filled: Option<Composition>,
    /// Who the domain is (`the pod`, `cgroup /x`), and the memory charged to its cgroup itself,
    /// to none of its members.
    pub charged_to_domain: Option<(String, u64)>,
}

/// One of the snapshot's biggest processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopProcess {
    /// Escaped.
    pub comm: String,
    pub pid: u32,
    /// Its container's name, escaped, where it has one.
    pub container: Option<String>,
    pub bytes: u64,
}

/// How many of each the paragraph names; the JSON has them all.
const NAMED: usize = 3;

pub(crate) fn verdict(kill: &AttributedKill, top: &Top, flags: Flags, window: Duration) -> String {
    let AttributedKill {
        kill: oom,
        victim,
        trigger,
        main_process,
        domain,
    } = kill;
    let victim_name = victim.as_ref().and_then(short_name);
    // Where a party is when nobody owns its cgroup: the path says it all.
    let victim_place = victim_name
        .clone()
        .or_else(|| victim.as_ref().map(cgroup_of));
    let mut text = String::new();

    // What filled the limit, where no process holds most of it: a kill does not free it.
    let victim_own = oom
        .victim
        .fields
        .as_ref()
        .and_then(|fields| fields.anon_rss_kb)
        .map(|kb| kb * 1024);
    if let Some(lead) = top
        .filled
        .as_ref()
        .filter(|_| !oom.marked_without_kill)
        .and_then(|filled| filled::lead(filled, domain.kind == DomainKind::Host, victim_own))
    {
        text.push_str(&lead);
        text.push(' ');
    }

    // Who, and how big.
    let comm = printable(oom.victim.comm.as_deref().unwrap_or("?"));
    let pid = oom.victim.tgid.unwrap_or(oom.victim.pid);
    let size = oom
        .victim
        .fields
        .as_ref()
        .and_then(|fields| {
            [fields.anon_rss_kb, fields.file_rss_kb, fields.shmem_rss_kb]
                .into_iter()
                .sum::<Option<u64>>()
        })
        .map(|kb| format!(", {} resident", spoken_bytes(kb << 10)))
        .unwrap_or_default();
    match &victim_place {
        // An exiting task given reserves: the task is the subject, not its container.
        Some(place) if oom.marked_without_kill => {
            let _ = write!(
                text,
                "Nothing was killed: pid {pid} ({comm}) in {place}{size}, was already exiting, \
                 and was given memory reserves to finish."
            );
        }
        None if oom.marked_without_kill => {
            let _ = write!(
                text,
                "Nothing was killed: pid {pid} ({comm}){size}, was already exiting, and was given \
                 memory reserves to finish."
            );
        }
        _ => {}
    }
    let killed = "was killed by the OOM killer";
    match (&victim_name, main_process) {
        _ if oom.marked_without_kill => {}
        // Its main process: the container itself dies.
        (Some(name), Some(true)) => {
            let _ = write!(
                text,
                "{} {killed}: pid {pid} ({comm}){size}.",
                capitalise(name)
            );
        }
        // A process in it, which the container may well outlive.
        (_, _) => {
            let place = victim_place
                .as_ref()
                .map(|place| format!(" in {place}"))
                .unwrap_or_default();
            let _ = write!(text, "Pid {pid} ({comm}){place} {killed}{size}.");
        }
    }
    match main_process {
        // Nothing was killed: nothing exits for it.
        Some(_) if oom.marked_without_kill => {}
        Some(true) => text.push_str(
            " It was the container's main process, so the container exited with code 137.",
        ),
        Some(false) => text.push_str(
            " It was not the container's main process: the container keeps running, and its \
             runtime will not report OOMKilled.",
        ),
        None => {}
    }

    // Whose limit.
    let inferred = if domain.inferred() { " (inferred)" } else { "" };
    let victim_container = victim.as_ref().and_then(|v| v.container.as_ref());
    match domain.kind {
        DomainKind::Host => {
            let _ = write!(
                text,
                " The whole host ran out of memory; no cgroup limit was hit{inferred}."
            );
            if let Some(meta) = victim_container
                && meta.memory_limit_bytes.is_none()
            {
                let _ = write!(
                    text,
                    " Container {} has no memory limit of its own: its limit is the host's \
                     memory, as `docker stats` shows.",
                    printable(&meta.name)
                );
            }
        }
        DomainKind::Cgroup => {
            let own = domain
                .attribution
                .as_ref()
                .zip(victim.as_ref())
                .is_some_and(|(domain, victim)| {
                    domain.path == victim.path
                        || matches!(
                            (&domain.container, &victim.container),
                            (Some(a), Some(b)) if a.id == b.id
                        )
                });
            if own {
                let limit = domain
                    .limit_bytes
                    .map(|bytes| format!(" of {}", spoken_bytes(bytes)))
                    .unwrap_or_default();
                let _ = write!(text, " It hit its own memory limit{limit}{inferred}.");
            } else {
                let whose = domain
                    .attribution
                    .as_ref()
                    .and_then(short_name)
                    .or_else(|| {
                        domain
                            .cgroup
                            .as_ref()
                            .map(|c| format!("cgroup {}", printable(&c.path)))
                    })
                    .unwrap_or_else(|| "a cgroup".to_owned());
                let _ = match domain.limit_bytes {
                    Some(bytes) => write!(
                        text,
                        " The limit hit was not the victim's own but the {} limit of \
                         {whose}{inferred}.",
                        spoken_bytes(bytes)
                    ),
                    None => write!(
                        text,
                        " The limit hit was not the victim's own but that of {whose}{inferred}."
                    ),
                };
            }
        }
        DomainKind::Unknown => text.push_str(" Whose memory limit was hit is unknown."),
    }

    // Who caused it.
    let same_task = pid == oom.trigger.task.tgid || oom.victim.pid == oom.trigger.task.pid;
    if same_task {
        text.push_str(" Its own allocation tipped it over.");
    } else {
        let _ = write!(
            text,
            " The allocation that tipped it over came from pid {} ({})",
            oom.trigger.task.tgid,
            printable(&oom.trigger.task.comm)
        );
        let trigger_name = trigger
            .as_ref()
            .map(|trigger| short_name(trigger).unwrap_or_else(|| cgroup_of(trigger)));
        match (&trigger_name, &victim_place) {
            (Some(trigger), Some(victim)) if trigger != victim => {
                let _ = write!(text, " in {trigger}, not in {victim}");
            }
            (Some(trigger), _) => {
                let _ = write!(text, " in {trigger}");
            }
            (None, _) => {}
        }
        text.push('.');
    }

    // Who held the memory.
    if let Some(sentence) = biggest_users(top, pid) {
        text.push(' ');
        text.push_str(&sentence);
    }
    if let Some(sentence) = charged_to_domain(top) {
        text.push(' ');
        text.push_str(&sentence);
    }

    // How it came to that.
    if let Some(lead_up) = &top.lead_up {
        text.push(' ');
        text.push_str(lead_up);
    }

    // Patterns.
    let within = span_words(window);
    if let (Some(count), Some(name)) = (flags.restart_loop, &victim_name) {
        let container = victim
            .as_ref()
            .and_then(|victim| victim.container.as_deref());
        match (flags.restarts, container) {
            (Some(restarts), Some(container)) => {
                let runtime = match container.runtime {
                    "docker" => "Docker",
                    other => other,
                };
                let policy = container
                    .restart_policy
                    .as_deref()
                    .map(|policy| format!(" ({})", printable(policy)))
                    .unwrap_or_default();
                let _ = write!(
                    text,
                    " This is the {} OOM kill of {name} in {within}; {runtime} restarted it \
                     {} in {}: its restart policy{policy} is hiding a loop.",
                    ordinal(count),
                    times(restarts.count),
                    human_span(restarts.over),
                );
            }
            _ => {
                let _ = write!(
                    text,
                    " This is the {} OOM kill of {name} in {within}: a restart policy is hiding \
                     a loop.",
                    ordinal(count)
                );
            }
        }
    }
    if let Some(outlives) = top
        .filled
        .as_ref()
        .and_then(|filled| filled::outlives(filled, flags.restart_loop.is_some()))
    {
        text.push_str(&outlives);
    }
    if let Some(count) = flags.recurring_trigger {
        let who = trigger
            .as_ref()
            .and_then(short_name)
            .unwrap_or_else(|| printable(&oom.trigger.task.comm));
        let _ = write!(
            text,
            " {} has now set off {count} host-wide OOMs that killed different victims in \
             {within}.",
            capitalise(&who)
        );
    }
    text
}

/// `At that moment the biggest users were A (2 GiB) and B (8 MiB); the biggest process was c
/// (pid 7, 1.9 GiB).` One process, the victim itself: it was alone there.
fn biggest_users(top: &Top, victim_pid: u32) -> Option<String> {
    // One cgroup is the domain alone: as the biggest user, it says nothing.
    let cgroups = if top.cgroups.len() > 1 {
        top.cgroups.as_slice()
    } else {
        &[]
    };
    let cgroups: Vec<String> = cgroups
        .iter()
        .take(NAMED)
        .map(|(name, bytes)| format!("{name} ({})", spoken_bytes(*bytes)))
        .collect();
    let processes: Vec<String> = top
        .processes
        .iter()
        .take(NAMED)
        .map(|process| {
            let place = process
                .container
                .as_ref()
                .map(|container| format!(", in {container}"))
                .unwrap_or_default();
            format!(
                "{} (pid {}{place}, {})",
                process.comm,
                process.pid,
                spoken_bytes(process.bytes)
            )
        })
        .collect();
    let were = |count: usize, one: &str, many: &str| {
        if count == 1 {
            format!("the biggest {one} was")
        } else {
            format!("the biggest {many} were")
        }
    };
    match (cgroups.is_empty(), top.processes.as_slice()) {
        (true, []) => None,
        (true, [only]) if only.pid == victim_pid => {
            Some("It was the only process there.".to_owned())
        }
        (true, _) => Some(format!(
            "At that moment {} {}.",
            were(processes.len(), "user", "users"),
            and_list(&processes)
        )),
        (false, _) => {
            let mut sentence = format!(
                "At that moment {} {}",
                were(cgroups.len(), "user", "users"),
                and_list(&cgroups)
            );
            if !processes.is_empty() {
                let _ = write!(
                    sentence,
                    "; {} {}",
                    were(processes.len(), "process", "processes"),
                    and_list(&processes)
                );
            }
            sentence.push('.');
            Some(sentence)
        }
    }
}

/// The domain's own charge is told from this share of its usage (and this size) up: below it, it
/// is the cgroup's own kernel objects and rounding between reads.
const CHARGED_TO_DOMAIN_FROM_PERCENT: u64 = 10;
const CHARGED_TO_DOMAIN_FROM_BYTES: u64 = 1 << 20;

/// `34 MiB was charged to the pod itself, to none of its containers.`: memory its members do
/// not show, such as the tmpfs pages of a removed container, which the kernel moves to the
/// parent. Told where it is a large share of the domain's usage at the kill.
fn charged_to_domain(top: &Top) -> Option<String> {
    let (owner, bytes) = top.charged_to_domain.as_ref()?;
    let usage = top.filled.as_ref().and_then(|filled| filled.usage_bytes)?;
    let large = *bytes >= CHARGED_TO_DOMAIN_FROM_BYTES
        && bytes.saturating_mul(100) >= usage.saturating_mul(CHARGED_TO_DOMAIN_FROM_PERCENT);
    if !large {
        return None;
    }
    let members = if owner == "the pod" {
        "its containers"
    } else {
        "the cgroups below it"
    };
    Some(format!(
        "{} was charged to {owner} itself, to none of {members}.",
        capitalise(&spoken_bytes(*bytes))
    ))
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [only] => only.clone(),
        [first @ .., last] => format!("{} and {last}", first.join(", ")),
    }
}

/// `once`, `twice`, `3 times`.
fn times(count: u32) -> String {
    match count {
        1 => "once".to_owned(),
        2 => "twice".to_owned(),
        n => format!("{n} times"),
    }
}

/// A window in words: `6 hours`, `1 hour`, `30 minutes`, `90 seconds`.
fn span_words(window: Duration) -> String {
    let seconds = window.as_secs();
    let (count, unit) = match seconds {
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if count == 1 {
        format!("1 {unit}")
    } else {
        format!("{count} {unit}s")
    }
}

/// `1.7 s`, `12 min`, `3.2 h`.
fn human_span(span: Duration) -> String {
    let seconds = span.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

/// `container web`, else the longer name, as the record will name the party.
fn short_name(party: &Attribution) -> Option<String> {
    crate::wording::short_name(&names(Some(party), None))
}

fn cgroup_of(party: &Attribution) -> String {
    if party.path == "/" {
        return "the root cgroup".to_owned();
    }
    format!("cgroup {}", printable(&party.path))
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests;
