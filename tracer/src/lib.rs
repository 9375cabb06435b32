//! oomtrace: an eBPF tracer that explains OOM kills.
//!
//! The pipeline reads top to bottom: [`capture`] loads the programs and reads their records,
//! [`decode`] turns bytes into typed parts, [`incident`] joins the parts of one kill,
//! [`attribute`] names the containers, pods and services involved, and [`sink`] writes the
//! result, after [`history`] stored it; [`agent`] runs it. [`report`] reads the history back;
//! [`check`] says what a host gives before anything runs.
//!
//! The `oomtrace` binary is a thin `main` over this library; the fuzz targets, the privileged
//! tests and `xtask` use its parsers directly. Built without the default `ebpf` feature, the
//! library carries no eBPF programs (nothing to attach), and needs no eBPF toolchain to build.

#![warn(unreachable_pub)]

pub mod agent;
pub mod attribute;
pub mod capture;
pub mod cgroup_path;
pub mod check;
pub mod cli;
mod confined;
pub mod decode;
pub mod escape;
pub mod history;
pub mod kmsg;
pub mod metrics;
pub mod procfs;
pub mod record;
pub mod report;
pub mod units;

mod badness;
mod clock;
mod explain;
mod flood;
mod incident;
mod observe;
mod protect;
mod sink;
mod stages;
mod wording;

/// Whether stderr is the journal's stream (a systemd service): the log then takes the
/// journal's priority prefixes, and kills become entries of their own.
pub use sink::journald::stderr_is_journal;

/// Crates whose types this library's API takes, for its users to build against the very same
/// versions: the fuzz targets make a runtime's answers (bollard) from JSON and times with jiff;
/// the CRI tests call the CRI client (tonic's types).
#[doc(hidden)]
pub mod deps {
    pub use bollard;
    pub use jiff;
    pub use serde_json;
    pub use tonic;
}
