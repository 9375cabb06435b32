//! The memory hierarchy as the recorder knows it: every cgroup directory, its children and its
//! limit. Walked once; then kept current by inotify (a `mkdir`, an `rmdir` and a write to a
//! limit file in cgroupfs notify like any file system), so a new container is seen at once and
//! a host with thousands of cgroups is not walked again and again. Bounded in directories and
//! depth; what lies beyond a bound is counted, and said.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;

use super::files::{DirEvent, Inotify};
use crate::observe::cgroupfs::{CgroupVersion, MemoryHierarchy};
use crate::observe::snapshot::CgroupTree;

/// How deep below the root the recorder looks: Kubernetes' deepest layout (a container under
/// a pod under a QoS class under `kubepods`) is 4.
pub(super) const MAX_DEPTH: usize = 8;
/// Directories looked at again for a limit file that was missing, at most.
const MAX_AWAITING_LIMIT_FILE: usize = 1024;

/// A cgroup path from the hierarchy's root (`/docker/3f…`); the root is `""`.
pub(super) type CgroupId = Arc<str>;

#[derive(Debug)]
struct Node {
    children: Vec<CgroupId>,
    limit_bytes: Option<u64>,
    depth: usize,
}

/// What an update changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    /// Cgroups whose limit was set, changed or lifted, and new cgroups with a limit.
    pub limits: Vec<CgroupId>,
    /// Cgroups gone, each subtree's root and everything below it.
    pub removed: Vec<CgroupId>,
    /// Cgroups came or went: which are the biggest may have changed.
    pub structure: bool,
}

impl Changes {
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.removed.is_empty() && !self.structure
    }
}

/// Why part of the hierarchy is not known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Beyond {
    /// More directories than the tree holds.
    Directories { max: usize },
    /// Deeper than [`MAX_DEPTH`].
    Depth,
}

pub(super) struct Tree {
    memory: MemoryHierarchy,
    nodes: HashMap<CgroupId, Node>,
    /// Directory watches, and the watches of their limit files.
    watches: HashMap<i32, CgroupId>,
    limit_watches: HashMap<i32, CgroupId>,
    /// Directories whose limit file was missing when they were added. On cgroup v2 a runtime
    /// may make a container's cgroup first and enable the memory controller above it after
    /// (crun under systemd: `libpod-<id>.scope/container`); its `memory.*` files then appear,
    /// and its limit is written, with no inotify event the tree could see. Looked at again by
    /// [`Tree::look_again`] until the file is there.
    awaiting_limit_file: HashSet<CgroupId>,
    inotify: Option<Inotify>,
    max_dirs: usize,
    /// Directories left out by a bound, and the first bound met.
    pub beyond: Option<(Beyond, usize)>,
    /// Why some directory could not be watched: its new children are then found only by the
    /// next full walk.
    pub unwatched: Option<io::Error>,
    /// Tests: the next `update` reads an overflowed queue.
    #[cfg(test)]
    pub(super) overflow_next: bool,
}

impl Tree {
    /// Walks the hierarchy under `memory`'s root, watching each directory as it goes.
    pub(super) fn walk(memory: MemoryHierarchy, max_dirs: usize) -> Tree {
        let inotify = Inotify::new();
        let mut tree = Tree {
            memory,
            nodes: HashMap::new(),
            watches: HashMap::new(),
            limit_watches: HashMap::new(),
            awaiting_limit_file: HashSet::new(),
            unwatched: inotify
                .as_ref()
                .err()
                .map(|err| io::Error::new(err.kind(), err.to_string())),
            inotify: inotify.ok(),
            #[cfg(test)]
            overflow_next: false,
            max_dirs,
            beyond: None,
        };
        tree.add_subtree(Arc::from(""), 0);
        tree
    }

