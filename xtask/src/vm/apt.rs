//! Debian suites' package lists, kept apart from the system's: the guest kernels come from
//! suites other than the host's (Debian 11's 5.10, Debian 13's 6.12), and adding those to the
//! host's apt sources would offer its packages upgrades from them. Each kernel family gets its
//! own `sources.list`, lists and cache under `target/vm/apt/<name>/`, passed to `apt-get` and
//! `apt-cache` as options; `/etc/apt` is only read (for proxies and the like), never written.
//! The Debian archive is the one the host's apt is configured with (a host behind its own
//! mirror or proxy gets its kernels there too), as apt itself reads its sources.

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::setup::{is_root, run};

/// Debian's own archive, where the host's apt names no Debian archive (not a Debian host).
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
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
        let wanted = sources_list(suites, &Mirrors::configured());
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

/// Where Debian's archive and its security archive are.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mirrors {
    archive: String,
    security: String,
}

impl Mirrors {
    /// The Debian archives the host's apt sources name, as apt reads them (one-line and deb822
    /// files alike): `apt-get indextargets`. Debian's own when there are none.
    fn configured() -> Self {
        let output = Command::new("apt-get")
            .args(["indextargets", "--no-release-info", "--format"])
            .arg("$(TARGET_OF) $(REPO_URI) $(RELEASE)")
            .output();
        let targets = match output {
            Ok(output) if output.status.success() => {
                String::from_utf8_lossy(&output.stdout).into_owned()
            }
            _ => String::new(),
        };
        let codename = fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|release| os_release_codename(&release));
        Self::from_targets(&targets, codename.as_deref()).unwrap_or_else(|| {
            eprintln!(
                "xtask: the host's apt sources name no Debian archive; the guest kernels come \
                 from {DEFAULT_MIRROR}"
            );
            Self::beside(DEFAULT_MIRROR, None)
        })
    }

    /// From `deb <uri> <suite>` lines: the archive that serves the host's own release
    /// (`codename`), and the one serving its `-security` suite, where there is one; else the
    /// security archive where Debian's mirrors keep it, beside the archive.
    fn from_targets(targets: &str, codename: Option<&str>) -> Option<Self> {
        let repos: Vec<(&str, &str)> = targets
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next()? == "deb").then_some(())?;
                Some((fields.next()?.trim_end_matches('/'), fields.next()?))
            })
            .collect();
        let codename = codename?;
        let archive = repos.iter().find(|(_, suite)| *suite == codename)?.0;
        let security = repos
            .iter()
            .find(|(_, suite)| *suite == format!("{codename}-security"))
            .map(|(uri, _)| *uri);
        Some(Self::beside(archive, security))
    }

    fn beside(archive: &str, security: Option<&str>) -> Self {
        Mirrors {
            archive: archive.to_owned(),
            security: security.map_or_else(|| format!("{archive}-security"), str::to_owned),
        }
    }
}

/// `VERSION_CODENAME=bookworm` of `/etc/os-release`.
fn os_release_codename(release: &str) -> Option<String> {
    release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|name| name.trim_matches('"').to_owned())
        .filter(|name| !name.is_empty())
}

/// Package indices only (no translations, no AppStream metadata) of `main` of each suite.
fn sources_list(suites: &[&str], mirrors: &Mirrors) -> String {
    let options = format!("[signed-by={KEYRING} target=Packages]");
    let mut list =
        "# Written by `cargo xtask vm` for the guest kernels; the host's apt never reads it.\n"
            .to_owned();
    for suite in suites {
        let mirror = if suite.ends_with("-security") {
            &mirrors.security
        } else {
            &mirrors.archive
        };
        list.push_str(&format!("deb {options} {mirror} {suite} main\n"));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrors(archive: &str, security: &str) -> Mirrors {
        Mirrors {
            archive: archive.to_owned(),
            security: security.to_owned(),
        }
    }

    #[test]
    fn security_suites_come_from_the_security_archive() {
        let list = sources_list(
            &["bullseye", "bullseye-security"],
            &mirrors("http://m/debian", "http://s/debian-security"),
        );
        assert!(list.contains(" http://m/debian bullseye main\n"), "{list}");
        assert!(
            list.contains(" http://s/debian-security bullseye-security main\n"),
            "{list}"
        );
        assert_eq!(list.matches("target=Packages").count(), 2, "{list}");
    }

    /// What `apt-get indextargets` says on a host behind a proxy that serves its own
    /// release, and on one whose sources name no security archive.
    #[test]
    fn the_mirrors_are_the_hosts_own() {
        let targets = "deb http://proxy:3142/debian-security/ bookworm-security\n\
                       deb http://proxy:3142/debian/ bookworm\n\
                       deb http://proxy:3142/debian/ bookworm-updates\n\
                       deb-src http://elsewhere/debian/ bookworm\n\
                       deb https://deb.nodesource.com/node_20.x/ nodistro\n";
        assert_eq!(
            Mirrors::from_targets(targets, Some("bookworm")),
            Some(mirrors(
                "http://proxy:3142/debian",
                "http://proxy:3142/debian-security"
            ))
        );
        let no_security = "deb http://mirror.example/debian/ trixie\n";
        assert_eq!(
            Mirrors::from_targets(no_security, Some("trixie")),
            Some(mirrors(
                "http://mirror.example/debian",
                "http://mirror.example/debian-security"
            ))
        );
        assert_eq!(Mirrors::from_targets(no_security, Some("jammy")), None);
        assert_eq!(Mirrors::from_targets(targets, None), None);
        assert_eq!(
            os_release_codename("NAME=\"Debian\"\nVERSION_CODENAME=bookworm\n").as_deref(),
            Some("bookworm")
        );
    }
}
