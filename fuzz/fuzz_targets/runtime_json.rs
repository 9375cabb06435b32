//! Fuzzes what a container runtime's API answers, as JSON: an inspect, a list entry and an
//! event. Labels and names are the container owner's input; whatever arrives, what the agent
//! keeps is bounded and a garbage answer is an error, not a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oomtrace::attribute::docker::{from_event, from_inspect, from_summary};
use oomtrace::attribute::runtime::{ContainerMetadata, MAX_LABELS, MAX_TEXT_BYTES, RuntimeEvent};

fn check(meta: &ContainerMetadata) {
    let within = |text: &str| text.len() <= MAX_TEXT_BYTES + '…'.len_utf8();
    assert!(within(&meta.id) && within(&meta.name));
    assert!(meta.image.as_deref().is_none_or(within));
    assert!(meta.labels.len() <= MAX_LABELS);
    for (key, value) in &meta.labels {
        assert!(within(key) && within(value));
    }
    let k8s = &meta.k8s;
    for name in [
        &k8s.pod_name,
        &k8s.pod_uid,
        &k8s.namespace,
        &k8s.container_name,
    ] {
        assert!(name.as_deref().is_none_or(within));
    }
    assert!(meta.main_pid != Some(0), "pid 0 means not running");
    assert!(meta.memory_limit_bytes != Some(0), "0 means no limit");
}

use oomtrace::deps::bollard::models::{ContainerInspectResponse, ContainerSummary, EventMessage};
use oomtrace::deps::serde_json;

fuzz_target!(|data: &[u8]| {
    if let Ok(inspect) = serde_json::from_slice::<ContainerInspectResponse>(data) {
        if let Ok(meta) = from_inspect(inspect, "docker") {
            check(&meta);
        }
    }
    if let Ok(summary) = serde_json::from_slice::<ContainerSummary>(data) {
        if let Some(meta) = from_summary(summary, "podman") {
            check(&meta);
        }
    }
    if let Ok(message) = serde_json::from_slice::<EventMessage>(data) {
        if let Some(RuntimeEvent::Changed {
            known: Some(meta), ..
        }) = from_event(message, "docker")
        {
            check(&meta);
        }
    }
});
