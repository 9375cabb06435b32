//! Debian suites' package lists, kept apart from the system's: the guest kernels come from
//! suites other than the host's (Debian 11's 5.10, Debian 13's 6.12), and adding those to the
//! host's apt sources would offer its packages upgrades from them. Each kernel family gets its
//! own `sources.list`, lists and cache under `target/vm/apt/<name>/`, passed to `apt-get` and
//! `apt-cache` as options; `/etc/apt` is only read (for proxies and the like), never written.

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::setup::{is_root, run};

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
/// Debian's archive keys, the current suites' and their predecessors' (package
/// `debian-archive-keyring`).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// apt-get and apt-cache on the package lists of a few suites only.
pub struct SuiteApt {
    /// The suites, e.g. `bookworm` and `bookworm-security`.
    suites: &'static [&'static str],
    dir: PathBuf,
    updated: bool,
}

impl SuiteApt {
    /// Writes the `sources.list` of `suites` (`-security` ones from the security archive) under
    /// `apt_dir/<first suite>/`, unless it is already there.
    pub fn new(suites: &'static [&'static str], apt_dir: &Path) -> anyhow::Result<Self> {
        let first = suites.first().context("a package source without suites")?;
        let dir = apt_dir.join(first);
        for sub in ["lists/partial", "cache/archives/partial"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        let sources = dir.join("sources.list");
        let wanted = sources_list(suites);
        if fs::read_to_string(&sources).ok().as_deref() != Some(wanted.as_str()) {
            fs::write(&sources, wanted)
                .with_context(|| format!("writing {}", sources.display()))?;
        }
        Ok(Self {
            suites,
            dir,
            updated: false,
        })
    }

    /// The suites, for messages: `bookworm, bookworm-security`.
    pub fn suites(&self) -> String {
        self.suites.join(", ")
    }

    /// `-o` options that point apt at this suite's sources, lists and cache only.
    fn options(&self) -> Vec<OsString> {
        let option = |key: &str, value: &Path| {
            let mut option = OsString::from(format!("{key}="));
            option.push(value);
            ["-o".into(), option]
        };
        let mut options = Vec::new();
        options.extend(option(
            "Dir::Etc::sourcelist",
            &self.dir.join("sources.list"),
        ));
        options.extend(option("Dir::Etc::sourceparts", Path::new("-")));
        options.extend(option("Dir::State::Lists", &self.dir.join("lists")));
        options.extend(option("Dir::Cache", &self.dir.join("cache")));
        options
    }

    /// Whether `update` has ever fetched the lists (they survive in the target directory).
    pub fn has_lists(&self) -> bool {
        fs::read_dir(self.dir.join("lists")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().contains("_Packages"))
        })
    }

    /// Fetches the suite's package lists, once per xtask run; returns whether this call did.
    pub fn update(&mut self) -> anyhow::Result<bool> {
        if self.updated {
            return Ok(false);
        }
        if !Path::new(KEYRING).exists() {
            bail!("{KEYRING} is missing: install debian-archive-keyring");
        }
        if !is_root() {
            bail!(
                "apt-get needs root to fetch the package lists of {}",
                self.suites()
            );
        }
        run(Command::new("apt-get")
            .args(self.options())
            .args(["update", "-q"]))
        .with_context(|| format!("fetching the package lists of {}", self.suites()))?;
        self.updated = true;
        Ok(true)
    }

    /// Package names matching an extended regular expression, from the suite's lists.
    pub fn search_names(&self, regex: &str) -> anyhow::Result<Vec<String>> {
        let mut command = Command::new("apt-cache");
        command
            .args(self.options())
            .args(["search", "--names-only", regex]);
        let output = command
            .output()
            .with_context(|| format!("starting {command:?}"))?;
        if !output.status.success() {
            bail!(
                "{command:?} failed: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        // "name - description"
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    /// `apt-get download` into `dir`: the .deb only, without installing it.
    pub fn download(&self, package: &str, dir: &Path) -> anyhow::Result<()> {
        // The target directory is not the sandbox user's to write: download as root (apt
        // warns and does so anyway otherwise).
        run(Command::new("apt-get")
            .args(self.options())
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
            .current_dir(dir))
    }

    /// [`download`](Self::download), once more after refreshing the lists if it fails: stale
    /// lists name packages the mirror no longer has.
    pub fn download_fresh(&mut self, package: &str, dir: &Path) -> anyhow::Result<()> {
        self.download(package, dir)
            .or_else(|err| match self.update() {
                Ok(true) => self.download(package, dir),
                _ => Err(err),
            })
    }
}

/// Package indices only (no translations, no AppStream metadata) of `main` of each suite.
fn sources_list(suites: &[&str]) -> String {
    let options = format!("[signed-by={KEYRING} target=Packages]");
    let mut list =
        "# Written by `cargo xtask vm` for the guest kernels; the host's apt never reads it.\n"
            .to_owned();
    for suite in suites {
        let mirror = if suite.ends_with("-security") {
            SECURITY_MIRROR
        } else {
            MIRROR
        };
        list.push_str(&format!("deb {options} {mirror} {suite} main\n"));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_suites_come_from_the_security_archive() {
        let list = sources_list(&["bullseye", "bullseye-security"]);
        assert!(
            list.contains(" http://deb.debian.org/debian bullseye main\n"),
            "{list}"
        );
        assert!(
            list.contains(" http://deb.debian.org/debian-security bullseye-security main\n"),
            "{list}"
        );
        assert_eq!(list.matches("target=Packages").count(), 2, "{list}");
    }
}
