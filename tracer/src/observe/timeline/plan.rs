//! What the recorder samples, decided from the tree before any kill: every cgroup with a memory
//! limit is a domain a kill may hit, sampled with its biggest entries (containers, units, a
//! pod's containers: what its snapshot lists); the host's biggest entries stand for a host-wide
//! OOM. Within a bound on the cgroups watched, which grows the recorder's memory linearly; what
//! the bound leaves out is named, so a kill there says so.

use std::collections::HashMap;

use super::NotCovered;
use super::tree::{CgroupId, Ranked, Tree};
use crate::observe::snapshot::{Scope, walk};

/// Cgroups sampled per domain, the domain itself included: what a kill's timeline shows.
pub(super) const PER_DOMAIN: usize = 8;
/// The host's biggest entries sampled for a host-wide OOM.
pub(super) const HOST_MEMBERS: usize = 8;

/// What to sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// The host's biggest entries.
    pub host: Vec<CgroupId>,
    /// Every cgroup with a limit, fullest first: the likeliest to be the next kill's domain.
    pub domains: Vec<DomainPlan>,
    /// The cgroups to sample, each once, within the bound: the host's entries, then every
    /// domain itself, then the domains' members.
    pub watched: Vec<CgroupId>,
    /// Cgroups the plan wants and the bound leaves out.
    pub not_covered: HashMap<CgroupId, NotCovered>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct DomainPlan {
    pub path: CgroupId,
    pub limit_bytes: u64,
    /// The domain itself, then its biggest entries.
    pub members: Vec<CgroupId>,
}

/// The plan for `tree`, with each cgroup's `usage` now, watching at most `bound` cgroups.
pub(super) fn plan(tree: &Tree, usage: &HashMap<CgroupId, u64>, bound: usize) -> Plan {
    let ranked = Ranked { tree, usage };
    let biggest = |scope: &Scope, count: usize| -> Vec<CgroupId> {
        walk(&ranked, scope)
            .entries
            .into_iter()
            .filter_map(|entry| tree.id(&entry.path))
            .take(count)
            .collect()
    };
    let host = biggest(&Scope::Host, HOST_MEMBERS);
    let mut limited: Vec<(&CgroupId, u64)> = tree.limited().collect();
    let fill = |&(path, limit): &(&CgroupId, u64)| {
        usage.get(path).copied().unwrap_or(0) as f64 / limit.max(1) as f64
    };
    // Fullest first; equally full, by path, so that plans compare equal.
    limited.sort_by(|a, b| fill(b).total_cmp(&fill(a)).then_with(|| a.0.cmp(b.0)));
    let domains: Vec<DomainPlan> = limited
        .into_iter()
        .map(|(path, limit_bytes)| {
            let mut members = vec![path.clone()];
            if !tree.children_of(path).is_empty() {
                let below = biggest(&Scope::Cgroup(path.to_string()), PER_DOMAIN - 1);
                members.extend(below.into_iter().filter(|member| member != path));
            }
            DomainPlan {
                path: path.clone(),
                limit_bytes,
                members,
            }
        })
        .collect();

    let mut watched: Vec<CgroupId> = Vec::new();
    let mut seen: std::collections::HashSet<CgroupId> = std::collections::HashSet::new();
    let mut not_covered = HashMap::new();
    let wanted = host
        .iter()
        .chain(domains.iter().map(|domain| &domain.path))
        .chain(domains.iter().flat_map(|domain| &domain.members[1..]));
    for path in wanted {
        if !seen.insert(path.clone()) {
            continue;
        }
        if watched.len() < bound {
            watched.push(path.clone());
        } else {
            not_covered.insert(path.clone(), NotCovered::CgroupBound { max: bound });
        }
    }
    Plan {
        host,
        domains,
        watched,
        not_covered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::timeline::tree::fake::FakeHierarchy;

    const C1: &str = "/docker/1111111111111111111111111111111111111111111111111111111111111111";
    const C2: &str = "/docker/2222222222222222222222222222222222222222222222222222222222222222";

    fn usage_of(tree: &Tree) -> HashMap<CgroupId, u64> {
        tree.paths()
            .filter_map(|path| Some((path.clone(), tree.memory().usage_bytes(path)?)))
            .collect()
    }

    fn names(paths: &[CgroupId]) -> Vec<&str> {
        paths.iter().map(|path| &**path).collect()
    }

    #[test]
    fn every_limit_makes_a_domain_and_its_biggest_children_its_members() {
        let fake = FakeHierarchy::new("plan");
        fake.cgroup("/parent", 300, Some(1000));
        fake.cgroup("/parent/grower", 200, None);
        fake.cgroup("/parent/steady", 100, None);
        fake.cgroup("/docker", 900, None);
        fake.cgroup(C1, 800, Some(900));
        fake.cgroup(C2, 100, None);
        let tree = Tree::walk(fake.memory(), 100);
        let plan = plan(&tree, &usage_of(&tree), 100);
        assert_eq!(names(&plan.host), [C1, "/parent", C2]);
        let domains: Vec<(&str, Vec<&str>)> = plan
            .domains
            .iter()
            .map(|d| (&*d.path, names(&d.members)))
            .collect();
        assert_eq!(
            domains,
            [
                // 89 % full before 30 %.
                (C1, vec![C1]),
                (
                    "/parent",
                    vec!["/parent", "/parent/grower", "/parent/steady"]
                ),
            ]
        );
        assert_eq!(
            names(&plan.watched),
            [C1, "/parent", C2, "/parent/grower", "/parent/steady"]
        );
        assert!(plan.not_covered.is_empty());
    }

    #[test]
    fn hundreds_of_limits_are_all_domains_and_a_bound_names_what_it_leaves_out() {
        let fake = FakeHierarchy::new("pods");
        fake.cgroup("/kubepods", 100_000, Some(1 << 40));
        for pod in 0..110 {
            let pod_path = format!("/kubepods/pod{pod:03}");
            fake.cgroup(&pod_path, 300, Some(1000 + pod));
            for container in 0..2 {
                fake.cgroup(
                    &format!("{pod_path}/c{container}"),
                    100 - container,
                    Some(600),
                );
            }
        }
        let tree = Tree::walk(fake.memory(), 10_000);
        let usage = usage_of(&tree);
        let plan = plan(&tree, &usage, 10_000);
        // Every pod, every container and kubepods itself.
        assert_eq!(plan.domains.len(), 1 + 110 + 220);
        assert!(plan.not_covered.is_empty());
        let pod = plan
            .domains
            .iter()
            .find(|domain| &*domain.path == "/kubepods/pod007")
            .unwrap();
        assert_eq!(
            names(&pod.members),
            [
                "/kubepods/pod007",
                "/kubepods/pod007/c0",
                "/kubepods/pod007/c1"
            ]
        );
        assert!(
            plan.domains
                .iter()
                .all(|domain| domain.members.len() <= PER_DOMAIN)
        );

        // With room for 100, the fullest limits come first, and the rest are named.
        let bounded = super::plan(&tree, &usage, 100);
        assert_eq!(bounded.watched.len(), 100);
        assert_eq!(bounded.watched.len() + bounded.not_covered.len(), 331);
        assert!(
            bounded
                .not_covered
                .values()
                .all(|why| *why == NotCovered::CgroupBound { max: 100 })
        );
        // Pods are about 1/3 full, kubepods hardly at all: the pods are watched first.
        assert!(
            bounded
                .watched
                .iter()
                .any(|path| &**path == "/kubepods/pod000")
        );
        assert!(bounded.not_covered.contains_key("/kubepods"));
    }
}
