//! Which cgroups the recorder samples, decided before any kill: whose limit a kill may hit and
//! who would be in its snapshot. The domains are the cgroups with a memory limit (fullest
//! first) and the host; a domain's members are itself and its biggest entries (containers,
//! units, pods' containers: what a snapshot lists), the host's its biggest entries. One walk of
//! the hierarchy, bounded in directories and depth, finds them all.

use std::collections::HashMap;

use crate::observe::cgroupfs::MemoryHierarchy;
use crate::observe::snapshot::{CgroupTree, Scope, walk};

/// Domains watched at most, besides the host.
pub const MAX_DOMAINS: usize = 32;
/// Cgroups watched per domain, the domain itself included: what a kill's timeline shows.
pub const PER_DOMAIN: usize = 8;
/// Cgroups watched at most, in all.
pub const MAX_WATCHED: usize = 64;
/// Directories one discovery visits at most, and how deep.
const MAX_DIRS: usize = 2048;
const MAX_DEPTH: usize = 6;
/// Directories watched for new cgroups at most.
pub const MAX_WATCHED_DIRS: usize = 512;

/// The hierarchy as one walk found it; the root is `""`.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: HashMap<String, Node>,
    /// Paths in the order visited (parents before children).
    order: Vec<String>,
}

#[derive(Debug, Default)]
struct Node {
    children: Vec<String>,
    usage_bytes: Option<u64>,
    limit_bytes: Option<u64>,
}

impl Tree {
    pub fn read(memory: &MemoryHierarchy) -> Tree {
        let mut tree = Tree::default();
        let mut stack = vec![(String::new(), 0)];
        while let Some((path, depth)) = stack.pop() {
            if tree.order.len() == MAX_DIRS {
                break;
            }
            let children = if depth < MAX_DEPTH {
                memory.children(&path)
            } else {
                Vec::new()
            };
            stack.extend(children.iter().map(|child| (child.clone(), depth + 1)));
            let node = Node {
                children,
                usage_bytes: memory.usage_bytes(&path),
                limit_bytes: if path.is_empty() {
                    None
                } else {
                    memory.limit_bytes(&path)
                },
            };
            tree.order.push(path.clone());
            tree.nodes.insert(path, node);
        }
        tree
    }

