//! Fuzzes the runtimes' state on disk as the agent reads it without their sockets: libpod's
//! BoltDB database, containers/storage's `containers.json`, Docker's `config.v2.json` with its
//! `hostconfig.json`, and one libpod container's `config` and `state`. These are files another
//! process writes, possibly while they are read: whatever they hold, the reader returns an
//! error or bounded metadata of real container ids, never a panic or an endless walk.
//!
//! The first byte picks the reader; for the two-part ones, a NUL byte separates the parts.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oomtrace::attribute::runtime::{ContainerMetadata, MAX_LABELS, MAX_TEXT_BYTES, Origin};
use oomtrace::attribute::state::{docker, is_container_id, podman};

/// At most this many containers are read from a database.
const CAPACITY: usize = 64;

fn check(meta: &ContainerMetadata) {
    assert!(is_container_id(&meta.id), "{:?}", meta.id);
    assert_eq!(meta.origin, Origin::State);
    let within = |text: &str| text.len() <= MAX_TEXT_BYTES + '…'.len_utf8();
    assert!(within(&meta.name));
    assert!(meta.image.as_deref().is_none_or(within));
    assert!(meta.restart_policy.as_deref().is_none_or(within));
    assert!(meta.labels.len() <= MAX_LABELS);
    for (key, value) in &meta.labels {
        assert!(within(key) && within(value));
    }
    assert!(meta.main_pid != Some(0), "pid 0 means not running");
    assert!(meta.memory_limit_bytes != Some(0), "0 means no limit");
}

fn split(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(found) = podman::from_bolt(rest, CAPACITY) {
                assert!(found.len() <= CAPACITY);
                for (id, meta) in &found {
                    assert_eq!(id, &meta.id);
                    check(meta);
                }
            }
        }
        1 => {
            if let Ok(listed) = podman::from_containers_json(rest) {
                listed.iter().for_each(check);
            }
        }
        2 => {
            let (config, host_config) = split(rest);
            if let Ok(meta) = docker::parse(config, host_config) {
                check(&meta);
            }
        }
        _ => {
            let (config, state) = split(rest);
            if let Ok(meta) = podman::from_libpod_json(config, state) {
                check(&meta);
            }
        }
    }
});
