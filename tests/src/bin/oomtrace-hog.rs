//! A memory hog for oomtrace's integration tests.
//!
//! It waits for one byte on stdin, so the test can move it into its cgroups before it charges
//! any memory there, then allocates 1 MiB chunks and writes to every page of each (so they
//! count as resident anonymous memory, not just address space) and keeps them all, until the
//! OOM killer ends it. `--max-mib N` (default 1024) caps the total so that a cgroup limit that
//! was not applied cannot eat the host: reaching it is a failure (exit status 3).
//!
//! With `--hold`, reaching `--max-mib` is the point: the hog prints `held N MiB` on stdout and
//! keeps its memory until it is killed, like a database with a steady working set.
//!
//! With `--mib-per-second N`, it grows at that pace instead of at once, like a build job whose
//! memory climbs over seconds.
//!
//! With `--in-pipes` (and `--hold`), it holds its `--max-mib` in pipe buffers instead, 1 MiB a
//! pipe: memory the kernel charges to the cgroup as its own (kernel memory), in no process's
//! resident set, like a server's socket and pipe buffers.
//!
//! With `--no-wait`, it allocates at once without reading stdin: in a container started with
//! `podman run -d` the runtime has put it in the container's cgroup already, and stdin is not
//! the test's to write to.

use std::io::Read as _;
use std::process::ExitCode;

const MIB: usize = 1 << 20;

fn main() -> ExitCode {
    let Options {
        max_mib,
        hold,
        no_wait,
        mib_per_second,
        in_pipes,
    } = match parse_options(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("oomtrace-hog: {message}");
            return ExitCode::from(2);
        }
    };

    let mut start = [0u8; 1];
    if !no_wait && let Err(err) = std::io::stdin().read_exact(&mut start) {
        // The test went away before releasing us: there is nothing to do.
        eprintln!("oomtrace-hog: no start byte on stdin: {err}");
        return ExitCode::from(2);
    }

    if in_pipes {
        let pipes = match fill_pipes(max_mib) {
            Ok(pipes) => pipes,
            Err(message) => {
                eprintln!("oomtrace-hog: {message}");
                return ExitCode::from(4);
            }
        };
        println!("held {max_mib} MiB in {} pipes", pipes.len());
        loop {
            std::thread::park();
        }
    }

    let mut chunks: Vec<Vec<u8>> = Vec::with_capacity(max_mib);
    let pace = mib_per_second.map(|rate| std::time::Duration::from_secs(1) / rate.max(1));
    let started = std::time::Instant::now();
    for allocated in 0..max_mib {
        if let Some(pace) = pace {
            // Steady on average, whatever each allocation took.
            let due = started + pace * allocated as u32;
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        }
        // A non-zero fill writes every byte, so every page is faulted in and charged. A zero
        // fill would not: it becomes a calloc that leaves fresh mmap pages untouched.
        let chunk = vec![0xa5u8; MIB];
        chunks.push(std::hint::black_box(chunk));
    }
    std::hint::black_box(&chunks);
    if hold {
        println!("held {max_mib} MiB");
        loop {
            std::thread::park();
        }
    }
    eprintln!("oomtrace-hog: reached {max_mib} MiB without being OOM-killed");
    ExitCode::from(3)
}

/// `mib` pipes of 1 MiB (`F_SETPIPE_SZ`), each filled: the pages of their buffers are the
/// kernel's, charged to the writer's memory cgroup (`__GFP_ACCOUNT`).
fn fill_pipes(mib: usize) -> Result<Vec<[std::os::fd::OwnedFd; 2]>, String> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let chunk = vec![0x5au8; 64 * 1024];
    let mut pipes = Vec::with_capacity(mib);
    for n in 0..mib {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(format!("pipe {n}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: both descriptors were just made and are owned by nothing else.
        let pipe = unsafe { [OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])] };
        let write_end = pipe[1].as_raw_fd();
        // SAFETY: fcntl on a descriptor this function owns.
        if unsafe { libc::fcntl(write_end, libc::F_SETPIPE_SZ, MIB as libc::c_int) } < 0 {
            return Err(format!(
                "F_SETPIPE_SZ of pipe {n}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut written = 0;
        while written < MIB {
            // SAFETY: writes from a buffer of the length given.
            let wrote = unsafe { libc::write(write_end, chunk.as_ptr().cast(), chunk.len()) };
            if wrote <= 0 {
                return Err(format!(
                    "filling pipe {n} after {written} bytes: {}",
                    std::io::Error::last_os_error()
                ));
            }
            written += wrote as usize;
        }
        pipes.push(pipe);
    }
    Ok(pipes)
}

struct Options {
    max_mib: usize,
    hold: bool,
    no_wait: bool,
    mib_per_second: Option<u32>,
    in_pipes: bool,
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut max_mib = 1024;
    let mut hold = false;
    let mut no_wait = false;
    let mut mib_per_second = None;
    let mut in_pipes = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--max-mib" => {
                let value = args.next().ok_or("--max-mib needs a value")?;
                max_mib = value
                    .parse()
                    .map_err(|err| format!("--max-mib {value:?}: {err}"))?;
            }
            "--mib-per-second" => {
                let value = args.next().ok_or("--mib-per-second needs a value")?;
                mib_per_second = Some(
                    value
                        .parse()
                        .map_err(|err| format!("--mib-per-second {value:?}: {err}"))?,
                );
            }
            "--hold" => hold = true,
            "--no-wait" => no_wait = true,
            "--in-pipes" => in_pipes = true,
            other => {
                return Err(format!(
                    "unexpected argument {other:?} (usage: oomtrace-hog [--max-mib N] [--mib-per-second N] [--hold [--in-pipes]] [--no-wait])"
                ));
            }
        }
    }
    if in_pipes && !hold {
        return Err("--in-pipes holds its memory: it needs --hold".to_owned());
    }
    Ok(Options {
        max_mib,
        hold,
        no_wait,
        mib_per_second,
        in_pipes,
    })
}
