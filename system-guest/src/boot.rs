//! One boot of the whole-system guest: qemu with software emulation (`/dev/kvm` hangs on the
//! machines this runs on), the image behind a copy-on-write overlay of this boot's own
//! (`qemu-img create -b`), the payload disk read-only, the kernel's and systemd's console on
//! the first serial port and the report (the guest's facts and the suite runner's output) alone
//! on the second, so that nothing
//! interleaves with its sections.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::image::Image;
use xtask::{setup::run, vm::qemu};

/// The last line of the report (system-guest/guest/run.sh).
pub const DONE_MARKER: &str = "@@OOMTRACE-SYSTEM-DONE@@";

/// systemd, dockerd, containerd and the tests' containers, with room to spare.
const MEMORY_MIB: u32 = 2048;
const CPUS: u32 = 2;
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The report is complete once it ends with its marker; the guest's power-off after that
/// should take seconds. One that does not is cut short (with a warning): the report is what
/// counts, and the disk is thrown away.
const POWER_OFF_GRACE: Duration = Duration::from_secs(60);

pub struct Boot<'a> {
    pub image: &'a Image,
    pub payload: &'a Path,
    /// Gets `console.log`, `report.log`, `qemu.log` and, while the guest runs, its overlay.
    pub run_dir: &'a Path,
    /// The host kills qemu after this: a guest that hangs in its boot, a test or its shutdown.
    pub timeout: Duration,
}

/// What the guest wrote: its console, and its report.
pub struct Output {
    pub report: String,
    pub took: Duration,
    /// Why the report lacks its end (and the console's), if it does.
    pub incomplete: Option<String>,
}

impl Boot<'_> {
    pub fn run(&self) -> anyhow::Result<Output> {
        fs::create_dir_all(self.run_dir)
            .with_context(|| format!("creating {}", self.run_dir.display()))?;
        let overlay = Overlay::create(&self.image.disk, &self.run_dir.join("overlay.qcow2"))?;
        let console_path = self.run_dir.join("console.log");
        let report_path = self.run_dir.join("report.log");
        let qemu_log_path = self.run_dir.join("qemu.log");
        let create = |path: &Path| {
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))
        };
        // The report's file exists before qemu opens it, so that an early failure reads it.
        create(&report_path)?;
        let mut command = self.command(&overlay.0, &report_path);
        command
            .stdin(Stdio::null())
            .stdout(create(&console_path)?)
            .stderr(create(&qemu_log_path)?);
        let started = Instant::now();
        let mut qemu = qemu::KillOnDrop(
            command
                .spawn()
                .with_context(|| format!("starting {command:?}"))?,
        );
        let mut reported_at = None;
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = qemu.0.try_wait().context("waiting for qemu")? {
                break Some(status);
            }
            if reported_at.is_none() && report_done(&report_path)? {
                reported_at = Some(Instant::now());
            }
            if reported_at.is_some_and(|at| at.elapsed() > POWER_OFF_GRACE) {
                println!(
                    "vm: warning: the guest wrote its report but did not power off within {} s: killed qemu (console: {})",
                    POWER_OFF_GRACE.as_secs(),
                    console_path.display()
                );
                break None;
            }
            if started.elapsed() > self.timeout {
                timed_out = true;
                break None;
            }
            thread::sleep(POLL_INTERVAL);
        };
        let took = started.elapsed();
        drop(qemu);
        drop(overlay);
        let report = qemu::read_lossy(&report_path)?;
        if let Some(status) = status.filter(|status| !status.success()) {
            bail!(
                "qemu failed ({status}): {}\n{}",
                qemu::read_lossy(&qemu_log_path)?.trim(),
                qemu::tail(&qemu::read_lossy(&console_path)?)
            );
        }
        // What the report holds counts even when it is cut short: the tests that ran.
        let incomplete = (!report.contains(DONE_MARKER)).then(|| {
            let why = if timed_out {
                format!(
                    "the guest did not power off within {} s: killed qemu",
                    self.timeout.as_secs()
                )
            } else {
                "the guest powered off before its report ended".to_owned()
            };
            let console = qemu::read_lossy(&console_path).unwrap_or_default();
            format!("{why}\n{}", qemu::tail(&console))
        });
        Ok(Output {
            report,
            took,
            incomplete,
        })
    }

    fn command(&self, overlay: &Path, report_path: &Path) -> Command {
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-accel", "tcg", "-cpu", "max", "-machine", "q35"])
            .args(["-m", &MEMORY_MIB.to_string(), "-smp", &CPUS.to_string()])
            // No network card, VGA or option ROMs: the guest has no network.
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-no-reboot", "-serial", "stdio", "-serial"])
            .arg(format!("file:{}", report_path.display()))
            .arg("-kernel")
            .arg(&self.image.vmlinuz)
            .arg("-initrd")
            .arg(&self.image.initrd)
            .arg("-append")
            .arg(KERNEL_COMMAND_LINE)
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=raw,readonly=on",
                self.payload.display()
            ));
        qemu
    }
}

/// Whether the report's last marker is in: its end is read, not the whole file.
fn report_done(report_path: &Path) -> anyhow::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = fs::File::open(report_path)
        .with_context(|| format!("opening {}", report_path.display()))?;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(64)))?;
    let mut end = Vec::new();
    file.read_to_end(&mut end)?;
    Ok(String::from_utf8_lossy(&end).contains(DONE_MARKER))
}

/// `apparmor=0`: Debian's cloud kernel enables AppArmor, and `docker run` fails without the
/// `apparmor` package's parser, which a minimal system lacks. `oomtrace.run` starts the runner
/// unit; `panic=-1` with `-no-reboot` ends qemu at once on a kernel panic. The kernel is quiet
/// on the console, systemd is not: a unit that hangs the boot or the power-off shows there.
const KERNEL_COMMAND_LINE: &str =
    "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=1 apparmor=0 panic=-1 oomtrace.run";

/// This boot's writes, in a qcow2 file backed by the image; removed on drop.
struct Overlay(PathBuf);

impl Overlay {
    fn create(image: &Path, path: &Path) -> anyhow::Result<Self> {
        let _ = fs::remove_file(path);
        // The backing file's path as given is kept in the overlay: make it absolute.
        let image = image
            .canonicalize()
            .with_context(|| format!("resolving {}", image.display()))?;
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&image)
            .arg(path))
        .context("creating the boot's overlay")?;
        Ok(Self(path.to_owned()))
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_file(&self.0) {
            eprintln!("vm: warning: removing {}: {err}", self.0.display());
        }
    }
}