    pub(super) fn inotify(&self) -> Option<&Inotify> {
        self.inotify.as_ref()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    #[cfg(test)]
    pub(super) fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// The limit of a known cgroup.
    pub(super) fn limit_bytes(&self, path: &str) -> Option<u64> {
        self.nodes.get(path)?.limit_bytes
    }

    /// Every known cgroup with a limit.
    pub(super) fn limited(&self) -> impl Iterator<Item = (&CgroupId, u64)> {
        self.nodes
            .iter()
            .filter_map(|(path, node)| Some((path, node.limit_bytes?)))
    }

    /// Every known cgroup, the root (`""`) included.
    pub(super) fn paths(&self) -> impl Iterator<Item = &CgroupId> {
        self.nodes.keys()
    }

    /// The known children of `path` (`""` or `/` for the root).
    pub(super) fn children_of(&self, path: &str) -> &[CgroupId] {
        let key = if path == "/" { "" } else { path };
        self.nodes
            .get(key)
            .map_or(&[][..], |node| node.children.as_slice())
    }

    /// The shared form of a known path, so that the recorder's tables hold one copy of it.
    pub(super) fn id(&self, path: &str) -> Option<CgroupId> {
        self.nodes.get_key_value(path).map(|(id, _)| Arc::clone(id))
    }

    /// Applies what inotify says happened since the last call.
    pub(super) fn update(&mut self) -> Changes {
        #[cfg(test)]
        if std::mem::take(&mut self.overflow_next) {
            return self.rewalk();
        }
        let events = match &self.inotify {
            Some(inotify) => inotify.read(),
            None => return Changes::default(),
        };
        let mut changes = Changes::default();
        for event in events {
            match event {
                DirEvent::Overflow => return self.rewalk(),
                DirEvent::Ignored { wd } => {
                    self.watches.remove(&wd);
                    self.limit_watches.remove(&wd);
                }
                DirEvent::Created { wd, name } => {
                    let Some((parent, path)) = self.child_path(wd, &name) else {
                        continue;
                    };
                    if self.nodes.contains_key(path.as_str()) {
                        continue;
                    }
                    let depth = self.nodes.get(&parent).map_or(0, |node| node.depth) + 1;
                    let before = self.nodes.len();
                    let id: CgroupId = Arc::from(path.as_str());
                    self.add_subtree(id.clone(), depth);
                    if self.nodes.len() > before {
                        if let Some(node) = self.nodes.get_mut(&parent) {
                            node.children.push(id.clone());
                        }
                        changes.structure = true;
                        changes.limits.extend(self.limited_under(&id));
                    }
                }
                DirEvent::Removed { wd, name } => {
                    let Some((parent, path)) = self.child_path(wd, &name) else {
                        continue;
                    };
                    if let Some(node) = self.nodes.get_mut(&parent) {
                        node.children.retain(|child| **child != *path);
                    }
                    if let Some(id) = self.id(&path) {
                        self.remove_subtree(&id, &mut changes.removed);
                        changes.structure = true;
                    }
                }
                DirEvent::Written { wd, .. } => {
                    let Some(path) = self.limit_watches.get(&wd).cloned() else {
                        continue;
                    };
                    let limit_bytes = read_limit(&self.memory, &path);
                    if let Some(node) = self.nodes.get_mut(&path)
                        && node.limit_bytes != limit_bytes
                    {
                        node.limit_bytes = limit_bytes;
                        changes.limits.push(path);
                    }
                }
            }
        }
        changes.limits.sort();
        changes.limits.dedup();
        changes
    }

    /// Walks the whole hierarchy again (inotify lost events, or could not watch some
    /// directory), and says what differs.
    pub(super) fn rewalk(&mut self) -> Changes {
        let old: HashMap<CgroupId, Option<u64>> = self
            .nodes
            .iter()
            .map(|(path, node)| (path.clone(), node.limit_bytes))
            .collect();
        let fresh = Tree::walk(self.memory.clone(), self.max_dirs);
        *self = fresh;
        let mut changes = Changes::default();
        for (path, node) in &self.nodes {
            match old.get(path) {
                None => {
                    changes.structure = true;
                    if node.limit_bytes.is_some() {
                        changes.limits.push(path.clone());
                    }
                }
                Some(limit) if *limit != node.limit_bytes => changes.limits.push(path.clone()),
                Some(_) => {}
            }
        }
        for path in old.keys() {
            if !self.nodes.contains_key(path) {
                changes.structure = true;
                changes.removed.push(path.clone());
            }
        }
        changes.limits.sort();
        changes.removed.sort();
        changes
    }

    /// The directory of watch `wd` and its child `name`, as cgroup paths.
    fn child_path(&self, wd: i32, name: &[u8]) -> Option<(CgroupId, String)> {
        let parent = self.watches.get(&wd)?.clone();
        let name = std::str::from_utf8(name).ok()?;
        let path = format!("{}/{name}", parent.trim_end_matches('/'));
        Some((parent, path))
    }

    /// Adds `root` and what is below it, breadth first, within the bounds.
    fn add_subtree(&mut self, root: CgroupId, depth: usize) {
        let mut queue = std::collections::VecDeque::from([(root, depth)]);
        while let Some((path, depth)) = queue.pop_front() {
            if self.nodes.len() >= self.max_dirs {
                self.left_out(Beyond::Directories { max: self.max_dirs }, 1 + queue.len());
                return;
            }
            let dir = self.memory.dir(&path);
            // Watched before it is listed and its limit read: a child made, or a limit written,
            // in between is then seen either way.
            if let Some(inotify) = &self.inotify {
                match inotify.watch_dir(&dir) {
                    Ok(wd) => {
                        self.watches.insert(wd, path.clone());
                    }
                    Err(err) if err.raw_os_error() == Some(libc::ENOENT) => continue,
                    Err(err) => {
                        self.unwatched.get_or_insert(err);
                    }
                }
                if !path.is_empty() {
                    match inotify.watch_writes(&dir.join(limit_file(self.memory.version))) {
                        Ok(wd) => {
                            self.limit_watches.insert(wd, path.clone());
                        }
                        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                            if self.awaiting_limit_file.len() < MAX_AWAITING_LIMIT_FILE {
                                self.awaiting_limit_file.insert(path.clone());
                            }
                        }
                        Err(err) => {
                            self.unwatched.get_or_insert(err);
                        }
                    }
                }
            }
            let children: Vec<CgroupId> = if depth < MAX_DEPTH {
                child_dirs(&dir, &path)
            } else {
                let below = child_dirs(&dir, &path).len();
                if below > 0 {
                    self.left_out(Beyond::Depth, below);
                }
                Vec::new()
            };
            queue.extend(children.iter().map(|child| (child.clone(), depth + 1)));
            let limit_bytes = if path.is_empty() {
                None
            } else {
                read_limit(&self.memory, &path)
            };
            self.nodes.insert(
                path,
                Node {
                    children,
                    limit_bytes,
                    depth,
                },
            );
        }
    }

