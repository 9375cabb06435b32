//! What the kernel makes slow, done on a thread of its own so that sampling never waits for it:
//! registering a cgroup v1 usage threshold (the kernel waits for an RCU grace period on each,
//! 5–20 ms) and closing a pressure trigger (the same wait). Only domains half full or more are
//! armed with these, so there are few; a host with a thousand containers would otherwise spend
//! seconds on them at startup and on exit.

use std::fs::File;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

enum Job {
    /// Writes `<eventfd> <usage fd> <bytes>` to `control` for each threshold; the descriptors
    /// are duplicates, so that the recorder may close its own meanwhile.
    Register {
        control: PathBuf,
        eventfd: OwnedFd,
        usage: OwnedFd,
        bytes: Vec<u64>,
    },
    Close(File),
}

pub(super) struct Arming {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Arming {
    pub(super) fn start() -> std::io::Result<Self> {
        let (jobs, queue) = channel();
        let thread = std::thread::Builder::new()
            .name("oomtrace-arming".to_owned())
            .spawn(move || run(&queue))?;
        Ok(Arming {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Registers usage thresholds at `bytes` on the v1 cgroup whose `cgroup.event_control` is
    /// `control`: `eventfd` is signalled whenever usage (read through `usage`) crosses one. The
    /// eventfd's closing unregisters them.
    pub(super) fn register(&self, control: PathBuf, eventfd: &File, usage: &File, bytes: Vec<u64>) {
        let (Ok(eventfd), Ok(usage)) = (
            eventfd.as_fd().try_clone_to_owned(),
            usage.as_fd().try_clone_to_owned(),
        ) else {
            return;
        };
        self.send(Job::Register {
            control,
            eventfd,
            usage,
            bytes,
        });
    }

    /// Closes `file` (a pressure trigger) without waiting for it.
    pub(super) fn close(&self, file: File) {
        self.send(Job::Close(file));
    }

    fn send(&self, job: Job) {
        if let Some(jobs) = &self.jobs {
            // Only fails once the thread is gone, i.e. never before shutdown.
            let _ = jobs.send(job);
        }
    }
}

impl Drop for Arming {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(queue: &Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        match job {
            Job::Register {
                control,
                eventfd,
                usage,
                bytes,
            } => {
                for bytes in bytes {
                    let line = format!("{} {} {bytes}", eventfd.as_raw_fd(), usage.as_raw_fd());
                    if let Err(err) = std::fs::write(&control, line) {
                        log::debug!(
                            "memory timeline: no usage threshold on {}: {err}",
                            control.display()
                        );
                        break;
                    }
                }
            }
            Job::Close(file) => drop(file),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_written_in_the_background() {
        let dir = std::env::temp_dir().join(format!("oomtrace-arming-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let control = dir.join("cgroup.event_control");
        let usage = File::create(dir.join("memory.usage_in_bytes")).unwrap();
        let eventfd = super::super::files::eventfd().unwrap();
        let arming = Arming::start().unwrap();
        arming.register(control.clone(), &eventfd, &usage, vec![75, 90]);
        drop(arming);
        // A plain file keeps the last line written: the last threshold, with descriptors of
        // the arming thread's own.
        let written = std::fs::read_to_string(&control).unwrap();
        assert!(written.ends_with(" 90"), "{written}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
