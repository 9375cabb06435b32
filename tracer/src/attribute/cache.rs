//! What the runtimes said about containers, kept so that a kill resolves without a round trip,
//! and kept past a container's removal (as a tombstone) so that a kill of a `--rm` container,
//! whose cgroup is gone a millisecond later, still gets its name.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::runtime::{ComposeNames, ContainerMetadata, K8sNames, Origin, Role};

pub(super) const DEFAULT_CAPACITY: usize = 4096;
/// The CLI's default (`--tombstone-ttl 24h`), for tests.
#[cfg(test)]
pub(super) const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How a cached container was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Cached {
    /// The container exists (or existed at the last event).
    Live(Arc<ContainerMetadata>),
    /// The container was removed; this is what it was.
    Tombstone(Arc<ContainerMetadata>),
}

/// Bounded: at most `capacity` containers, live or removed. Past that, the oldest tombstone
/// goes first, then the least recently updated container.
pub(super) struct MetadataCache {
    entries: HashMap<String, Entry>,
    capacity: usize,
    tombstone_ttl: Duration,
}

struct Entry {
    meta: Arc<ContainerMetadata>,
    removed_at: Option<Instant>,
    updated_at: Instant,
}

impl MetadataCache {
    pub(super) fn new(capacity: usize, tombstone_ttl: Duration) -> Self {
        MetadataCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            tombstone_ttl,
        }
    }

    /// Records what a runtime said. A partial answer (an event's attributes) does not erase
    /// what a fuller one (an inspect) already told: fields it lacks keep their values.
    pub(super) fn upsert(&mut self, meta: ContainerMetadata, now: Instant) {
        let meta = match self.entries.remove(&meta.id) {
            Some(old) => merge(&old.meta, meta),
            None => meta,
        };
        self.entries.insert(
            meta.id.clone(),
            Entry {
                meta: Arc::new(meta),
                removed_at: None,
                updated_at: now,
            },
        );
        self.evict(now);
    }

    /// The container was removed: keep it as a tombstone for the configured time.
    pub(super) fn removed(&mut self, id: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(id) {
            entry.removed_at.get_or_insert(now);
            entry.updated_at = now;
        }
        self.evict(now);
    }

    pub(super) fn get(&self, id: &str, now: Instant) -> Option<Cached> {
        let entry = self.entries.get(id)?;
        match entry.removed_at {
            None => Some(Cached::Live(Arc::clone(&entry.meta))),
            Some(at) if now.duration_since(at) <= self.tombstone_ttl => {
                Some(Cached::Tombstone(Arc::clone(&entry.meta)))
            }
            Some(_) => None,
        }
    }

    /// The pod with this uid, as its sandbox or the kubelet's log directory names it, else as
    /// any of its containers does: a kill in the pod's own cgroup names the pod. Live entries
    /// first. A scan: pods are looked up only for such kills, and the cache is bounded.
    pub(super) fn pod(&self, uid: &str, now: Instant) -> Option<Cached> {
        let (_, entry) = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.meta.k8s.pod_uid.as_deref() == Some(uid))
            .filter(|(_, entry)| entry.meta.k8s.pod_name.is_some())
            .min_by_key(|(id, entry)| {
                (
                    entry.removed_at.is_some(),
                    entry.meta.role == Role::Workload,
                    std::cmp::Reverse(entry.updated_at),
                    id.as_str(),
                )
            })?;
        self.get(&entry.meta.id, now)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    fn evict(&mut self, now: Instant) {
        let ttl = self.tombstone_ttl;
        self.entries.retain(|_, entry| {
            entry
                .removed_at
                .is_none_or(|at| now.duration_since(at) <= ttl)
        });
        while self.entries.len() > self.capacity {
            // Tombstones first (oldest removal), then the stalest live entry.
            let victim = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| (entry.removed_at.is_none(), entry.updated_at))
                .map(|(id, _)| id.clone());
            match victim {
                Some(id) => self.entries.remove(&id),
                None => break,
            };
        }
    }
}