    /// Looks again at the directories that had no limit file (see `awaiting_limit_file`):
    /// watches the file of each that has one now, and says which have a limit.
    pub(super) fn look_again(&mut self) -> Changes {
        let mut changes = Changes::default();
        let Some(inotify) = &self.inotify else {
            return changes;
        };
        let name = limit_file(self.memory.version);
        let mut settled = Vec::new();
        for path in &self.awaiting_limit_file {
            if !self.nodes.contains_key(path) {
                settled.push(path.clone());
                continue;
            }
            match inotify.watch_writes(&self.memory.dir(path).join(name)) {
                Ok(wd) => {
                    self.limit_watches.insert(wd, path.clone());
                    settled.push(path.clone());
                    let limit_bytes = read_limit(&self.memory, path);
                    if let Some(node) = self.nodes.get_mut(path)
                        && node.limit_bytes != limit_bytes
                    {
                        node.limit_bytes = limit_bytes;
                        changes.limits.push(path.clone());
                    }
                }
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
                Err(err) => {
                    settled.push(path.clone());
                    self.unwatched.get_or_insert(err);
                }
            }
        }
        for path in settled {
            self.awaiting_limit_file.remove(&path);
        }
        changes.limits.sort();
        changes
    }

    fn left_out(&mut self, why: Beyond, count: usize) {
        match &mut self.beyond {
            Some((_, total)) => *total += count,
            None => self.beyond = Some((why, count)),
        }
    }

