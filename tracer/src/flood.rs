//! SIGKILL floods: any user can send thousands of SIGKILLs a second (`kill -9` in a loop), and
//! each is a record. Every one is still logged; what keeps counts and rows (the history, the
//! metrics) takes at most a burst and then a steady rate from each sender, and counts the
//! rest, so that a flood neither fills the disk nor drowns the OOM kills among them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::record::{Body, Record, SigkillRecord};

/// SIGKILLs one sender may have stored at once, after a quiet spell.
const BURST: f64 = 100.0;
/// And then per second.
const PER_SECOND: f64 = 10.0;
/// Senders followed at once; past this, the quietest is forgotten.
const MAX_SENDERS: usize = 4096;

/// One sender: the user, command and cgroup it runs as. Not its pid: a loop of short-lived
/// `kill` processes is one sender.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SenderKey {
    uid: Option<u32>,
    comm: Option<String>,
    cgroup: Option<u64>,
}

impl SenderKey {
    fn of(sigkill: &SigkillRecord) -> Self {
        let party = &sigkill.sender.party;
        SenderKey {
            uid: party.process.real_user.map(|user| user.id),
            comm: party.process.comm().map(str::to_owned),
            cgroup: party.cgroup.as_ref().and_then(|cgroup| cgroup.id),
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Decides which SIGKILLs are stored and counted.
#[derive(Default)]
pub(crate) struct SigkillFlood {
    senders: HashMap<SenderKey, Bucket>,
    /// SIGKILLs neither stored nor counted, since the agent started.
    pub limited: u64,
}

impl SigkillFlood {
    /// Whether `record` is kept by the history and the metrics: anything but a SIGKILL is; a
    /// SIGKILL while its sender is within its rate.
    pub(crate) fn admit(&mut self, record: &Record, now: Instant) -> bool {
        let Body::Sigkill(sigkill) = &record.body else {
            return true;
        };
        if self.senders.len() >= MAX_SENDERS {
            self.forget_quietest(now);
        }
        let bucket = self
            .senders
            .entry(SenderKey::of(sigkill))
            .or_insert(Bucket {
                tokens: BURST,
                at: now,
            });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(BURST);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            self.limited += 1;
            false
        }
    }

    /// Drops senders whose bucket is full again (they are as new), else the least recent.
    fn forget_quietest(&mut self, now: Instant) {
        let full = Duration::from_secs_f64(BURST / PER_SECOND);
        self.senders
            .retain(|_, bucket| now.saturating_duration_since(bucket.at) < full);
        if self.senders.len() >= MAX_SENDERS
            && let Some(oldest) = self
                .senders
                .iter()
                .min_by_key(|(_, bucket)| bucket.at)
                .map(|(key, _)| key.clone())
        {
            self.senders.remove(&oldest);
        }
        self.senders.shrink_to(MAX_SENDERS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigkill(uid: u32, comm: &str) -> Record {
        serde_json::from_value(serde_json::json!({
            "schema_version": 1, "kind": "sigkill", "time": "2026-11-30T10:02:11Z",
            "ktime_ns": 5,
            "target": {"process": {"pid": 9}},
            "sender": {"kind": "process", "process": {
                "pid": 10, "executable": {"name": comm}, "real_user": {"id": uid}}}
        }))
        .expect("a sigkill record")
    }

    #[test]
    fn a_flood_from_one_sender_is_limited_and_counted_others_are_not() {
        let mut flood = SigkillFlood::default();
        let now = Instant::now();
        let flooder = sigkill(1000, "bash");
        let admitted = (0..600).filter(|_| flood.admit(&flooder, now)).count();
        assert_eq!(admitted, 100);
        assert_eq!(flood.limited, 500);
        // Another sender is not held up by it.
        assert!(flood.admit(&sigkill(0, "kubelet"), now));
        // A second later, ten more of the flooder's.
        let later = now + Duration::from_secs(1);
        let admitted = (0..600).filter(|_| flood.admit(&flooder, later)).count();
        assert_eq!(admitted, 10);
        assert_eq!(flood.limited, 1090);
    }

    #[test]
    fn other_records_always_pass_and_senders_stay_bounded() {
        let mut flood = SigkillFlood::default();
        let now = Instant::now();
        let started: Record = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "kind": "agent_stopped", "time": "2026-11-30T10:02:11Z",
            "records": 0, "oom_kills": 0, "sigkills": 0, "oom_sigkills": 0,
            "decode_errors": 0, "ringbuf_dropped_total": 0, "history_write_errors": 0
        }))
        .expect("a record");
        assert!(flood.admit(&started, now));
        for uid in 0..(MAX_SENDERS as u32 * 2) {
            assert!(flood.admit(&sigkill(uid, "kill"), now));
        }
        assert!(flood.senders.len() <= MAX_SENDERS);
        assert_eq!(flood.limited, 0);
    }
}