/// What is known after `new` about a container of which `old` was known: the newer word wins,
/// with what it leaves out kept from the older one, except that the state on disk does not
/// overrule the runtime's API (they say the same; the API says it as it happens).
fn merge(old: &ContainerMetadata, new: ContainerMetadata) -> ContainerMetadata {
    if old.origin == Origin::Api && new.origin == Origin::State {
        overlay(old.clone(), &new)
    } else {
        overlay(new, old)
    }
}

/// `primary`, with what it leaves out taken from `secondary`.
fn overlay(primary: ContainerMetadata, secondary: &ContainerMetadata) -> ContainerMetadata {
    let ContainerMetadata {
        id,
        name,
        image,
        runtime,
        role,
        main_pid,
        memory_limit_bytes,
        restart_policy,
        restart_count,
        k8s,
        compose,
        origin,
        labels,
    } = primary;
    ContainerMetadata {
        id,
        name: if name.is_empty() {
            secondary.name.clone()
        } else {
            name
        },
        image: image.or_else(|| secondary.image.clone()),
        runtime,
        role,
        main_pid: main_pid.or(secondary.main_pid),
        memory_limit_bytes: memory_limit_bytes.or(secondary.memory_limit_bytes),
        restart_policy: restart_policy.or_else(|| secondary.restart_policy.clone()),
        restart_count: restart_count.or(secondary.restart_count),
        k8s: K8sNames {
            pod_name: k8s.pod_name.or_else(|| secondary.k8s.pod_name.clone()),
            pod_uid: k8s.pod_uid.or_else(|| secondary.k8s.pod_uid.clone()),
            namespace: k8s.namespace.or_else(|| secondary.k8s.namespace.clone()),
            container_name: k8s
                .container_name
                .or_else(|| secondary.k8s.container_name.clone()),
            restart_count: k8s.restart_count.or(secondary.k8s.restart_count),
        },
        compose: ComposeNames {
            project: compose
                .project
                .or_else(|| secondary.compose.project.clone()),
            service: compose
                .service
                .or_else(|| secondary.compose.service.clone()),
            number: compose.number.or(secondary.compose.number),
        },
        origin,
        labels: if labels.is_empty() {
            secondary.labels.clone()
        } else {
            labels
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, name: &str) -> ContainerMetadata {
        ContainerMetadata::new(id, name, "podman", [])
    }

    #[test]
    fn a_removed_container_is_a_tombstone_until_its_time_is_up() {
        let start = Instant::now();
        let mut cache = MetadataCache::new(8, Duration::from_secs(60));
        cache.upsert(meta("a", "web"), start);
        assert!(matches!(cache.get("a", start), Some(Cached::Live(m)) if m.name == "web"));

        cache.removed("a", start);
        let later = start + Duration::from_secs(59);
        assert!(matches!(cache.get("a", later), Some(Cached::Tombstone(m)) if m.name == "web"));
        assert_eq!(cache.get("a", start + Duration::from_secs(61)), None);
    }

    #[test]
    fn an_event_does_not_erase_what_an_inspect_told() {
        let now = Instant::now();
        let mut cache = MetadataCache::new(8, DEFAULT_TOMBSTONE_TTL);
        let mut inspected = meta("a", "web");
        inspected.main_pid = Some(42);
        inspected.memory_limit_bytes = Some(1 << 20);
        cache.upsert(inspected, now);
        let mut from_event = meta("a", "web-renamed");
        from_event.image = Some("img".to_owned());
        cache.upsert(from_event, now);

        let Some(Cached::Live(merged)) = cache.get("a", now) else {
            panic!("still cached");
        };
        assert_eq!(merged.name, "web-renamed");
        assert_eq!(merged.image.as_deref(), Some("img"));
        assert_eq!(merged.main_pid, Some(42));
        assert_eq!(merged.memory_limit_bytes, Some(1 << 20));
    }

    #[test]
    fn the_state_on_disk_does_not_overrule_the_api() {
        let now = Instant::now();
        let mut cache = MetadataCache::new(8, DEFAULT_TOMBSTONE_TTL);
        let mut from_api = meta("a", "web");
        from_api.main_pid = Some(42);
        cache.upsert(from_api, now);
        let mut from_state = meta("a", "web-on-disk");
        from_state.origin = Origin::State;
        from_state.main_pid = Some(7);
        from_state.restart_count = Some(3);
        cache.upsert(from_state.clone(), now);
        let Some(Cached::Live(merged)) = cache.get("a", now) else {
            panic!("still cached");
        };
        assert_eq!(merged.origin, Origin::Api);
        assert_eq!((merged.name.as_str(), merged.main_pid), ("web", Some(42)));
        assert_eq!(merged.restart_count, Some(3), "a gap the state fills");

        // The other way round, the API's word replaces the state's.
        let mut cache = MetadataCache::new(8, DEFAULT_TOMBSTONE_TTL);
        cache.upsert(from_state, now);
        cache.upsert(meta("a", "web"), now);
        let Some(Cached::Live(merged)) = cache.get("a", now) else {
            panic!("still cached");
        };
        assert_eq!(merged.origin, Origin::Api);
        assert_eq!((merged.name.as_str(), merged.main_pid), ("web", Some(7)));
    }

    #[test]
    fn a_restarted_container_is_live_again() {
        let now = Instant::now();
        let mut cache = MetadataCache::new(8, DEFAULT_TOMBSTONE_TTL);
        cache.upsert(meta("a", "web"), now);
        cache.removed("a", now);
        cache.upsert(meta("a", "web"), now);
        assert!(matches!(cache.get("a", now), Some(Cached::Live(_))));
    }

    #[test]
    fn the_cache_is_bounded_and_sheds_tombstones_first() {
        let start = Instant::now();
        let mut cache = MetadataCache::new(3, DEFAULT_TOMBSTONE_TTL);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            cache.upsert(meta(id, id), start + Duration::from_secs(i as u64));
        }
        // `c` is the newest but removed: it goes before the older live ones.
        cache.removed("c", start + Duration::from_secs(3));
        cache.upsert(meta("d", "d"), start + Duration::from_secs(4));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("c", start + Duration::from_secs(4)), None);
        // Then the stalest live entry.
        cache.upsert(meta("e", "e"), start + Duration::from_secs(5));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get("a", start + Duration::from_secs(5)), None);
        assert!(cache.get("b", start + Duration::from_secs(5)).is_some());

        for i in 0..10_000 {
            cache.upsert(meta(&format!("x{i}"), "x"), start + Duration::from_secs(6));
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn a_pod_is_found_by_its_uid_its_sandbox_first() {
        let now = Instant::now();
        let mut cache = MetadataCache::new(8, DEFAULT_TOMBSTONE_TTL);
        let in_pod = |id: &str, role: Role| {
            let mut meta = meta(id, id);
            meta.role = role;
            meta.k8s.pod_uid = Some("uid-1".to_owned());
            meta.k8s.pod_name = Some(format!("pod-of-{id}"));
            meta
        };
        cache.upsert(in_pod("worker", Role::Workload), now);
        assert!(matches!(cache.pod("uid-1", now), Some(Cached::Live(m)) if m.id == "worker"));
        cache.upsert(in_pod("sandbox", Role::PodSandbox), now);
        assert!(matches!(cache.pod("uid-1", now), Some(Cached::Live(m)) if m.id == "sandbox"));
        cache.removed("sandbox", now);
        assert!(matches!(cache.pod("uid-1", now), Some(Cached::Live(m)) if m.id == "worker"));
        cache.removed("worker", now);
        assert!(matches!(cache.pod("uid-1", now), Some(Cached::Tombstone(m)) if m.id == "sandbox"));
        assert_eq!(cache.pod("uid-2", now), None);
    }

    #[test]
    fn removing_an_unknown_container_is_harmless() {
        let now = Instant::now();
        let mut cache = MetadataCache::new(2, DEFAULT_TOMBSTONE_TTL);
        cache.removed("nobody", now);
        assert_eq!(cache.len(), 0);
    }
}