    fn remove_subtree(&mut self, root: &CgroupId, removed: &mut Vec<CgroupId>) {
        let mut stack = vec![root.clone()];
        while let Some(path) = stack.pop() {
            self.awaiting_limit_file.remove(&path);
            if let Some(node) = self.nodes.remove(&path) {
                stack.extend(node.children);
                removed.push(path);
            }
        }
    }

    fn limited_under(&self, root: &CgroupId) -> Vec<CgroupId> {
        let mut limited = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(path) = stack.pop() {
            if let Some(node) = self.nodes.get(&path) {
                if node.limit_bytes.is_some() {
                    limited.push(path.clone());
                }
                stack.extend(node.children.iter().cloned());
            }
        }
        limited
    }

    #[cfg(test)]
    pub(super) fn memory(&self) -> &MemoryHierarchy {
        &self.memory
    }
}

/// The cgroup directories in `dir`, as paths below `parent`.
fn child_dirs(dir: &std::path::Path, parent: &str) -> Vec<CgroupId> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let parent = parent.trim_end_matches('/');
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
        .filter_map(|entry| entry.file_name().into_string().ok())
        .map(|name| Arc::from(format!("{parent}/{name}").as_str()))
        .collect()
}

pub(super) fn limit_file(version: CgroupVersion) -> &'static str {
    match version {
        CgroupVersion::V1 => "memory.limit_in_bytes",
        CgroupVersion::V2 => "memory.max",
    }
}

fn read_limit(memory: &MemoryHierarchy, path: &str) -> Option<u64> {
    memory.limit_bytes(path)
}

/// The tree with each cgroup's usage, for ranking: what a snapshot's walk would list.
pub(super) struct Ranked<'a> {
    pub tree: &'a Tree,
    pub usage: &'a HashMap<CgroupId, u64>,
}

impl CgroupTree for Ranked<'_> {
    fn children(&self, path: &str) -> Vec<String> {
        self.tree
            .children_of(path)
            .iter()
            .map(|child| child.to_string())
            .collect()
    }

    fn usage_bytes(&self, path: &str) -> Option<u64> {
        self.usage.get(path).copied()
    }
}

/// A throw-away hierarchy of plain directories and files, shaped like a v1 or a v2 memory
/// hierarchy, for the recorder's tests: limits, usage and new cgroups as a test writes them.
#[cfg(test)]
pub(super) mod fake {
    use super::*;
    use std::path::PathBuf;

    /// v1's "unlimited".
    const V1_UNLIMITED: u64 = 9_223_372_036_854_771_712;

    pub(crate) struct FakeHierarchy {
        pub root: PathBuf,
        version: CgroupVersion,
    }

    impl FakeHierarchy {
        /// A v1 memory hierarchy (`memory.usage_in_bytes`, `memory.limit_in_bytes`).
        pub(crate) fn new(name: &str) -> Self {
            Self::of(name, CgroupVersion::V1)
        }

        /// A cgroup2 hierarchy (`memory.current`, `memory.max`, `memory.events`).
        pub(crate) fn v2(name: &str) -> Self {
            Self::of(name, CgroupVersion::V2)
        }

