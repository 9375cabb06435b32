//! `cut`: what a record went out without, because reading it from the running system did not
//! answer in time (a `/proc` file of a process whose memory map is locked, a cgroup file on a
//! host under heavy reclaim). The record is written with what was read, and says what it lacks.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cut {
    pub reason: CutReason,
    /// What the record lacks, in the order it is read.
    pub parts: Vec<ObservedPart>,
    /// The read under way when the budget ran out; absent when none was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_on: Option<ObservedPart>,
    /// How long the reads of one record may take.
    pub budget_ms: u64,
}

/// Why the parts were cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutReason {
    /// A read did not answer within `budget_ms`.
    NoAnswer,
    /// So many earlier reads have still not answered that none was started for this record.
    StuckReads,
}

/// A part of what is read of the running system as an event arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservedPart {
    /// The parties' cgroups, from `/proc/<pid>/cgroup` where the kernel did not capture them.
    PartyCgroups,
    /// Whose limit was hit, and that limit: the kernel log's report, the cgroup's files.
    Domain,
    /// The domain's memory timeline (`--timeline`).
    Timeline,
    /// What filled the domain (`domain.composition`).
    Composition,
    /// The snapshot's cgroups and the domain's memory.
    SnapshotCgroups,
    /// The snapshot's processes.
    SnapshotProcesses,
}

impl ObservedPart {
    pub fn as_str(self) -> &'static str {
        match self {
            ObservedPart::PartyCgroups => "party_cgroups",
            ObservedPart::Domain => "domain",
            ObservedPart::Timeline => "timeline",
            ObservedPart::Composition => "composition",
            ObservedPart::SnapshotCgroups => "snapshot_cgroups",
            ObservedPart::SnapshotProcesses => "snapshot_processes",
        }
    }
}

impl Cut {
    /// `without snapshot_processes: its snapshot_processes read did not answer within 1000 ms`,
    /// for the log.
    pub fn describe(&self) -> String {
        format!("without {}: {}", self.parts_text(), self.why())
    }

    /// `composition, snapshot_cgroups`.
    pub fn parts_text(&self) -> String {
        let parts: Vec<&str> = self.parts.iter().map(|part| part.as_str()).collect();
        parts.join(", ")
    }

    /// `its snapshot_processes read did not answer within 1000 ms`.
    pub fn why(&self) -> String {
        match (self.reason, self.waiting_on) {
            (CutReason::NoAnswer, Some(waiting_on)) => format!(
                "its {} read did not answer within {} ms",
                waiting_on.as_str(),
                self.budget_ms
            ),
            (CutReason::NoAnswer, None) => {
                format!("its reads did not finish within {} ms", self.budget_ms)
            }
            (CutReason::StuckReads, _) => {
                "earlier reads still have not answered, so none was started".to_owned()
            }
        }
    }
}
