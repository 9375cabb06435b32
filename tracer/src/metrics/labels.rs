//! The metrics' labels: who a kill or a SIGKILL hit, as a few bounded, printable strings.
//!
//! Container, pod and namespace names are labels; pids, cgroup ids and paths never are. A
//! family keeps at most [`MAX_LABEL_SETS`] distinct label sets; past that, new names are
//! counted under `container="other"` so a host that churns through containers cannot grow the
//! agent's memory or the scraper's series without bound.

use std::collections::HashSet;
use std::hash::Hash;

use prometheus_client::encoding::EncodeLabelSet;

use crate::record::party;

/// Distinct label sets kept per family before new names fold into `other`.
pub(crate) const MAX_LABEL_SETS: usize = 1000;

/// A label value's length at most, in bytes.
pub(crate) const MAX_LABEL_BYTES: usize = 128;

/// The container a label set is folded into past the cap.
pub(crate) const OTHER: &str = "other";

/// `oomtrace_oom_kills_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KillLabels {
    /// The victim's.
    #[prometheus(flatten)]
    pub names: Names,
    /// `cgroup`, `host` or `unknown`: whose memory ran out.
    pub domain_kind: &'static str,
    /// `true`, `false` or `unknown`: whether the victim was its container's main process. A
    /// child's kill leaves the container running, and `OOMKilled` says nothing of it.
    pub main_process: &'static str,
    /// The capture tier, which decides how well `domain_kind` is known.
    pub tier: &'static str,
}

/// `oomtrace_oom_kills_filled_by_total`: the victim's names, and what no process holds that
/// filled its limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FilledLabels {
    #[prometheus(flatten)]
    pub names: Names,
    /// `tmpfs`, `page_cache` or `kernel`.
    pub filled_by: &'static str,
}

/// `oomtrace_host_oom_kills_total`: who set off a host-wide OOM.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub trigger_container: String,
    pub trigger_pod: String,
    pub trigger_namespace: String,
    /// The command name of the task whose allocation failed: names the trigger outside
    /// containers, and which program within one.
    pub trigger_comm: String,
}

/// `oomtrace_sigkills_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SigkillLabels {
    /// The target's.
    #[prometheus(flatten)]
    pub names: Names,
    /// `kernel`, `process` or `unknown`.
    pub sender_kind: &'static str,
}

/// `oomtrace_attribution_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabels {
    pub reason: &'static str,
}

/// `oomtrace_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BuildLabels {
    pub version: &'static str,
    pub tier: &'static str,
}

/// The container, pod, namespace and Compose project and service of one party; empty where
/// unknown. The labels of `oomtrace_restart_loop` and `oomtrace_last_oom_kill_timestamp_seconds`.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Names {
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub compose_project: String,
    pub compose_service: String,
}

impl Names {
    /// The Kubernetes container name where the kubelet labelled it, else the runtime's, else
    /// the container id from the cgroup path (12 characters, as `docker ps` shows it).
    pub fn of(names: &party::Names) -> Self {
        let container = names
            .k8s
            .as_ref()
            .and_then(|k8s| k8s.container.as_ref())
            .map(|container| container.name.as_str())
            .or(names.container_name())
            .map(str::to_owned)
            .or_else(|| {
                let id = &names.container.as_ref()?.id;
                Some(id.get(..12).unwrap_or(id).to_owned())
            })
            .unwrap_or_default();
        let compose = names
            .container
            .as_ref()
            .and_then(|container| container.compose.as_ref());
        Names {
            container: label_value(&container),
            pod: label_value(
                names
                    .pod()
                    .and_then(|pod| pod.name.as_deref())
                    .unwrap_or(""),
            ),
            namespace: label_value(names.namespace().unwrap_or("")),
            compose_project: label_value(
                compose
                    .and_then(|compose| compose.project.as_deref())
                    .unwrap_or(""),
            ),
            compose_service: label_value(
                compose
                    .and_then(|compose| compose.service.as_deref())
                    .unwrap_or(""),
            ),
        }
    }

    /// What a label set past the cap is counted as.
    pub fn other() -> Self {
        Names {
            container: OTHER.to_owned(),
            ..Names::default()
        }
    }
}

