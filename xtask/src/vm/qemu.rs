//! One boot of a guest under qemu, bounded in time, with the serial console captured.

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::runner::DONE_MARKER;

/// Announced by the guest's /init once it runs.
pub const INIT_MARKER: &str = "@@OOMTRACE-INIT@@";
/// Enough for the agent, the test binaries in the initramfs and a test's cgroups (192 MiB at
/// most).
pub const MEMORY_MIB: u32 = 768;
const CPUS: u32 = 2;
/// The host kills qemu this long after the last test's time limit, for a guest that hangs
/// before, between or after them.
const BOOT_TIMEOUT_MARGIN: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How much of the console an error shows.
const CONSOLE_TAIL_LINES: usize = 60;

pub struct Boot<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Gets `console.log` (the guest's serial console) and `qemu.log` (qemu's own stderr).
    pub run_dir: &'a Path,
    /// Guest memory: [`MEMORY_MIB`] unless a test needs more.
    pub memory_mib: u32,
    /// The time limits of all the tests the guest runs, together.
    pub timeout: Duration,
    /// `oomtrace.KEY=VALUE` words for the kernel command line, read by the guest's /init.
    pub args: &'a [String],
}

/// What the guest printed.
pub struct Console {
    pub text: String,
    /// From starting qemu to the guest's /init announcing itself, when seen.
    pub init_after: Option<Duration>,
}

impl Boot<'_> {
    pub fn run(&self) -> anyhow::Result<Console> {
        fs::create_dir_all(self.run_dir)
            .with_context(|| format!("creating {}", self.run_dir.display()))?;
        let console_path = self.run_dir.join("console.log");
        let qemu_log_path = self.run_dir.join("qemu.log");
        let create = |path: &Path| {
            fs::File::create(path).with_context(|| format!("creating {}", path.display()))
        };
        let mut command = self.command();
        command
            .stdin(Stdio::null())
            .stdout(create(&console_path)?)
            .stderr(create(&qemu_log_path)?);
        let started = Instant::now();
        let qemu = KillOnDrop(
            command
                .spawn()
                .with_context(|| format!("starting {command:?}"))?,
        );
        let (status, init_after) = wait(
            qemu,
            started,
            self.timeout + BOOT_TIMEOUT_MARGIN,
            &console_path,
        )?;
        let text = read_lossy(&console_path)?;
        if !status.success() {
            bail!(
                "qemu failed ({status}): {}\n{}",
                read_lossy(&qemu_log_path)?.trim(),
                tail(&text)
            );
        }
        if !text.contains(DONE_MARKER) {
            eprintln!(
                "vm: the guest stopped before its runner finished\n{}",
                tail(&text)
            );
        }
        Ok(Console { text, init_after })
    }

    fn command(&self) -> Command {
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args(["-accel", "tcg", "-cpu", "max"])
            .args([
                "-m",
                &self.memory_mib.to_string(),
                "-smp",
                &CPUS.to_string(),
            ])
            // No network card, VGA or drives: nothing to configure, no option ROMs to find.
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-serial", "stdio", "-no-reboot"])
            .arg("-kernel")
            .arg(self.kernel)
            .arg("-initrd")
            .arg(self.initrd)
            .arg("-append")
            .arg(self.kernel_command_line());
        qemu
    }

    /// `panic=-1` with `-no-reboot` makes a kernel panic end qemu at once; `no_timer_check`
    /// skips the IO-APIC timer check, which an emulated CPU on a busy host can fail ("IO-APIC +
    /// timer doesn't work!", a panic at boot); `oomtrace.*` is read by the guest's /init.
    fn kernel_command_line(&self) -> String {
        let mut line = "console=ttyS0 quiet panic=-1 no_timer_check".to_owned();
        for arg in self.args {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }
}

/// Until qemu exits, or kills it at the deadline; notes when /init announced itself.
fn wait(
    mut qemu: KillOnDrop,
    started: Instant,
    boot_timeout: Duration,
    console_path: &Path,
) -> anyhow::Result<(std::process::ExitStatus, Option<Duration>)> {
    let mut init_after = None;
    loop {
        if let Some(status) = qemu.0.try_wait().context("waiting for qemu")? {
            return Ok((status, init_after));
        }
        if init_after.is_none() && read_lossy(console_path)?.contains(INIT_MARKER) {
            init_after = Some(started.elapsed());
        }
        if started.elapsed() > boot_timeout {
            drop(qemu);
            bail!(
                "the guest did not power off within {} s: killed qemu\n{}",
                boot_timeout.as_secs(),
                tail(&read_lossy(console_path)?)
            );
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// qemu must not outlive an error return (Ctrl-C reaches it directly: same process group).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The console may carry bytes that are not UTF-8 (a garbled boot); they should not hide the rest.
pub fn read_lossy(path: &Path) -> anyhow::Result<String> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The console's last lines, for a message about a boot that went wrong.
pub fn tail(console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    let start = lines.len().saturating_sub(CONSOLE_TAIL_LINES);
    let mut text = format!("--- last {} lines of the console ---", lines.len() - start);
    for line in &lines[start..] {
        text.push('\n');
        text.push_str(line.trim_end_matches('\r'));
    }
    text
}
