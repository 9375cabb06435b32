//! The metrics' labels: who a kill or a SIGKILL hit, as a few bounded, printable strings.
//!
//! Container, pod and namespace names are labels; pids, cgroup ids and paths never are. A
//! family keeps at most [`MAX_LABEL_SETS`] distinct label sets; past that, new names are
//! counted under `container="other"` so a host that churns through containers cannot grow the
//! agent's memory or the scraper's series without bound.

use std::collections::HashSet;
use std::hash::Hash;

use prometheus_client::encoding::EncodeLabelSet;

use crate::attribute::{Attribution, DomainKind};

/// Distinct label sets kept per family before new names fold into `other`.
pub const MAX_LABEL_SETS: usize = 1000;

/// A label value's length at most, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;

/// The container a label set is folded into past the cap.
pub const OTHER: &str = "other";

/// `oomtrace_oom_kills_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KillLabels {
    pub container: String,
    pub pod: String,
    pub namespace: String,
    /// `cgroup`, `host` or `unknown`: whose memory ran out.
    pub domain_kind: &'static str,
    /// The capture tier, which decides how well `domain_kind` is known.
    pub tier: &'static str,
}

/// `oomtrace_sigkills_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SigkillLabels {
    pub container: String,
    pub pod: String,
    pub namespace: String,
    /// `kernel`, `process` or `unknown`.
    pub sender_kind: &'static str,
}

/// `oomtrace_attribution_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub reason: &'static str,
}

/// `oomtrace_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub tier: &'static str,
}

/// The container, pod and namespace of one party; empty where unknown.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct Names {
    pub container: String,
    pub pod: String,
    pub namespace: String,
}

impl Names {
    /// The Kubernetes container name where the kubelet labelled it, else the runtime's, else
    /// the container id from the cgroup path (12 characters, as `docker ps` shows it).
    pub fn of(attribution: Option<&Attribution>) -> Self {
        let Some(attribution) = attribution else {
            return Names::default();
        };
        let meta = attribution.container.as_deref();
        let container = meta
            .and_then(|meta| meta.k8s.container_name.as_deref())
            .or(meta
                .map(|meta| meta.name.as_str())
                .filter(|name| !name.is_empty()))
            .map(str::to_owned)
            .or_else(|| {
                let id = &attribution.identity.container.as_ref()?.id;
                Some(id.get(..12).unwrap_or(id).to_owned())
            })
            .unwrap_or_default();
        let k8s = meta.map(|meta| &meta.k8s);
        Names {
            container: label_value(&container),
            pod: label_value(k8s.and_then(|k8s| k8s.pod_name.as_deref()).unwrap_or("")),
            namespace: label_value(k8s.and_then(|k8s| k8s.namespace.as_deref()).unwrap_or("")),
        }
    }

    /// What a label set past the cap is counted as.
    fn other() -> Self {
        Names {
            container: OTHER.to_owned(),
            pod: String::new(),
            namespace: String::new(),
        }
    }
}

pub fn domain_kind(kind: DomainKind) -> &'static str {
    match kind {
        DomainKind::Cgroup => "cgroup",
        DomainKind::Host => "host",
        DomainKind::Unknown => "unknown",
    }
}

/// Names come from containers' owners: control characters become `_`, and the value is cut
/// at a character boundary to [`MAX_LABEL_BYTES`].
pub fn label_value(text: &str) -> String {
    let mut value = String::with_capacity(text.len().min(MAX_LABEL_BYTES));
    for c in text.chars() {
        let c = if c.is_control() { '_' } else { c };
        if value.len() + c.len_utf8() > MAX_LABEL_BYTES {
            break;
        }
        value.push(c);
    }
    value
}

/// The label sets a family has seen, up to [`MAX_LABEL_SETS`].
#[derive(Debug)]
pub struct LabelBudget<K> {
    seen: HashSet<K>,
    limit: usize,
    /// Label sets folded into `other` so far.
    pub folded: u64,
}

impl<K: Hash + Eq + Clone> LabelBudget<K> {
    pub fn new(limit: usize) -> Self {
        LabelBudget {
            seen: HashSet::new(),
            limit,
            folded: 0,
        }
    }

    /// `names` as they are while there is room or they were seen before; else `other`.
    /// `key` builds the label set for a choice of names.
    pub fn admit(&mut self, names: Names, key: impl Fn(Names) -> K) -> K {
        let labels = key(names);
        if self.seen.contains(&labels) {
            return labels;
        }
        if self.seen.len() < self.limit {
            self.seen.insert(labels.clone());
            return labels;
        }
        self.folded += 1;
        key(Names::other())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::Source;
    use crate::attribute::fixtures;
    use crate::cgroup_path;

    #[test]
    fn a_kubernetes_container_is_named_by_the_kubelet_labels() {
        let mut web = fixtures::web(Source::Cache);
        let mut meta = (*web.container.take().unwrap()).clone();
        meta.k8s.container_name = Some("nginx".to_owned());
        web.container = Some(std::sync::Arc::new(meta));
        assert_eq!(
            Names::of(Some(&web)),
            Names {
                container: "nginx".to_owned(),
                pod: "web-0".to_owned(),
                namespace: "shop".to_owned(),
            }
        );
    }

    #[test]
    fn a_container_without_a_kubernetes_container_label_is_named_by_its_runtime_name() {
        assert_eq!(
            Names::of(Some(&fixtures::web(Source::Cache))),
            Names {
                container: "web".to_owned(),
                pod: "web-0".to_owned(),
                namespace: "shop".to_owned(),
            }
        );
    }

    #[test]
    fn an_unnamed_container_gets_its_short_id_and_the_rest_stays_empty() {
        let path = fixtures::container_path();
        let bare = Attribution {
            path: path.clone(),
            identity: cgroup_path::parse(&path),
            container: None,
            source: Source::Path,
            warning: None,
        };
        assert_eq!(
            Names::of(Some(&bare)),
            Names {
                container: fixtures::ID[..12].to_owned(),
                ..Names::default()
            }
        );
        let unit = "/system.slice/nginx.service";
        let service = Attribution {
            path: unit.to_owned(),
            identity: cgroup_path::parse(unit),
            container: None,
            source: Source::Path,
            warning: None,
        };
        assert_eq!(Names::of(Some(&service)), Names::default());
        assert_eq!(Names::of(None), Names::default());
    }

    #[test]
    fn label_values_are_printable_and_bounded() {
        assert_eq!(label_value("web\n\x1b[2J"), "web__[2J");
        assert_eq!(label_value("ünïcode"), "ünïcode");
        let long = label_value(&"é".repeat(200));
        assert_eq!(long.len(), MAX_LABEL_BYTES);
        assert!(long.chars().all(|c| c == 'é'));
        assert_eq!(label_value(&"x".repeat(129)).len(), MAX_LABEL_BYTES);
    }

    #[test]
    fn past_the_cap_new_names_fold_into_other_and_known_ones_stay() {
        let mut budget = LabelBudget::new(3);
        let key = |names: Names| names.container;
        let named = |name: &str| Names {
            container: name.to_owned(),
            pod: "p".to_owned(),
            namespace: "n".to_owned(),
        };
        for name in ["a", "b", "c"] {
            assert_eq!(budget.admit(named(name), key), name);
        }
        assert_eq!(budget.admit(named("d"), key), OTHER);
        assert_eq!(budget.admit(named("e"), key), OTHER);
        assert_eq!(
            budget.admit(named("a"), key),
            "a",
            "a known set keeps counting"
        );
        assert_eq!(budget.folded, 2);
        assert_eq!(budget.seen.len(), 3);
    }
}
