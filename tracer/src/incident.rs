//! Join: the parts that the programs capture for one victim become one [`OomKill`].
//!
//! Both programs fire inside the same `mark_victim` call on the same CPU, so `(cpu, victim pid)`
//! pairs them whatever order their records arrive in. A part whose partner never comes (its
//! reserve failed, or that program is not attached) is reported on its own after a short wait.

use std::time::{Duration, Instant};

use crate::decode::mark_victim::MarkVictimFields;
use crate::decode::{CgroupRef, Part, Task, TaskPart, TracepointPart};

/// How long a part waits for its partner. They are submitted microseconds apart, so this only
/// matters when one was lost.
pub const PARTNER_TIMEOUT: Duration = Duration::from_millis(100);

/// One process killed by the OOM killer, and the task whose allocation set it off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomKill {
    /// CLOCK_MONOTONIC nanoseconds at capture.
    pub ktime_ns: u64,
    pub victim: Victim,
    pub trigger: Trigger,
    /// Which programs contributed: tells a consumer why a field is missing.
    pub parts: Parts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    pub tracepoint: bool,
    pub task: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    /// Kernel task id of the victim (its thread group leader, as the OOM killer picks it).
    pub pid: u32,
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    /// The tracepoint's fields: memory in kB, uid, oom_score_adj; absent on old kernels.
    pub fields: Option<MarkVictimFields>,
    /// cgroup2 cgroup.
    pub cgroup: Option<CgroupRef>,
    /// Memory-controller cgroup.
    pub memcg: Option<CgroupRef>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub task: Task,
    /// cgroup2 id, from a helper that needs no BTF.
    pub cgroup_id: Option<u64>,
    pub cgroup: Option<CgroupRef>,
    pub memcg: Option<CgroupRef>,
}

/// Pairs parts into kills.
pub struct Joiner {
    /// Whether a task program is attached, so a tracepoint part should wait for its partner.
    expect_task_parts: bool,
    pending: Vec<Pending>,
}

struct Pending {
    cpu: u32,
    /// `None` when the tracepoint record could not be decoded.
    victim_pid: Option<u32>,
    since: Instant,
    tracepoint: Option<TracepointPart>,
    task: Option<TaskPart>,
}

impl Joiner {
    pub fn new(expect_task_parts: bool) -> Self {
        Joiner {
            expect_task_parts,
            pending: Vec::new(),
        }
    }

    /// Takes one part; returns the kill it completes, if any.
    pub fn push(&mut self, part: Part, now: Instant) -> Option<OomKill> {
        match part {
            Part::Tracepoint(tracepoint) => {
                let victim_pid = tracepoint.victim.as_ref().map(|victim| victim.pid);
                if !self.expect_task_parts {
                    return Some(join(Some(tracepoint), None));
                }
                let partner = self.pending.iter().position(|p| {
                    p.tracepoint.is_none()
                        && p.cpu == tracepoint.cpu
                        && victim_pid.is_none_or(|pid| p.victim_pid == Some(pid))
                });
                match partner {
                    Some(index) => {
                        let pending = self.pending.swap_remove(index);
                        Some(join(Some(tracepoint), pending.task))
                    }
                    None => {
                        self.pending.push(Pending {
                            cpu: tracepoint.cpu,
                            victim_pid,
                            since: now,
                            tracepoint: Some(tracepoint),
                            task: None,
                        });
                        None
                    }
                }
            }
            Part::Task(task) => {
                let partner = self.pending.iter().position(|p| {
                    p.task.is_none()
                        && p.cpu == task.cpu
                        && p.victim_pid.is_none_or(|pid| pid == task.victim.pid)
                });
                match partner {
                    Some(index) => {
                        let pending = self.pending.swap_remove(index);
                        Some(join(pending.tracepoint, Some(*task)))
                    }
                    None => {
                        self.pending.push(Pending {
                            cpu: task.cpu,
                            victim_pid: Some(task.victim.pid),
                            since: now,
                            tracepoint: None,
                            task: Some(*task),
                        });
                        None
                    }
                }
            }
        }
    }

    /// When the oldest waiting part gives up on its partner.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.since + PARTNER_TIMEOUT).min()
    }

    /// Reports the parts that waited [`PARTNER_TIMEOUT`] on their own.
    pub fn expire(&mut self, now: Instant) -> Vec<OomKill> {
        let (expired, waiting) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| now >= p.since + PARTNER_TIMEOUT);
        self.pending = waiting;
        expired.into_iter().map(Pending::into_kill).collect()
    }

    /// Reports every waiting part: on shutdown, nothing is kept back.
    pub fn flush(&mut self) -> Vec<OomKill> {
        self.pending.drain(..).map(Pending::into_kill).collect()
    }
}

impl Pending {
    fn into_kill(self) -> OomKill {
        join(self.tracepoint, self.task)
    }
}

