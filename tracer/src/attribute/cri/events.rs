//! Following a CRI runtime's containers without polling: the CRI's own `GetContainerEvents`
//! where the runtime implements it (CRI-O, containerd 1.7 and later), else containerd's event
//! service (containerd 1.6 answers the CRI's with UNIMPLEMENTED). Both are streams the runtime
//! pushes; the agent sleeps between events.

use std::fmt;

use prost::Message as _;

use super::convert;
use super::proto::containerd::events as containerd_events;
use super::proto::containerd::services::events::v1 as containerd;
use super::proto::runtime::v1 as cri;
use crate::attribute::runtime::RuntimeEvent;

/// Which stream follows the runtime, said at startup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EventSource {
    Cri,
    Containerd,
}

impl fmt::Display for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventSource::Cri => "the CRI's GetContainerEvents",
            EventSource::Containerd => {
                "containerd's event stream (/containers, /tasks/start; the CRI's \
                 GetContainerEvents is not implemented)"
            }
        })
    }
}

/// The Kubernetes namespace of containerd, where the CRI plugin keeps its containers.
pub(super) const CONTAINERD_K8S_NAMESPACE: &str = "k8s.io";

/// containerd's filters (any matches): container creation, update and removal, and task starts
/// (the main pid). Exits and OOM events are left out: the kernel already said.
pub(super) fn containerd_filters() -> Vec<String> {
    ["topic~=\"^/containers/\"", "topic==\"/tasks/start\""]
        .map(|topic| format!("namespace=={CONTAINERD_K8S_NAMESPACE},{topic}"))
        .to_vec()
}

/// A CRI event as what the agent needs to do.
pub(super) fn from_cri(event: cri::ContainerEventResponse, runtime: &'static str) -> RuntimeEvent {
    let cri::ContainerEventResponse {
        container_id,
        container_event_type,
        created_at: _,
        pod_sandbox_status,
        containers_statuses,
    } = event;
    if container_event_type == cri::ContainerEventType::ContainerDeletedEvent as i32 {
        return RuntimeEvent::Removed { id: container_id };
    }
    let pod = pod_sandbox_status.as_ref();
    let known = match pod {
        // The sandbox's own events (containerd sends them).
        Some(sandbox) if sandbox.id == container_id => Some(convert::sandbox(
            &sandbox.id,
            sandbox.metadata.as_ref(),
            sandbox.labels.clone(),
            runtime,
        )),
        _ => containers_statuses
            .into_iter()
            .find(|status| status.id == container_id)
            .map(|status| {
                let mut meta = convert::from_status(status, runtime);
                if let Some(sandbox) = pod {
                    let sandbox = convert::sandbox(
                        &sandbox.id,
                        sandbox.metadata.as_ref(),
                        sandbox.labels.clone(),
                        runtime,
                    );
                    meta.k8s = meta.k8s.or_pod(&sandbox.k8s);
                }
                meta
            }),
    };
    RuntimeEvent::Changed {
        id: container_id,
        known: known.map(Box::new),
    }
}

