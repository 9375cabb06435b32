//! The memory controller's files. Whose memory limit was hit: in the full tier the kernel says
//! (`oc->memcg`); below it, the domain is inferred from the counters along the victim's cgroup
//! ancestry: the deepest cgroup with a limit that recorded hitting it. Also how much each
//! cgroup holds, for the snapshot.

use std::fs;
use std::path::{Path, PathBuf};

/// How close to its limit a v1 cgroup's high-water mark must be to count as having hit it: a
/// failed charge leaves usage at most one charge batch (64 pages) below the limit.
const WATERMARK_SLACK_BYTES: u64 = 1 << 20;
/// The most children of one cgroup looked at: a delegated tree lets a container make as many as
/// it likes, and a kill's snapshot is read while the kill waits.
const MAX_CHILDREN: usize = 4096;
/// The most read of one cgroup file: `cgroup.procs` of a cgroup of 32,768 processes.
const MAX_FILE_BYTES: u64 = 256 << 10;

/// Where the memory controller's hierarchy is mounted, and which version it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemoryHierarchy {
    pub root: PathBuf,
    pub version: CgroupVersion,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CgroupVersion {
    V1,
    V2,
}

impl MemoryHierarchy {
    /// From `/proc/self/mountinfo`: a v1 hierarchy with the memory controller wins (on a hybrid
    /// host that is where memory is accounted), else the cgroup2 mount.
    pub(crate) fn find() -> Option<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
        Self::from_mountinfo(&mountinfo)
    }

    pub(crate) fn from_mountinfo(mountinfo: &str) -> Option<Self> {
        let mut v2 = None;
        for line in mountinfo.lines() {
            // `36 25 0:31 / /sys/fs/cgroup/memory rw,… shared:15 - cgroup cgroup rw,memory`
            let Some((mount, filesystem)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = mount.split(' ').nth(4);
            let mut filesystem = filesystem.split(' ');
            let (fstype, options) = (filesystem.next(), filesystem.nth(1));
            match (fstype, mount_point) {
                (Some("cgroup"), Some(point))
                    if options.is_some_and(|o| o.split(',').any(|o| o == "memory")) =>
                {
                    return Some(MemoryHierarchy {
                        root: PathBuf::from(unescape_mountinfo(point)),
                        version: CgroupVersion::V1,
                    });
                }
                (Some("cgroup2"), Some(point)) if v2.is_none() => {
                    v2 = Some(MemoryHierarchy {
                        root: PathBuf::from(unescape_mountinfo(point)),
                        version: CgroupVersion::V2,
                    });
                }
                _ => {}
            }
        }
        v2
    }

    pub(crate) fn dir(&self, cgroup_path: &str) -> PathBuf {
        self.root.join(cgroup_path.trim_start_matches('/'))
    }

    /// Memory charged to the cgroup at `cgroup_path` now, its descendants included.
    pub(crate) fn usage_bytes(&self, cgroup_path: &str) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        read_trimmed(&self.dir(cgroup_path).join(file)).and_then(|text| text.parse().ok())
    }

    /// What the memory controller says of the cgroup at `cgroup_path` now.
    pub(crate) fn stats(&self, cgroup_path: &str) -> CgroupMemory {
        let dir = self.dir(cgroup_path);
        let number = |file: &str| read_trimmed(&dir.join(file)).and_then(|t| t.parse().ok());
        match self.version {
            CgroupVersion::V1 => {
                let mut events = flat_keyed(read_trimmed(&dir.join("memory.oom_control")));
                if let Some(failcnt) = number("memory.failcnt") {
                    events.push(("failcnt".to_owned(), failcnt));
                }
                CgroupMemory {
                    usage_bytes: number("memory.usage_in_bytes"),
                    limit_bytes: self.limit_bytes(cgroup_path),
                    swap_max_bytes: None,
                    memsw_limit_bytes: number("memory.memsw.limit_in_bytes")
                        .filter(|&limit| limit < V1_UNLIMITED_FROM),
                    events,
                }
            }
            CgroupVersion::V2 => CgroupMemory {
                usage_bytes: number("memory.current"),
                limit_bytes: self.limit_bytes(cgroup_path),
                swap_max_bytes: read_trimmed(&dir.join("memory.swap.max"))
                    .and_then(|text| parse_v2_max(&text)),
                memsw_limit_bytes: None,
                events: flat_keyed(read_trimmed(&dir.join("memory.events"))),
            },
        }
    }

    /// Usage less the inactive file pages the kernel reclaims before it kills: the working set,
    /// as the kubelet's eviction counts it. `None` when either is unreadable.
    pub(crate) fn working_set_bytes(&self, cgroup_path: &str) -> Option<u64> {
        let dir = self.dir(cgroup_path);
        let (usage_file, inactive_key) = match self.version {
            CgroupVersion::V1 => ("memory.usage_in_bytes", "total_inactive_file"),
            CgroupVersion::V2 => ("memory.current", "inactive_file"),
        };
        let usage: u64 = read_trimmed(&dir.join(usage_file))?.parse().ok()?;
        let inactive = flat_keyed(read_trimmed(&dir.join("memory.stat")))
            .into_iter()
            .find_map(|(key, value)| (key == inactive_key).then_some(value))?;
        Some(usage.saturating_sub(inactive))
    }

    /// The child cgroups of `cgroup_path`, as paths from the hierarchy root.
    pub(crate) fn children(&self, cgroup_path: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.dir(cgroup_path)) else {
            return Vec::new();
        };
        let parent = cgroup_path.trim_end_matches('/');
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .take(MAX_CHILDREN)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .map(|name| format!("{parent}/{name}"))
            .collect()
    }

    /// The processes directly in the cgroup at `cgroup_path` (not in its children); empty once
    /// it is gone.
    pub(crate) fn procs(&self, cgroup_path: &str) -> Vec<u32> {
        read_bounded(&self.dir(cgroup_path).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// The limit of the cgroup at `cgroup_path`, `None` when unlimited or unreadable.
    pub(crate) fn limit_bytes(&self, cgroup_path: &str) -> Option<u64> {
        let dir = self.dir(cgroup_path);
        match self.version {
            CgroupVersion::V1 => read_trimmed(&dir.join("memory.limit_in_bytes"))
                .and_then(|text| parse_v1_limit(&text)),
            CgroupVersion::V2 => {
                read_trimmed(&dir.join("memory.max")).and_then(|text| parse_v2_max(&text))
            }
        }
    }

    /// Whether the cgroup at `cgroup_path` recorded hitting its own limit: v2 counts OOMs in
    /// `memory.events.local` (`memory.events` before 5.7), v1 counts failed charges in
    /// `memory.failcnt`. `None` when the files are gone (the cgroup was removed).
    fn hit_its_limit(&self, cgroup_path: &str) -> Option<bool> {
        let dir = self.dir(cgroup_path);
        match self.version {
            CgroupVersion::V1 => {
                let number = |file: &str| {
                    read_trimmed(&dir.join(file)).and_then(|text| text.parse::<u64>().ok())
                };
                let failures = number("memory.failcnt")?;
                // With memory+swap limited to the memory limit (`--memory-swap` equal to
                // `--memory`), the memsw counter fails first and recent kernels count failures
                // of the memory counter only: the high-water marks still show the limit hit.
                let reached = |usage: Option<u64>, limit: Option<u64>| match (usage, limit) {
                    (Some(usage), Some(limit)) => {
                        limit < V1_UNLIMITED_FROM
                            && usage.saturating_add(WATERMARK_SLACK_BYTES) >= limit
                    }
                    _ => false,
                };
                Some(
                    failures > 0
                        || number("memory.memsw.failcnt").is_some_and(|failures| failures > 0)
                        || reached(
                            number("memory.max_usage_in_bytes"),
                            number("memory.limit_in_bytes"),
                        )
                        || reached(
                            number("memory.memsw.max_usage_in_bytes"),
                            number("memory.memsw.limit_in_bytes"),
                        ),
                )
            }
            CgroupVersion::V2 => read_trimmed(&dir.join("memory.events.local"))
                .or_else(|| read_trimmed(&dir.join("memory.events")))
                .and_then(|text| counter(&text, "oom"))
                .map(|ooms| ooms > 0),
        }
    }

    /// Infers the domain of a kill from the victim's memory cgroup path.
    pub(crate) fn infer(&self, victim_memcg: &str) -> Inference {
        if victim_memcg.starts_with('…') {
            return Inference::Unreadable;
        }
        for (depth, cgroup) in ancestry(victim_memcg).enumerate() {
            let Some(hit) = self.hit_its_limit(cgroup) else {
                // The victim's own cgroup is gone (a `--rm` container), so its limit cannot be
                // ruled out; an ancestor removed in between is just skipped.
                if depth == 0 {
                    return Inference::Unreadable;
                }
                continue;
            };
            if let Some(limit) = self.limit_bytes(cgroup).filter(|_| hit) {
                return Inference::Cgroup {
                    path: cgroup.to_owned(),
                    limit_bytes: limit,
                };
            }
        }
        Inference::NoLimitHit
    }
}

/// Where the cgroup2 hierarchy is mounted: the memory hierarchy itself on a unified host,
/// `/sys/fs/cgroup/unified` (or wherever) on a hybrid one. Its cgroups have `memory.pressure`
/// whether or not it holds the memory controller: stalls are accounted to a task's cgroup2
/// cgroup.
pub(crate) fn find_cgroup2() -> Option<PathBuf> {
    cgroup2_mount(&fs::read_to_string("/proc/self/mountinfo").ok()?)
}

pub(crate) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        let point = mount.split(' ').nth(4)?;
        (filesystem.split(' ').next() == Some("cgroup2"))
            .then(|| PathBuf::from(unescape_mountinfo(point)))
    })
}

