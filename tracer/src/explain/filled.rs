//! What filled the limit, in words: the verdict leads with the memory no process holds when it
//! is a large part of the limit (tmpfs files, page cache the kernel could not reclaim, the
//! kernel's own memory), since a kill frees none of it.

use std::fmt::Write as _;

use crate::record::composition::{Composition, TmpfsKind, TmpfsMount};
use crate::wording::{human_bytes, pod_name, printable, short_name, spoken_bytes};

/// A kind leads the verdict from this share of the domain.
const LEADS_FROM_PERCENT: u64 = 25;
/// And is named next to the leading one from this share.
const NAMED_FROM_PERCENT: u64 = 10;
/// A mount is named from this share of the shared memory no process maps.
const MOUNT_NAMED_FROM_PERCENT: u64 = 10;
/// Mounts named at most.
const MOUNTS_NAMED: usize = 3;

/// The sentence the verdict starts with, where memory no process holds filled much of the
/// domain; `victim_own_bytes`: the killed process's anonymous memory, what its kill frees.
pub(crate) fn lead(
    composition: &Composition,
    host: bool,
    victim_own_bytes: Option<u64>,
) -> Option<String> {
    let (whole, kinds) = ranked(composition)?;
    let share = |bytes: u64| bytes.saturating_mul(100) / whole;
    let named: Vec<String> = kinds
        .iter()
        .filter(|(bytes, _)| share(*bytes) >= NAMED_FROM_PERCENT)
        .map(|(bytes, kind)| describe(*kind, *bytes, composition))
        .collect();
    let mut text = if host {
        format!(
            "The host's {} of memory were filled by {}",
            spoken_bytes(whole),
            join(&named)
        )
    } else {
        format!(
            "The limit of {} was filled by {}",
            spoken_bytes(whole),
            join(&named)
        )
    };
    if let Some(held) = composition.in_processes_bytes {
        let _ = write!(text, "; processes held {}", spoken_bytes(held));
        // Its own is part of what processes held; a later reading may not agree.
        if let Some(own) = victim_own_bytes.filter(|&own| own <= held) {
            let _ = write!(text, " (the killed one {} of its own)", spoken_bytes(own));
        }
    }
    text.push('.');
    text.push_str(match kinds[0].1 {
        Kind::Shmem => " Killing a process does not free such files.",
        Kind::PageCache => " Killing a process does not free it.",
        Kind::Kernel => " Killing a process frees only what it holds of it.",
    });
    Some(text)
}

/// Where tmpfs pages that fill a container's limit outlive the container: a restart will not
/// free them, and the restarted container meets them again.
pub(crate) fn outlives(composition: &Composition, restart_loop: bool) -> Option<String> {
    let whole = composition.limit_bytes.or(composition.usage_bytes)?;
    let shmem = composition.not_in_processes.shmem_bytes;
    if shmem.saturating_mul(100) / whole.max(1) < LEADS_FROM_PERCENT {
        return None;
    }
    let mount = named_mounts(composition)
        .into_iter()
        .find(|mount| mount.outlives_container)?;
    let mut text = match (mount.kind, &mount.volume) {
        // The volume is the pod's: named by it, apart from the container it was found in.
        (TmpfsKind::EmptyDir, Some(volume)) => {
            let pod = volume_pod(mount).unwrap_or_else(|| "the pod".to_owned());
            let container = mount
                .names
                .k8s_container()
                .map_or("the container".to_owned(), |container| {
                    format!("container {}", printable(&container.name))
                });
            format!(
                " Restarting the container will not free them: emptyDir volume {} belongs to \
                 {pod}, not to {container}, and keeps its files until the pod is deleted.",
                printable(volume)
            )
        }
        _ => format!(
            " Restarting the container will not free them: {} belongs to the pod, not to the \
             container, and keeps its files until the pod is deleted.",
            mount_name(mount)
        ),
    };
    if restart_loop {
        text.push_str(
            " Each restart starts with them already charged, which is why it is killed again.",
        );
    }
    Some(text)
}

