//! `oomtrace show`'s picture of what filled the limit: a bar of the domain by kind (what the
//! processes held, and what no process holds: tmpfs files, page cache, the kernel's memory),
//! then a line per kind with its size and what it is made of.

use crate::explain::filled::mount_name;
use crate::record::composition::{Composition, CompositionSource, KernelLogState};
use crate::wording::{human_bytes, printable};

/// The bar's width, in characters.
const BAR: usize = 50;

/// The heading's value, then the lines under it (each starting with `indent`).
pub(super) fn lines(composition: &Composition, indent: &str) -> (String, Vec<String>) {
    let whole = composition
        .limit_bytes
        .or(composition.usage_bytes)
        .unwrap_or(0);
    let not_in = &composition.not_in_processes;
    let held = composition.in_processes_bytes.unwrap_or(0);
    let kinds: [(char, &str, u64); 4] = [
        ('█', "processes", held),
        ('▓', "tmpfs/shmem", not_in.shmem_bytes),
        ('▒', "page cache", not_in.page_cache_bytes),
        ('░', "kernel", not_in.kernel_bytes),
    ];
    let source = match (composition.source, &composition.kernel_log.state) {
        (CompositionSource::KernelLog, _) => "the kernel's report of the kill".to_owned(),
        (source, state) => {
            let why = match state {
                KernelLogState::NoReport => "the kernel printed no report (rate-limited)",
                KernelLogState::Unreadable => "the kernel log is unreadable",
                KernelLogState::Report => "the kernel's report lacked it",
            };
            let file = match source {
                CompositionSource::Meminfo => "/proc/meminfo",
                _ => "memory.stat",
            };
            format!("{file} read as the kill arrived ({why})")
        }
    };
    let heading = match (composition.usage_bytes, composition.limit_bytes) {
        (Some(usage), Some(limit)) => format!(
            "{} of {}, from {source}:",
            human_bytes(usage),
            human_bytes(limit)
        ),
        (Some(usage), None) => format!("{} in use, from {source}:", human_bytes(usage)),
        _ => format!("from {source}:"),
    };
    let mut lines = Vec::new();
    if whole > 0 {
        let mut bar = String::with_capacity(BAR * 3);
        let mut drawn = 0;
        let mut sum = 0u64;
        for (symbol, _, bytes) in kinds {
            sum = sum.saturating_add(bytes);
            // Cumulative rounding, so the segments add up to the part of the bar they fill.
            let until = sum
                .min(whole)
                .saturating_mul(BAR as u64)
                .checked_div(whole)
                .and_then(|cells| usize::try_from(cells).ok())
                .unwrap_or(BAR);
            for _ in drawn..until {
                bar.push(symbol);
            }
            drawn = drawn.max(until);
        }
        for _ in drawn..BAR {
            bar.push('·');
        }
        lines.push(format!("{indent}[{bar}]"));
    }
    let percent = |bytes: u64| {
        bytes
            .saturating_mul(100)
            .checked_div(whole)
            .map_or_else(String::new, |percent| format!("{percent:>3} %"))
    };
    for (symbol, name, bytes) in kinds {
        let detail = detail(name, composition);
        lines.push(
            format!(
                "{indent}{symbol} {name:<11} {:>10} {}  {detail}",
                human_bytes(bytes),
                percent(bytes)
            )
            .trim_end()
            .to_owned(),
        );
    }
    if let (Some(usage), true) = (composition.usage_bytes, whole > 0) {
        let free = whole.saturating_sub(usage);
        if free > 0 {
            lines.push(format!(
                "{indent}· {:<11} {:>10} {}",
                "free",
                human_bytes(free),
                percent(free)
            ));
        }
    }
    if let Some(reaped) = &composition.reaped {
        lines.push(format!(
            "{indent}{} the victim had freed by then, added back",
            human_bytes(reaped.anon_bytes + reaped.page_tables_bytes)
        ));
    }
    (heading, lines)
}

/// What a kind is made of, in a few words.
fn detail(kind: &str, composition: &Composition) -> String {
    match kind {
        "processes" => {
            let mut parts = Vec::new();
            if let Some(anon) = composition.anon_bytes {
                parts.push(format!("anon {}", human_bytes(anon)));
            }
            if let Some(mapped) = composition.file.and_then(|file| file.mapped_bytes) {
                parts.push(format!("mapped files {}", human_bytes(mapped)));
            }
            if let Some(processes) = &composition.processes {
                parts.push(format!("{} processes", processes.count));
            }
            parts.join(", ")
        }
        "tmpfs/shmem" => {
            let mounts: Vec<String> = composition
                .tmpfs
                .iter()
                .take(3)
                .map(|mount| match mount.used_bytes {
                    Some(used) => format!("{} {}", mount_name(mount), human_bytes(used)),
                    None => format!("{} (use unreadable)", mount_name(mount)),
                })
                .collect();
            if !mounts.is_empty() {
                mounts.join(", ")
            } else if let Some(why) = &composition.tmpfs_unknown {
                printable(why)
            } else {
                String::new()
            }
        }
        "page cache" => {
            let Some(file) = composition.file else {
                return String::new();
            };
            let mut parts = Vec::new();
            let pending = file.dirty_bytes.unwrap_or(0) + file.writeback_bytes.unwrap_or(0);
            if pending > 0 {
                parts.push(format!("dirty/writeback {}", human_bytes(pending)));
            }
            if let Some(unevictable) = composition.unevictable_bytes.filter(|&b| b > 0) {
                parts.push(format!("unevictable {}", human_bytes(unevictable)));
            }
            parts.join(", ")
        }
        _ => {
            let Some(kernel) = composition.kernel else {
                return String::new();
            };
            let slab = kernel.slab_reclaimable_bytes.unwrap_or(0)
                + kernel.slab_unreclaimable_bytes.unwrap_or(0);
            let mut parts = Vec::new();
            for (bytes, name) in [
                (Some(slab), "slab"),
                (kernel.page_tables_bytes, "page tables"),
                (kernel.stack_bytes, "stacks"),
                (kernel.sock_bytes, "sockets"),
            ] {
                if let Some(bytes) = bytes.filter(|&b| b > 0) {
                    parts.push(format!("{name} {}", human_bytes(bytes)));
                }
            }
            parts.join(", ")
        }
    }
}