/// A cgroup's memory at one moment; each part `None` when unlimited or unreadable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CgroupMemory {
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// v2 `memory.swap.max`.
    pub swap_max_bytes: Option<u64>,
    /// v1 `memory.memsw.limit_in_bytes`: memory and swap together.
    pub memsw_limit_bytes: Option<u64>,
    /// v2 `memory.events`; v1 `memory.oom_control` and `memory.failcnt`.
    pub events: Vec<(String, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inference {
    /// This cgroup has a limit and recorded hitting it.
    Cgroup { path: String, limit_bytes: u64 },
    /// The ancestry is readable and no limit along it was hit: the host ran out.
    NoLimitHit,
    /// The cgroups were removed before they could be read.
    Unreadable,
}

/// `/a/b/c` → `/a/b/c`, `/a/b`, `/a`: the cgroup and its ancestors, deepest first, without
/// the root (whose limit is the host's).
fn ancestry(path: &str) -> impl Iterator<Item = &str> {
    let path = path.trim_end_matches('/');
    std::iter::successors(Some(path), |path| {
        path.rfind('/').map(|slash| &path[..slash])
    })
    .filter(|path| !path.is_empty())
}

fn read_trimmed(path: &Path) -> Option<String> {
    read_bounded(path).map(|text| text.trim().to_owned())
}

/// A cgroup file's text, at most [`MAX_FILE_BYTES`] of it.
fn read_bounded(path: &Path) -> Option<String> {
    let bytes = crate::procfs::read_at_most(path, MAX_FILE_BYTES).ok()?;
    String::from_utf8(bytes).ok()
}

/// v1 writes "unlimited" as the page counter's maximum, rounded down to a page.
const V1_UNLIMITED_FROM: u64 = 1 << 62;

fn parse_v1_limit(text: &str) -> Option<u64> {
    text.parse::<u64>()
        .ok()
        .filter(|&limit| limit < V1_UNLIMITED_FROM)
}

fn parse_v2_max(text: &str) -> Option<u64> {
    match text {
        "max" => None,
        text => text.parse().ok(),
    }
}

/// The value of `name` in a flat-keyed file like `memory.events`.
fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// Every `name value` line of a flat-keyed file.
fn flat_keyed(text: Option<String>) -> Vec<(String, u64)> {
    text.unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// mountinfo escapes spaces and a few others as `\040`-style octal.
pub(crate) fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
40 31 0:35 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,memory
41 31 0:36 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:19 - cgroup cgroup rw,cpu,cpuacct";

    #[test]
    fn a_hybrid_host_accounts_memory_in_v1() {
        assert_eq!(
            MemoryHierarchy::from_mountinfo(HYBRID),
            Some(MemoryHierarchy {
                root: PathBuf::from("/sys/fs/cgroup/memory"),
                version: CgroupVersion::V1
            })
        );
    }

    #[test]
    fn pressure_is_in_the_cgroup2_mount_whatever_holds_memory() {
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("garbage"), None);
    }

    #[test]
    fn a_unified_host_accounts_memory_in_v2() {
        let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(
            MemoryHierarchy::from_mountinfo(unified),
            Some(MemoryHierarchy {
                root: PathBuf::from("/sys/fs/cgroup"),
                version: CgroupVersion::V2
            })
        );
        assert_eq!(MemoryHierarchy::from_mountinfo("garbage\n\n - -"), None);
    }

    #[test]
    fn stats_read_both_versions() {
        for version in [CgroupVersion::V1, CgroupVersion::V2] {
            let hierarchy = fake(version, &[("/stats", Some(48 << 20), 2)]);
            let dir = hierarchy.root.join("stats");
            match version {
                CgroupVersion::V1 => {
                    fs::write(dir.join("memory.usage_in_bytes"), "1000\n").unwrap();
                    fs::write(
                        dir.join("memory.stat"),
                        "inactive_file 5\ntotal_inactive_file 300\n",
                    )
                    .unwrap();
                    fs::write(
                        dir.join("memory.oom_control"),
                        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
                    )
                    .unwrap();
                }
                CgroupVersion::V2 => {
                    fs::write(dir.join("memory.current"), "1000\n").unwrap();
                    fs::write(dir.join("memory.stat"), "anon 600\ninactive_file 300\n").unwrap();
                    fs::write(dir.join("memory.swap.max"), "max\n").unwrap();
                    fs::write(dir.join("memory.events"), "max 2\noom 2\noom_kill 2\n").unwrap();
                }
            }
            let stats = hierarchy.stats("/stats");
            assert_eq!(stats.usage_bytes, Some(1000), "{version:?}");
            assert_eq!(stats.limit_bytes, Some(48 << 20), "{version:?}");
            assert_eq!(stats.swap_max_bytes, None, "{version:?}");
            // v1's own `inactive_file` leaves out the children's: the total counts them.
            assert_eq!(
                hierarchy.working_set_bytes("/stats"),
                Some(700),
                "{version:?}"
            );
            assert_eq!(hierarchy.working_set_bytes("/missing"), None, "{version:?}");
            assert!(
                stats.events.contains(&("oom_kill".to_owned(), 2)),
                "{version:?} {:?}",
                stats.events
            );
            fs::remove_dir_all(&hierarchy.root).unwrap();
        }
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_mountinfo(r"/mnt/my\040cgroups"), "/mnt/my cgroups");
        assert_eq!(unescape_mountinfo(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn ancestry_goes_up_to_below_the_root() {
        let chain: Vec<&str> = ancestry("/a/b/c").collect();
        assert_eq!(chain, ["/a/b/c", "/a/b", "/a"]);
        assert_eq!(ancestry("/").count(), 0);
    }

    #[test]
    fn limits_and_counters_parse_as_the_kernel_writes_them() {
        assert_eq!(parse_v1_limit("9223372036854771712"), None);
        assert_eq!(parse_v1_limit("50331648"), Some(48 << 20));
        assert_eq!(parse_v2_max("max"), None);
        assert_eq!(parse_v2_max("50331648"), Some(48 << 20));
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(events, "oom"), Some(1));
        assert_eq!(counter(events, "oom_kill"), Some(1));
        assert_eq!(counter(events, "missing"), None);
    }

    /// A fake hierarchy on disk: `(path, limit, hit)` per cgroup.
    fn fake(version: CgroupVersion, cgroups: &[(&str, Option<u64>, u64)]) -> MemoryHierarchy {
        let root = std::env::temp_dir().join(format!(
            "oomtrace-domain-{}-{:?}-{}",
            std::process::id(),
            version,
            cgroups.len()
        ));
        let _ = fs::remove_dir_all(&root);
        for (path, limit, hits) in cgroups {
            let dir = root.join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            match version {
                CgroupVersion::V1 => {
                    let limit = limit.unwrap_or(9_223_372_036_854_771_712);
                    fs::write(dir.join("memory.limit_in_bytes"), format!("{limit}\n")).unwrap();
                    fs::write(dir.join("memory.failcnt"), format!("{hits}\n")).unwrap();
                }
                CgroupVersion::V2 => {
                    let max = limit.map_or("max".to_owned(), |l| l.to_string());
                    fs::write(dir.join("memory.max"), format!("{max}\n")).unwrap();
                    fs::write(
                        dir.join("memory.events.local"),
                        format!("low 0\nhigh 0\nmax {hits}\noom {hits}\noom_kill {hits}\n"),
                    )
                    .unwrap();
                }
            }
        }
        MemoryHierarchy { root, version }
    }

    #[test]
    fn the_deepest_limit_that_was_hit_is_the_domain() {
        for version in [CgroupVersion::V1, CgroupVersion::V2] {
            // A pod's limit was hit, not the container's own (larger) one.
            let hierarchy = fake(
                version,
                &[
                    ("/kubepods", None, 0),
                    ("/kubepods/pod1", Some(100 << 20), 3),
                    ("/kubepods/pod1/c1", Some(200 << 20), 0),
                ],
            );
            assert_eq!(
                hierarchy.infer("/kubepods/pod1/c1"),
                Inference::Cgroup {
                    path: "/kubepods/pod1".to_owned(),
                    limit_bytes: 100 << 20
                },
                "{version:?}"
            );
            fs::remove_dir_all(&hierarchy.root).unwrap();
        }
    }

    #[test]
    fn a_v1_limit_hit_through_memsw_shows_in_the_high_water_mark() {
        let hierarchy = fake(CgroupVersion::V1, &[("/box", Some(48 << 20), 0)]);
        let dir = hierarchy.root.join("box");
        // memory+swap limited to the same 48 MiB: neither counter counted a failure.
        fs::write(dir.join("memory.memsw.failcnt"), "0\n").unwrap();
        fs::write(dir.join("memory.memsw.limit_in_bytes"), "50331648\n").unwrap();
        fs::write(dir.join("memory.memsw.max_usage_in_bytes"), "50331648\n").unwrap();
        fs::write(dir.join("memory.max_usage_in_bytes"), "50302976\n").unwrap();
        assert_eq!(
            hierarchy.infer("/box"),
            Inference::Cgroup {
                path: "/box".to_owned(),
                limit_bytes: 48 << 20
            }
        );
        // Far below the limit: not hit.
        fs::write(dir.join("memory.memsw.max_usage_in_bytes"), "10485760\n").unwrap();
        fs::write(dir.join("memory.max_usage_in_bytes"), "10485760\n").unwrap();
        assert_eq!(hierarchy.infer("/box"), Inference::NoLimitHit);
        fs::remove_dir_all(&hierarchy.root).unwrap();
    }

    #[test]
    fn no_limit_hit_means_the_host_and_a_removed_cgroup_means_unknown() {
        let hierarchy = fake(
            CgroupVersion::V1,
            &[("/db", None, 0), ("/limited", Some(1 << 30), 0)],
        );
        assert_eq!(hierarchy.infer("/db"), Inference::NoLimitHit);
        assert_eq!(hierarchy.infer("/limited"), Inference::NoLimitHit);
        assert_eq!(hierarchy.infer("/gone/long/ago"), Inference::Unreadable);
        // The victim's cgroup went with its container, the parent is still there.
        assert_eq!(hierarchy.infer("/db/removed"), Inference::Unreadable);
        assert_eq!(hierarchy.infer("…/truncated"), Inference::Unreadable);
        assert_eq!(hierarchy.limit_bytes("/limited"), Some(1 << 30));
        fs::remove_dir_all(&hierarchy.root).unwrap();
    }
}