/// What no process holds, by kind and biggest first, with the whole it is a share of: where
/// the biggest is enough of it to lead the verdict.
fn ranked(composition: &Composition) -> Option<(u64, [(u64, Kind); 3])> {
    let whole = composition
        .limit_bytes
        .or(composition.usage_bytes)
        .filter(|&whole| whole > 0)?;
    let not_in = &composition.not_in_processes;
    let mut kinds = [
        (not_in.shmem_bytes, Kind::Shmem),
        (not_in.page_cache_bytes, Kind::PageCache),
        (not_in.kernel_bytes, Kind::Kernel),
    ];
    kinds.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
    (kinds[0].0.saturating_mul(100) / whole >= LEADS_FROM_PERCENT).then_some((whole, kinds))
}

/// For the log line, where it leads the verdict: `100.0 MiB of tmpfs/shared memory no
/// process maps`.
pub(crate) fn in_brief(composition: &Composition) -> Option<String> {
    let (_, kinds) = ranked(composition)?;
    let (bytes, kind) = kinds[0];
    Some(format!(
        "{} of {}",
        human_bytes(bytes),
        match kind {
            Kind::Shmem => "tmpfs/shared memory no process maps",
            Kind::PageCache => "page cache the kernel could not reclaim",
            Kind::Kernel => "kernel memory",
        }
    ))
}