        fn of(name: &str, version: CgroupVersion) -> Self {
            let root = std::env::temp_dir().join(format!(
                "oomtrace-fake-cgroups-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            let fake = FakeHierarchy { root, version };
            fake.set_usage("", 0);
            fake
        }

        pub(crate) fn memory(&self) -> MemoryHierarchy {
            MemoryHierarchy {
                root: self.root.clone(),
                version: self.version,
            }
        }

        fn usage_file(&self) -> &'static str {
            match self.version {
                CgroupVersion::V1 => "memory.usage_in_bytes",
                CgroupVersion::V2 => "memory.current",
            }
        }

        fn limit_text(&self, limit: Option<u64>) -> String {
            match (self.version, limit) {
                (_, Some(limit)) => limit.to_string(),
                (CgroupVersion::V1, None) => V1_UNLIMITED.to_string(),
                (CgroupVersion::V2, None) => "max".to_owned(),
            }
        }

        /// Makes a cgroup with a usage and, if given, a limit. Its files are there when its
        /// directory appears, as in cgroupfs: made aside, then moved in.
        pub(crate) fn cgroup(&self, path: &str, usage: u64, limit: Option<u64>) {
            let dir = self.dir(path);
            std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
            let aside = self
                .root
                .with_extension(format!("new-{}", path.replace('/', "_")));
            std::fs::create_dir_all(&aside).unwrap();
            let write = |name: &str, value: String| {
                std::fs::write(aside.join(name), value + "\n").unwrap();
            };
            write(self.usage_file(), usage.to_string());
            write(limit_file(self.version), self.limit_text(limit));
            match self.version {
                CgroupVersion::V1 => write("memory.failcnt", "0".to_owned()),
                CgroupVersion::V2 => write(
                    "memory.events",
                    "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0".to_owned(),
                ),
            }
            std::fs::rename(&aside, &dir).unwrap();
        }

        pub(crate) fn set_usage(&self, path: &str, usage: u64) {
            std::fs::write(self.dir(path).join(self.usage_file()), format!("{usage}\n")).unwrap();
        }

        /// `None`: no limit.
        pub(crate) fn set_limit(&self, path: &str, limit: Option<u64>) {
            std::fs::write(
                self.dir(path).join(limit_file(self.version)),
                self.limit_text(limit) + "\n",
            )
            .unwrap();
        }

        pub(crate) fn remove(&self, path: &str) {
            std::fs::remove_dir_all(self.dir(path)).unwrap();
        }

        pub(crate) fn dir(&self, path: &str) -> PathBuf {
            self.root.join(path.trim_start_matches('/'))
        }
    }

    impl Drop for FakeHierarchy {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHierarchy;
    use super::*;

    #[test]
    fn a_walk_finds_every_cgroup_and_its_limit() {
        let fake = FakeHierarchy::new("walk");
        fake.cgroup("/docker", 300, None);
        fake.cgroup("/docker/a", 100, Some(1000));
        fake.cgroup("/docker/b", 200, None);
        let tree = Tree::walk(fake.memory(), 100);
        assert_eq!(tree.len(), 4);
        assert_eq!(tree.children_of("/").len(), 1);
        assert_eq!(tree.limit_bytes("/docker/a"), Some(1000));
        assert_eq!(tree.limit_bytes("/docker/b"), None);
        let limited: Vec<&str> = tree.limited().map(|(path, _)| &**path).collect();
        assert_eq!(limited, ["/docker/a"]);
        assert_eq!(tree.beyond, None);
    }

    #[test]
    fn new_cgroups_limits_and_removals_arrive_as_changes() {
        let fake = FakeHierarchy::new("changes");
        fake.cgroup("/pod", 10, Some(500));
        let mut tree = Tree::walk(fake.memory(), 100);
        assert!(tree.update().is_empty());

        // A container made, then limited: as a runtime does it.
        fake.cgroup("/pod/c1", 5, None);
        let changes = tree.update();
        assert!(changes.structure);
        assert!(changes.limits.is_empty(), "{changes:?}");
        fake.set_limit("/pod/c1", Some(400));
        let changes = tree.update();
        assert_eq!(changes.limits, [tree.id("/pod/c1").unwrap()]);
        assert_eq!(tree.limit_bytes("/pod/c1"), Some(400));

        // A limit written with the same value is no change; a new one is.
        fake.set_limit("/pod", Some(500));
        assert!(tree.update().is_empty());
        fake.set_limit("/pod", Some(300));
        assert_eq!(tree.update().limits.len(), 1);
        assert_eq!(tree.limit_bytes("/pod"), Some(300));

        // Nested cgroups made at once (`mkdir -p`) are all found.
        std::fs::create_dir_all(fake.dir("/pod/c2/inner")).unwrap();
        let changes = tree.update();
        assert!(changes.structure);
        assert!(tree.contains("/pod/c2/inner"), "{changes:?}");

        fake.remove("/pod/c2");
        let changes = tree.update();
        let removed: Vec<&str> = changes.removed.iter().map(|path| &**path).collect();
        assert!(removed.contains(&"/pod/c2") && removed.contains(&"/pod/c2/inner"));
        assert!(!tree.contains("/pod/c2/inner"));
        assert_eq!(tree.children_of("/pod").len(), 1);
    }