/// Merges what each program saw. At least one part is present.
fn join(tracepoint: Option<TracepointPart>, task: Option<TaskPart>) -> OomKill {
    let parts = Parts {
        tracepoint: tracepoint.is_some(),
        task: task.is_some(),
    };
    match (tracepoint, task) {
        (tracepoint, Some(task)) => {
            let TaskPart {
                cpu: _,
                ktime_ns,
                victim,
                trigger,
                victim_cgroup,
                victim_memcg,
                trigger_cgroup,
                trigger_memcg,
            } = task;
            let fields = tracepoint.and_then(|tracepoint| tracepoint.victim);
            OomKill {
                ktime_ns,
                victim: Victim {
                    pid: victim.pid,
                    tgid: Some(victim.tgid),
                    comm: Some(victim.comm),
                    fields,
                    cgroup: victim_cgroup,
                    memcg: victim_memcg,
                },
                trigger: Trigger {
                    task: trigger,
                    cgroup_id: trigger_cgroup.as_ref().map(|cgroup| cgroup.id),
                    cgroup: trigger_cgroup,
                    memcg: trigger_memcg,
                },
                parts,
            }
        }
        (Some(tracepoint), None) => {
            let TracepointPart {
                cpu: _,
                ktime_ns,
                victim,
                trigger,
                trigger_cgroup_id,
            } = tracepoint;
            OomKill {
                ktime_ns,
                victim: Victim {
                    pid: victim.as_ref().map_or(0, |victim| victim.pid),
                    tgid: None,
                    comm: victim.as_ref().and_then(|victim| victim.comm.clone()),
                    fields: victim,
                    cgroup: None,
                    memcg: None,
                },
                trigger: Trigger {
                    task: trigger,
                    cgroup_id: Some(trigger_cgroup_id),
                    cgroup: None,
                    memcg: None,
                },
                parts,
            }
        }
        (None, None) => unreachable!("a pending kill always holds a part"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{as_bytes, layout_6_18, mark_victim_record, victim_task_record};
    use crate::decode::{Part, decode};

    fn tracepoint(cpu: u32, pid: u32) -> Part {
        decode(
            &as_bytes(&mark_victim_record(cpu, pid, 100)),
            &layout_6_18(),
        )
        .unwrap()
    }

    fn task(cpu: u32, pid: u32) -> Part {
        decode(&as_bytes(&victim_task_record(cpu, pid)), &layout_6_18()).unwrap()
    }

    #[test]
    fn pairs_in_either_order() {
        let now = Instant::now();
        for (first, second) in [
            (tracepoint(0, 5), task(0, 5)),
            (task(0, 5), tracepoint(0, 5)),
        ] {
            let mut joiner = Joiner::new(true);
            assert_eq!(joiner.push(first, now), None);
            let kill = joiner.push(second, now).expect("pair completes");
            assert_eq!(kill.victim.pid, 5);
            assert_eq!(
                kill.parts,
                Parts {
                    tracepoint: true,
                    task: true
                }
            );
            assert_eq!(kill.victim.fields.unwrap().anon_rss_kb, Some(100));
            assert_eq!(kill.victim.memcg.unwrap().path, "/oomtrace-test-1");
            assert_eq!(joiner.next_deadline(), None);
        }
    }

    #[test]
    fn interleaved_group_victims_pair_by_pid_and_cpu() {
        let now = Instant::now();
        let mut joiner = Joiner::new(true);
        let mut kills = Vec::new();
        for part in [
            tracepoint(0, 10),
            tracepoint(1, 20),
            tracepoint(0, 11),
            task(0, 11),
            task(1, 20),
            task(0, 10),
        ] {
            kills.extend(joiner.push(part, now));
        }
        let pids: Vec<u32> = kills.iter().map(|kill| kill.victim.pid).collect();
        assert_eq!(pids, [11, 20, 10]);
        assert!(
            kills
                .iter()
                .all(|kill| kill.parts.tracepoint && kill.parts.task)
        );
        // The same pid on another CPU is another kill, not a partner.
        assert_eq!(joiner.push(tracepoint(0, 30), now), None);
        assert_eq!(joiner.push(task(1, 30), now), None);
    }

    #[test]
    fn a_lone_part_is_reported_after_the_timeout() {
        let start = Instant::now();
        let mut joiner = Joiner::new(true);
        assert_eq!(joiner.push(tracepoint(0, 5), start), None);
        assert_eq!(joiner.next_deadline(), Some(start + PARTNER_TIMEOUT));
        assert!(joiner.expire(start + PARTNER_TIMEOUT / 2).is_empty());
        let kills = joiner.expire(start + PARTNER_TIMEOUT);
        assert_eq!(kills.len(), 1);
        assert_eq!(
            kills[0].parts,
            Parts {
                tracepoint: true,
                task: false
            }
        );
        assert_eq!(kills[0].trigger.cgroup_id, Some(1));
        assert_eq!(joiner.next_deadline(), None);
    }

    #[test]
    fn tracepoint_only_tier_reports_at_once_and_flush_empties() {
        let now = Instant::now();
        let mut joiner = Joiner::new(false);
        let kill = joiner
            .push(tracepoint(0, 5), now)
            .expect("no partner expected");
        assert_eq!(kill.victim.tgid, None);
        let mut joiner = Joiner::new(true);
        joiner.push(task(0, 6), now);
        let flushed = joiner.flush();
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].victim.pid, 6);
        assert!(joiner.flush().is_empty());
    }
}