/// For the metrics, where it leads the verdict: `tmpfs`, `page_cache` or `kernel`.
pub(crate) fn leading_label(composition: &Composition) -> Option<&'static str> {
    let (_, kinds) = ranked(composition)?;
    Some(match kinds[0].1 {
        Kind::Shmem => "tmpfs",
        Kind::PageCache => "page_cache",
        Kind::Kernel => "kernel",
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Shmem,
    PageCache,
    Kernel,
}

fn describe(kind: Kind, bytes: u64, composition: &Composition) -> String {
    let amount = spoken_bytes(bytes);
    match kind {
        Kind::Shmem => {
            let mut text =
                format!("{amount} of tmpfs files and shared memory that no process maps");
            let (measured, unmeasured): (Vec<&TmpfsMount>, Vec<&TmpfsMount>) =
                named_mounts(composition)
                    .into_iter()
                    .partition(|mount| mount.used_bytes.is_some());
            let mut places: Vec<String> = measured
                .iter()
                .take(MOUNTS_NAMED)
                .map(|mount| {
                    format!(
                        "{}, {} used",
                        mount_name(mount),
                        spoken_bytes(mount.used_bytes.unwrap_or(0))
                    )
                })
                .collect();
            // Where the measured ones do not hold it all, the rest is in one whose use a
            // container's own mount namespace keeps from being read.
            let measured_bytes: u64 = measured.iter().filter_map(|m| m.used_bytes).sum();
            if !unmeasured.is_empty() && measured_bytes.saturating_mul(10) < bytes.saturating_mul(9)
            {
                places.push(unmeasured_place(&unmeasured, composition.tmpfs.len() == 1));
            }
            if !places.is_empty() {
                let _ = write!(text, " (in {})", places.join("; "));
            } else if let Some(why) = &composition.tmpfs_unknown {
                let _ = write!(
                    text,
                    " (which mount holds them is unknown: {})",
                    printable(why)
                );
            }
            text
        }
        Kind::PageCache => {
            let mut parts = Vec::new();
            if let Some(file) = &composition.file {
                let pending = file.dirty_bytes.unwrap_or(0) + file.writeback_bytes.unwrap_or(0);
                if pending > 0 {
                    parts.push(format!(
                        "{} dirty or being written back",
                        spoken_bytes(pending)
                    ));
                }
            }
            if let Some(unevictable) = composition.unevictable_bytes.filter(|&b| b > 0) {
                parts.push(format!(
                    "{} unevictable (mlocked or ramfs)",
                    spoken_bytes(unevictable)
                ));
            }
            let mut text = format!("{amount} of page cache the kernel could not reclaim");
            if !parts.is_empty() {
                let _ = write!(text, " ({})", parts.join(", "));
            }
            text
        }
        Kind::Kernel => {
            let mut parts = Vec::new();
            if let Some(kernel) = &composition.kernel {
                let slab = kernel.slab_reclaimable_bytes.unwrap_or(0)
                    + kernel.slab_unreclaimable_bytes.unwrap_or(0);
                if slab > 0 {
                    let mut slab_text = format!(
                        "{} slab: dentries, inodes and other kernel objects",
                        spoken_bytes(slab)
                    );
                    if let Some(reclaimable) = kernel.slab_reclaimable_bytes.filter(|&b| b > 0) {
                        let _ = write!(
                            slab_text,
                            ", {} of it reclaimable",
                            spoken_bytes(reclaimable)
                        );
                    }
                    parts.push(slab_text);
                }
                for (bytes, what) in [
                    (kernel.sock_bytes, "socket buffers"),
                    (kernel.page_tables_bytes, "page tables"),
                    (kernel.stack_bytes, "kernel stacks"),
                    (kernel.percpu_bytes, "per-CPU data"),
                    (kernel.vmalloc_bytes, "vmalloc"),
                ] {
                    if let Some(bytes) =
                        bytes.filter(|&b| b.saturating_mul(10) >= kernel.bytes.max(1))
                    {
                        parts.push(format!("{} {what}", spoken_bytes(bytes)));
                    }
                }
            }
            let mut text = format!("{amount} of the kernel's own memory");
            if !parts.is_empty() {
                let _ = write!(text, " ({})", parts.join("; "));
            }
            text
        }
    }
}

/// `/dev/shm of container web, its only tmpfs mount, whose use cannot be read from outside the
/// container`, or `/dev/shm or /scratch of container web, whose use …`.
fn unmeasured_place(mounts: &[&TmpfsMount], alone: bool) -> String {
    let mounts = &mounts[..mounts.len().min(MOUNTS_NAMED)];
    let owners: Vec<Option<String>> = mounts.iter().map(|m| short_name(&m.names)).collect();
    let one_owner = owners.windows(2).all(|pair| pair[0] == pair[1]);
    let names = match (&owners[0], one_owner) {
        (Some(owner), true) => {
            let points: Vec<String> = mounts.iter().map(|m| printable(&m.mount_point)).collect();
            format!("{} of {owner}", points.join(" or "))
        }
        _ => mounts
            .iter()
            .map(|mount| mount_name(mount))
            .collect::<Vec<_>>()
            .join(" or "),
    };
    let only = if alone && mounts.len() == 1 {
        ", its only tmpfs mount,"
    } else {
        ","
    };
    format!("{names}{only} whose use cannot be read from outside the container")
}

/// The mounts worth naming: those that hold a noticeable part of the shared memory, or whose
/// use cannot be read.
fn named_mounts(composition: &Composition) -> Vec<&TmpfsMount> {
    let shmem = composition.not_in_processes.shmem_bytes.max(1);
    composition
        .tmpfs
        .iter()
        .filter(|mount| match mount.used_bytes {
            Some(used) => used.saturating_mul(100) / shmem >= MOUNT_NAMED_FROM_PERCENT,
            None => true,
        })
        .collect()
}

/// The pod an `emptyDir` volume belongs to: `pod shop/web-0`, though it was found in one of its
/// containers (whose names the mount carries).
fn volume_pod(mount: &TmpfsMount) -> Option<String> {
    pod_name(&mount.names).or_else(|| short_name(&mount.names))
}

/// `/dev/shm of container web`, `emptyDir volume cache of pod shop/web-0`, `tmpfs /mnt/x`.
pub(crate) fn mount_name(mount: &TmpfsMount) -> String {
    let owner = match mount.kind {
        TmpfsKind::EmptyDir => volume_pod(mount),
        _ => short_name(&mount.names),
    };
    let point = printable(&mount.mount_point);
    match (mount.kind, &mount.volume, owner) {
        (TmpfsKind::EmptyDir, Some(volume), Some(owner)) => {
            format!("emptyDir volume {} of {owner}", printable(volume))
        }
        (TmpfsKind::EmptyDir, Some(volume), None) => {
            format!("emptyDir volume {}", printable(volume))
        }
        (_, _, Some(owner)) => format!("{point} of {owner}"),
        (TmpfsKind::Host, _, None) => format!("tmpfs {point} on the host"),
        (_, _, None) => format!("tmpfs {point}"),
    }
}

fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}