    #[test]
    fn a_limit_file_that_appears_after_its_directory_is_found_by_looking_again() {
        // crun under systemd on cgroup v2: `libpod-<id>.scope/container` is made before the
        // memory controller is enabled above it; its memory files appear with no inotify
        // event cgroupfs would send, then its limit is written.
        let fake = FakeHierarchy::new("late-limit-file");
        fake.cgroup("/machine.slice", 10, None);
        let mut tree = Tree::walk(fake.memory(), 100);
        std::fs::create_dir_all(fake.dir("/machine.slice/libpod-1.scope/container")).unwrap();
        let changes = tree.update();
        assert!(
            tree.contains("/machine.slice/libpod-1.scope/container"),
            "{changes:?}"
        );
        assert!(changes.limits.is_empty(), "{changes:?}");
        assert!(tree.look_again().is_empty());

        fake.set_limit("/machine.slice/libpod-1.scope/container", Some(96 << 20));
        let changes = tree.look_again();
        let container = tree.id("/machine.slice/libpod-1.scope/container").unwrap();
        assert_eq!(changes.limits, [container]);
        assert_eq!(
            tree.limit_bytes("/machine.slice/libpod-1.scope/container"),
            Some(96 << 20)
        );
        // From then on its file is watched like any other.
        assert!(tree.look_again().is_empty());
        fake.set_limit("/machine.slice/libpod-1.scope/container", Some(64 << 20));
        assert_eq!(tree.update().limits.len(), 1);
        assert_eq!(
            tree.limit_bytes("/machine.slice/libpod-1.scope/container"),
            Some(64 << 20)
        );
    }

    #[test]
    fn what_lies_beyond_the_bounds_is_counted() {
        let fake = FakeHierarchy::new("bounds");
        for index in 0..10 {
            fake.cgroup(&format!("/c{index}"), 1, Some(100));
        }
        let tree = Tree::walk(fake.memory(), 5);
        assert_eq!(tree.len(), 5);
        assert_eq!(tree.beyond, Some((Beyond::Directories { max: 5 }, 6)));

        let deep = FakeHierarchy::new("deep");
        let path: String = (0..=MAX_DEPTH).map(|level| format!("/l{level}")).collect();
        deep.cgroup(&path, 1, Some(100));
        let tree = Tree::walk(deep.memory(), 100);
        assert_eq!(tree.len(), MAX_DEPTH + 1);
        assert_eq!(tree.beyond, Some((Beyond::Depth, 1)));
    }

    #[test]
    fn a_rewalk_says_what_differs() {
        let fake = FakeHierarchy::new("rewalk");
        fake.cgroup("/a", 1, Some(100));
        fake.cgroup("/b", 1, None);
        let mut tree = Tree::walk(fake.memory(), 100);
        fake.remove("/b");
        fake.cgroup("/c", 1, Some(100));
        fake.set_limit("/a", Some(200));
        let changes = tree.rewalk();
        let names = |paths: &[CgroupId]| paths.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&changes.limits), ["/a", "/c"]);
        assert_eq!(names(&changes.removed), ["/b"]);
        assert!(changes.structure);
    }
}