    #[cfg(test)]
    fn fake(cgroups: &[(&str, u64, Option<u64>)]) -> Tree {
        let mut tree = Tree::default();
        tree.order.push(String::new());
        tree.nodes.insert(String::new(), Node::default());
        for &(path, usage, limit) in cgroups {
            let parent = &path[..path.rfind('/').unwrap_or(0)];
            tree.nodes
                .get_mut(parent)
                .expect("parents come first")
                .children
                .push(path.to_owned());
            tree.order.push(path.to_owned());
            tree.nodes.insert(
                path.to_owned(),
                Node {
                    children: Vec::new(),
                    usage_bytes: Some(usage),
                    limit_bytes: limit,
                },
            );
        }
        tree
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

impl CgroupTree for Tree {
    fn children(&self, path: &str) -> Vec<String> {
        let key = if path == "/" { "" } else { path };
        self.nodes
            .get(key)
            .map(|node| node.children.clone())
            .unwrap_or_default()
    }

    fn usage_bytes(&self, path: &str) -> Option<u64> {
        self.nodes.get(path)?.usage_bytes
    }
}

/// What to sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The host's biggest entries.
    pub host: Vec<String>,
    /// Cgroups with a limit, fullest first.
    pub domains: Vec<DomainPlan>,
    /// Directories in which a new cgroup calls for a new discovery.
    pub dirs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainPlan {
    pub path: String,
    pub limit_bytes: u64,
    /// The domain itself, then its biggest entries.
    pub members: Vec<String>,
}

impl Plan {
    /// Every cgroup to sample, each once.
    pub fn watched(&self) -> Vec<String> {
        let mut paths: Vec<String> = Vec::new();
        let all = self
            .host
            .iter()
            .chain(self.domains.iter().flat_map(|domain| &domain.members));
        for path in all {
            if !paths.contains(path) {
                paths.push(path.clone());
            }
        }
        paths
    }
}

pub fn plan(tree: &Tree) -> Plan {
    let biggest = |scope: &Scope, count: usize| -> Vec<String> {
        walk(tree, scope)
            .entries
            .into_iter()
            .take(count)
            .map(|entry| entry.path)
            .collect()
    };
    let host = biggest(&Scope::Host, PER_DOMAIN);
    let mut limited: Vec<(&String, u64, u64)> = tree
        .order
        .iter()
        .filter_map(|path| {
            let node = &tree.nodes[path];
            Some((path, node.limit_bytes?, node.usage_bytes.unwrap_or(0)))
        })
        .collect();
    // Fullest first: the likeliest to be the next kill's domain.
    limited.sort_by(|a, b| {
        let fill = |&(_, limit, usage): &(&String, u64, u64)| usage as f64 / limit.max(1) as f64;
        fill(b).total_cmp(&fill(a))
    });
    let mut watched = host.len();
    let mut domains = Vec::new();
    for (path, limit_bytes, _) in limited.into_iter().take(MAX_DOMAINS) {
        let mut members = vec![path.clone()];
        members.extend(biggest(&Scope::Cgroup(path.clone()), PER_DOMAIN - 1));
        let new = members
            .iter()
            .filter(|member| !host.contains(member))
            .count();
        if watched + new > MAX_WATCHED {
            break;
        }
        watched += new;
        domains.push(DomainPlan {
            path: path.clone(),
            limit_bytes,
            members,
        });
    }
    let dirs = tree.order.iter().take(MAX_WATCHED_DIRS).cloned().collect();
    Plan {
        host,
        domains,
        dirs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "/docker/1111111111111111111111111111111111111111111111111111111111111111";
    const C2: &str = "/docker/2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn limits_make_domains_and_their_biggest_children_their_members() {
        let tree = Tree::fake(&[
            ("/parent", 300, Some(1000)),
            ("/parent/grower", 200, None),
            ("/parent/steady", 100, None),
            ("/docker", 900, None),
            (C1, 800, Some(900)),
            (C2, 100, None),
        ]);
        let plan = plan(&tree);
        assert_eq!(plan.host, [C1, "/parent", C2]);
        let domains: Vec<(&str, &[String])> = plan
            .domains
            .iter()
            .map(|d| (d.path.as_str(), d.members.as_slice()))
            .collect();
        assert_eq!(
            domains,
            [
                // 89 % full before 30 %.
                (C1, &[C1.to_owned()][..]),
                (
                    "/parent",
                    &[
                        "/parent".to_owned(),
                        "/parent/grower".to_owned(),
                        "/parent/steady".to_owned()
                    ][..]
                ),
            ]
        );
        assert_eq!(
            plan.watched(),
            [C1, "/parent", C2, "/parent/grower", "/parent/steady"]
        );
        assert_eq!(plan.dirs.len(), tree.len());
    }

    #[test]
    fn the_number_watched_is_bounded() {
        let pods: Vec<(String, u64, Option<u64>)> = (0..100)
            .flat_map(|pod| {
                let pod_path = format!("/kubepods/pod{pod:04}");
                let children =
                    (0..10).map(move |c| (format!("/kubepods/pod{pod:04}/c{c}"), 10, Some(1000)));
                std::iter::once((pod_path, 100, Some(1000 + pod))).chain(children)
            })
            .collect();
        let mut cgroups: Vec<(&str, u64, Option<u64>)> = vec![("/kubepods", 10_000, None)];
        cgroups.extend(pods.iter().map(|(p, u, l)| (p.as_str(), *u, *l)));
        let plan = plan(&Tree::fake(&cgroups));
        assert!(plan.watched().len() <= MAX_WATCHED);
        assert!(plan.domains.len() <= MAX_DOMAINS);
        assert!(
            plan.domains
                .iter()
                .all(|domain| domain.members.len() <= PER_DOMAIN)
        );
        assert!(plan.dirs.len() <= MAX_WATCHED_DIRS);
    }
}