/// A containerd event as what the agent needs to do; `None` for the ones that change nothing.
pub(super) fn from_containerd(envelope: containerd::Envelope) -> Option<RuntimeEvent> {
    if envelope.namespace != CONTAINERD_K8S_NAMESPACE {
        return None;
    }
    let event = envelope.event?;
    let value = event.value.as_slice();
    let changed =
        |id: String| (!id.is_empty()).then_some(RuntimeEvent::Changed { id, known: None });
    match event.type_url.trim_start_matches('/') {
        "containerd.events.ContainerCreate" => {
            changed(containerd_events::ContainerCreate::decode(value).ok()?.id)
        }
        "containerd.events.ContainerUpdate" => {
            changed(containerd_events::ContainerUpdate::decode(value).ok()?.id)
        }
        "containerd.events.TaskStart" => changed(
            containerd_events::TaskStart::decode(value)
                .ok()?
                .container_id,
        ),
        "containerd.events.ContainerDelete" => {
            let id = containerd_events::ContainerDelete::decode(value).ok()?.id;
            (!id.is_empty()).then_some(RuntimeEvent::Removed { id })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::cri::proto::google::protobuf::Any;
    use crate::attribute::runtime::Role;

    const ID: &str = "3da2a102b4d1b9c0b5bc0e4b34f81e79de6ca5276d794359249aaa6aa559b7c2";
    const SANDBOX: &str = "a5fcd009f205914e9430b4d14cc82c45f4a436a9c0e710ad662a968ac04b9723";

    fn envelope(namespace: &str, type_url: &str, value: Vec<u8>) -> containerd::Envelope {
        containerd::Envelope {
            namespace: namespace.to_owned(),
            topic: String::new(),
            event: Some(Any {
                type_url: type_url.to_owned(),
                value,
            }),
        }
    }

    #[test]
    fn containerd_events_say_what_changed_and_what_went() {
        let create = containerd_events::ContainerCreate {
            id: ID.to_owned(),
            image: "x".to_owned(),
        };
        assert_eq!(
            from_containerd(envelope(
                "k8s.io",
                "containerd.events.ContainerCreate",
                create.encode_to_vec()
            )),
            Some(RuntimeEvent::Changed {
                id: ID.to_owned(),
                known: None
            })
        );
        let start = containerd_events::TaskStart {
            container_id: ID.to_owned(),
            pid: 42,
        };
        assert!(matches!(
            from_containerd(envelope("k8s.io", "containerd.events.TaskStart", start.encode_to_vec())),
            Some(RuntimeEvent::Changed { id, .. }) if id == ID
        ));
        let delete = containerd_events::ContainerDelete { id: ID.to_owned() };
        assert_eq!(
            from_containerd(envelope(
                "k8s.io",
                "containerd.events.ContainerDelete",
                delete.encode_to_vec()
            )),
            Some(RuntimeEvent::Removed { id: ID.to_owned() })
        );
    }

    #[test]
    fn other_namespaces_topics_and_garbage_are_ignored() {
        let delete = containerd_events::ContainerDelete { id: ID.to_owned() }.encode_to_vec();
        // Docker's own containers live in containerd's `moby` namespace.
        assert_eq!(
            from_containerd(envelope(
                "moby",
                "containerd.events.ContainerDelete",
                delete
            )),
            None
        );
        let exit = containerd_events::TaskExit {
            container_id: ID.to_owned(),
            ..Default::default()
        };
        assert_eq!(
            from_containerd(envelope(
                "k8s.io",
                "containerd.events.TaskExit",
                exit.encode_to_vec()
            )),
            None
        );
        assert_eq!(
            from_containerd(envelope(
                "k8s.io",
                "containerd.events.ContainerCreate",
                vec![0xff, 0xff, 0xff]
            )),
            None
        );
        assert_eq!(
            from_containerd(containerd::Envelope {
                namespace: "k8s.io".to_owned(),
                ..Default::default()
            }),
            None
        );
    }

    fn pod_status() -> cri::PodSandboxStatus {
        cri::PodSandboxStatus {
            id: SANDBOX.to_owned(),
            metadata: Some(cri::PodSandboxMetadata {
                name: "web-0".to_owned(),
                uid: "uid-1".to_owned(),
                namespace: "shop".to_owned(),
                attempt: 0,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_cri_event_carries_the_container_and_its_pod() {
        let event = cri::ContainerEventResponse {
            container_id: ID.to_owned(),
            container_event_type: cri::ContainerEventType::ContainerStartedEvent as i32,
            created_at: 1,
            pod_sandbox_status: Some(pod_status()),
            containers_statuses: vec![cri::ContainerStatus {
                id: ID.to_owned(),
                metadata: Some(cri::ContainerMetadata {
                    name: "nginx".to_owned(),
                    attempt: 1,
                }),
                ..Default::default()
            }],
        };
        let RuntimeEvent::Changed {
            id,
            known: Some(meta),
        } = from_cri(event, "cri-o")
        else {
            panic!("a start is a change with what it carried");
        };
        assert_eq!(id, ID);
        assert_eq!(meta.k8s.container_name.as_deref(), Some("nginx"));
        assert_eq!(meta.k8s.pod_name.as_deref(), Some("web-0"));
        assert_eq!(meta.k8s.namespace.as_deref(), Some("shop"));
        assert_eq!(meta.k8s.restart_count, Some(1));
        assert_eq!(meta.runtime, "cri-o");
    }

    #[test]
    fn a_cri_sandbox_event_names_the_pod_and_deletion_removes() {
        let event = cri::ContainerEventResponse {
            container_id: SANDBOX.to_owned(),
            container_event_type: cri::ContainerEventType::ContainerCreatedEvent as i32,
            pod_sandbox_status: Some(pod_status()),
            ..Default::default()
        };
        let RuntimeEvent::Changed {
            known: Some(meta), ..
        } = from_cri(event, "containerd")
        else {
            panic!("a sandbox's creation names its pod");
        };
        assert_eq!(meta.role, Role::PodSandbox);
        assert_eq!(meta.k8s.pod_name.as_deref(), Some("web-0"));
        let deleted = cri::ContainerEventResponse {
            container_id: ID.to_owned(),
            container_event_type: cri::ContainerEventType::ContainerDeletedEvent as i32,
            ..Default::default()
        };
        assert_eq!(
            from_cri(deleted, "cri-o"),
            RuntimeEvent::Removed { id: ID.to_owned() }
        );
    }
}
