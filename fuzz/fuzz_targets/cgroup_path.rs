//! Fuzzes the cgroup-path parser: it must never panic, and what it reports must hold together,
//! whatever bytes the kernel walk (or a bug in it) hands over.

#![no_main]

use libfuzzer_sys::fuzz_target;

use oomtrace::cgroup_path::{PathIdentity, PathKind, QosClass, Runtime, monitored_container, parse};

fuzz_target!(|data: &[u8]| {
    let path = String::from_utf8_lossy(data);
    let identity = parse(&path);

    // Deterministic, and the side question is answered without panicking too.
    assert_eq!(identity, parse(&path));
    let monitor = monitored_container(&path);

    check_kind(&identity);
    for container in identity.container.iter().chain(monitor.iter()) {
        if container.runtime == Some(Runtime::Lxc) {
            assert!(!container.id.is_empty() && !container.id.contains('/'));
        } else {
            let runtime = container.runtime.map_or("unknown", Runtime::as_str);
            assert!(
                is_lower_hex(&container.id, 64),
                "bad {runtime} id {:?}",
                container.id
            );
        }
        assert!(path.contains(container.id.as_str()), "id not in the path");
    }
    if let Some(pod) = &identity.pod {
        assert!(is_pod_uid(&pod.uid), "bad pod uid {:?}", pod.uid);
        let written = pod.uid.replace('-', "_");
        assert!(path.contains(pod.uid.as_str()) || path.contains(written.as_str()));
        // Only Guaranteed pods sit directly under kubepods; the others name their class.
        assert!(pod.qos == QosClass::Guaranteed || path.contains(pod.qos.as_str()));
    }
    if let Some(unit) = &identity.systemd_unit {
        assert!(!unit.contains('/') && path.contains(unit.as_str()));
    }
    // A trailing slash names the same cgroup.
    if !path.is_empty() {
        assert_eq!(
            identity,
            parse(&format!("{path}/")),
            "trailing slash changed the result"
        );
    }
});

/// The kind is exactly the most specific thing found.
fn check_kind(identity: &PathIdentity) {
    let expected = if identity.container.is_some() {
        PathKind::Container
    } else if identity.pod.is_some() {
        PathKind::Pod
    } else if identity.systemd_unit.is_some() {
        PathKind::SystemdUnit
    } else {
        assert!(matches!(
            identity.kind,
            PathKind::Host | PathKind::Unrecognised
        ));
        return;
    };
    assert_eq!(identity.kind, expected);
}

/// Canonical 8-4-4-4-12 lowercase UUID, or a static pod's 32-hex hash.
fn is_pod_uid(uid: &str) -> bool {
    if is_lower_hex(uid, 32) {
        return true;
    }
    let groups: Vec<&str> = uid.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| is_lower_hex(group, len))
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
