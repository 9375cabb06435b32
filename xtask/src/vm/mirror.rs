//! Where Debian's packages come from on this machine: the mirrors the host's apt uses, read as
//! apt reads them (`apt-get indextargets`: every sources.list, `.list` and deb822 `.sources`
//! file, with the Release files' labels), so that a user behind a mirror of their own fetches
//! the guests' packages from it too. A host whose apt names no Debian archive gets
//! deb.debian.org, with a note.

use std::process::Command;

use anyhow::Context as _;

const DEFAULT_ARCHIVE: &str = "http://deb.debian.org/debian";
const DEFAULT_SECURITY: &str = "http://deb.debian.org/debian-security";

/// The Debian archive and its security archive, as URIs apt accepts.
#[derive(Debug, PartialEq, Eq)]
pub struct Mirrors {
    pub archive: String,
    pub security: String,
}

impl Mirrors {
    /// The host's, or Debian's own where the host's apt names none.
    pub fn of_host() -> anyhow::Result<Self> {
        let mut command = Command::new("apt-get");
        command.args([
            "indextargets",
            "--format",
            "$(REPO_URI)\t$(RELEASE)\t$(LABEL)\t$(CREATED_BY)",
        ]);
        let output = command
            .output()
            .with_context(|| format!("starting {command:?}"))?;
        let listed = String::from_utf8_lossy(&output.stdout);
        let mirrors = if output.status.success() {
            Self::from_index_targets(&listed)
        } else {
            None
        };
        Ok(mirrors.unwrap_or_else(|| {
            println!(
                "vm: the host's apt names no Debian archive: using {DEFAULT_ARCHIVE} and {DEFAULT_SECURITY}"
            );
            Self {
                archive: DEFAULT_ARCHIVE.to_owned(),
                security: DEFAULT_SECURITY.to_owned(),
            }
        }))
    }

    /// From `apt-get indextargets` lines of `uri\trelease\tlabel\tcreated-by`. A Release file's
    /// label says which archive a source is (`Debian`, `Debian-Security`); where apt has not
    /// fetched one yet the label is left as `$(LABEL)`, and Debian's suite names tell instead.
    /// Without a security source, a mirror at `…/debian` is taken to serve it at
    /// `…/debian-security`, as Debian's mirrors do; any other gets Debian's own.
    fn from_index_targets(listed: &str) -> Option<Self> {
        let mut archive = None;
        let mut security = None;
        for line in listed.lines() {
            let mut fields = line.split('\t');
            let (Some(uri), Some(release), Some(label), Some("Packages")) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let uri = uri.trim_end_matches('/');
            let labelled = !label.starts_with("$(");
            let is_security = if labelled {
                label == "Debian-Security"
            } else {
                release.ends_with("-security") && is_debian_suite(release)
            };
            let is_archive = if labelled {
                label == "Debian"
            } else {
                !release.ends_with("-security") && is_debian_suite(release)
            };
            if is_security {
                security.get_or_insert_with(|| uri.to_owned());
            } else if is_archive {
                archive.get_or_insert_with(|| uri.to_owned());
            }
        }
        let archive = archive?;
        let security = security.unwrap_or_else(|| match archive.strip_suffix("/debian") {
            Some(host) => format!("{host}/debian-security"),
            None => DEFAULT_SECURITY.to_owned(),
        });
        Some(Self { archive, security })
    }
}

/// Debian's codenames and aliases, with their `-updates`, `-security`, `-backports` suites.
fn is_debian_suite(release: &str) -> bool {
    const NAMES: [&str; 10] = [
        "buster",
        "bullseye",
        "bookworm",
        "trixie",
        "forky",
        "sid",
        "oldoldstable",
        "oldstable",
        "stable",
        "testing",
    ];
    let base = release.split('-').next().unwrap_or(release);
    NAMES.contains(&base) || release == "unstable"
}

/// apt's HTTP proxy (`Acquire::http::Proxy`), for tools that read only the environment's
/// `http_proxy` (debootstrap).
pub fn apt_http_proxy() -> Option<String> {
    let output = Command::new("apt-config")
        .args(["shell", "PROXY", "Acquire::http::Proxy"])
        .output()
        .ok()?;
    // `PROXY='http://proxy:3128/'`
    let text = String::from_utf8_lossy(&output.stdout);
    let value = text.trim().strip_prefix("PROXY='")?.strip_suffix('\'')?;
    (output.status.success() && !value.is_empty() && value != "DIRECT").then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_tell_the_archives_apart() {
        // This machine's own, with a third-party source whose suite means nothing to Debian.
        let listed = "http://deb.debian.org/debian-security/\tbookworm-security\tDebian-Security\tPackages\n\
            http://deb.debian.org/debian/\tbookworm-updates\tDebian\tPackages\n\
            http://deb.debian.org/debian/\tbookworm\tDebian\tDEP-11\n\
            http://deb.debian.org/debian/\tbookworm\tDebian\tPackages\n\
            https://deb.nodesource.com/node_20.x/\tnodistro\tNodesource\tPackages\n";
        assert_eq!(
            Mirrors::from_index_targets(listed),
            Some(Mirrors {
                archive: "http://deb.debian.org/debian".to_owned(),
                security: "http://deb.debian.org/debian-security".to_owned(),
            })
        );
    }

    #[test]
    fn a_users_own_mirror_is_used_before_apt_has_fetched_its_release_files() {
        let listed = "https://deb.nodesource.com/node_20.x/\tnodistro\t$(LABEL)\tPackages\n\
            http://mirror.example.internal/debian/\ttrixie\t$(LABEL)\tPackages\n";
        assert_eq!(
            Mirrors::from_index_targets(listed),
            Some(Mirrors {
                archive: "http://mirror.example.internal/debian".to_owned(),
                security: "http://mirror.example.internal/debian-security".to_owned(),
            })
        );
    }

    #[test]
    fn a_host_without_debian_sources_has_none() {
        let listed = "http://archive.ubuntu.com/ubuntu/\tnoble\tUbuntu\tPackages\n";
        assert_eq!(Mirrors::from_index_targets(listed), None);
    }
}