impl TriggerLabels {
    pub fn new(names: Names, comm: &str) -> Self {
        TriggerLabels {
            trigger_container: names.container,
            trigger_pod: names.pod,
            trigger_namespace: names.namespace,
            trigger_comm: label_value(comm),
        }
    }
}

pub(crate) fn main_process(main_process: Option<bool>) -> &'static str {
    match main_process {
        Some(true) => "true",
        Some(false) => "false",
        None => "unknown",
    }
}

/// Names come from containers' owners: control characters become `_`, and the value is cut
/// at a character boundary to [`MAX_LABEL_BYTES`].
pub(crate) fn label_value(text: &str) -> String {
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
pub(crate) struct LabelBudget<K> {
    seen: HashSet<K>,
    limit: usize,
    /// Label sets folded into `other` so far.
    pub folded: u64,
}

impl<K: Hash + Eq + Clone> LabelBudget<K> {
    pub(crate) fn new(limit: usize) -> Self {
        LabelBudget {
            seen: HashSet::new(),
            limit,
            folded: 0,
        }
    }

    /// `labels` while there is room or they were seen before; else `other()`, the same label
    /// set with its names replaced by `other`.
    pub(crate) fn admit(&mut self, labels: K, other: impl FnOnce() -> K) -> K {
        if self.seen.contains(&labels) {
            return labels;
        }
        if self.seen.len() < self.limit {
            self.seen.insert(labels.clone());
            return labels;
        }
        self.folded += 1;
        other()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{Attribution, Source, fixtures};
    use crate::cgroup_path;

    /// The labels of a party `attribution` names, as the record carries its names.
    fn of(attribution: Option<&Attribution>) -> Names {
        Names::of(&crate::record::build::names(attribution, None))
    }

    #[test]
    fn a_kubernetes_container_is_named_by_the_kubelet_labels() {
        let mut web = fixtures::web(Source::Cache);
        let mut meta = (*web.container.take().unwrap()).clone();
        meta.k8s.container_name = Some("nginx".to_owned());
        web.container = Some(std::sync::Arc::new(meta));
        assert_eq!(
            of(Some(&web)),
            Names {
                container: "nginx".to_owned(),
                pod: "web-0".to_owned(),
                namespace: "shop".to_owned(),
                ..Names::default()
            }
        );
    }

    #[test]
    fn a_container_without_a_kubernetes_container_label_is_named_by_its_runtime_name() {
        assert_eq!(
            of(Some(&fixtures::web(Source::Cache))),
            Names {
                container: "web".to_owned(),
                pod: "web-0".to_owned(),
                namespace: "shop".to_owned(),
                ..Names::default()
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
            of(Some(&bare)),
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
        assert_eq!(of(Some(&service)), Names::default());
        assert_eq!(of(None), Names::default());
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
    fn a_compose_container_is_labelled_with_its_project_and_service() {
        let mut web = fixtures::web(Source::Cache);
        let meta = crate::attribute::runtime::ContainerMetadata::new(
            fixtures::ID,
            "/shop_web_1",
            "docker",
            [
                ("com.docker.compose.project", "shop"),
                ("com.docker.compose.service", "web\n"),
                ("com.docker.compose.container-number", "1"),
            ]
            .map(|(key, value)| (key.to_owned(), value.to_owned())),
        );
        web.container = Some(std::sync::Arc::new(meta));
        assert_eq!(
            of(Some(&web)),
            Names {
                container: "shop_web_1".to_owned(),
                compose_project: "shop".to_owned(),
                compose_service: "web_".to_owned(),
                ..Names::default()
            }
        );
    }

    #[test]
    fn past_the_cap_new_names_fold_into_other_and_known_ones_stay() {
        let mut budget = LabelBudget::new(3);
        let other = || OTHER.to_owned();
        for name in ["a", "b", "c"] {
            assert_eq!(budget.admit(name.to_owned(), other), name);
        }
        assert_eq!(budget.admit("d".to_owned(), other), OTHER);
        assert_eq!(budget.admit("e".to_owned(), other), OTHER);
        assert_eq!(
            budget.admit("a".to_owned(), other),
            "a",
            "a known set keeps counting"
        );
        assert_eq!(budget.folded, 2);
        assert_eq!(budget.seen.len(), 3);
    }
}
