//! The peers that need kprobes, for the VM: bcc's `oomkill` (Python and libbcc) and bpftrace's
//! `oomkill.bt`, both from Debian, both on a kprobe on `oom_kill_process`. The guest has no libc
//! and no packages, so their initramfs carries everything they load: the executables, the
//! dynamic loader and the `ldd` closure of every ELF file (libLLVM and libclang among them),
//! Python's standard library and bcc's module, and the kernel headers bcc compiles its program
//! against (the Debian 6.1 kernel has no `CONFIG_IKHEADERS`; bpftrace reads BTF instead).
//! Every host path is put at the same path in the guest, `/lib` being `usr/lib` there as on a
//! merged-/usr Debian, so that `/etc/ld.so.cache` from the host is right in the guest too.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use xtask::setup::Apt;
use xtask::vm::{Extra, SuiteApt, fetch_headers};

pub const PACKAGES: [&str; 2] = ["bpfcc-tools", "bpftrace"];
pub const BCC_OOMKILL: &str = "/usr/sbin/oomkill-bpfcc";
pub const BPFTRACE_OOMKILL: &str = "/usr/sbin/oomkill.bt";
const BPFTRACE: &str = "/usr/bin/bpftrace";
const PYTHON: &str = "/usr/bin/python3";
/// What bcc's Python module loads with ctypes (`CDLL`): in no executable's `ldd` output.
const CTYPES_LIBRARIES: [&str; 3] = [
    "/usr/lib/x86_64-linux-gnu/libbcc.so.0",
    "/usr/lib/x86_64-linux-gnu/librt.so.1",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
];
const BCC_MODULE: &str = "/usr/lib/python3/dist-packages/bcc";
/// Parts of the standard library neither tool imports; the static libpython alone is 25 MB.
const STDLIB_SKIPPED: [&str; 9] = [
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "unittest",
    "config-3",
];

/// Everything the two peers need in the guest, beyond the standard initramfs.
pub(crate) fn extras(
    apt: &mut Apt,
    suite_apt: &mut SuiteApt,
    kernel_version: &str,
    work_dir: &Path,
) -> anyhow::Result<Vec<Extra>> {
    apt.install_missing(&PACKAGES)
        .context("installing bcc and bpftrace for the VM peers")?;
    let mut extras = vec![
        Extra::Symlink {
            guest: "lib".to_owned(),
            target: "usr/lib".to_owned(),
        },
        Extra::Symlink {
            guest: "lib64".to_owned(),
            target: "usr/lib64".to_owned(),
        },
        file("/etc/ld.so.cache")?,
        file(BCC_OOMKILL)?,
        file(BPFTRACE_OOMKILL)?,
        file(BPFTRACE)?,
        // The shebang and `sys.executable` say python3; the standard library is found from it.
        file(PYTHON)?,
    ];
    let stdlib = python_stdlib()?;
    let mut elves = vec![PathBuf::from(BPFTRACE), PathBuf::from(PYTHON)];
    for library in CTYPES_LIBRARIES {
        extras.push(file(library)?);
        elves.push(PathBuf::from(library));
    }
    tree(&stdlib, &STDLIB_SKIPPED, &mut extras, &mut elves)?;
    tree(Path::new(BCC_MODULE), &[], &mut extras, &mut elves)?;
    for library in closure(&elves)? {
        extras.push(file(&library)?);
    }
    headers(suite_apt, kernel_version, work_dir, &mut extras)?;
    Ok(extras)
}

/// `/usr/lib/python3.X` of the host's python3.
fn python_stdlib() -> anyhow::Result<PathBuf> {
    let output = Command::new(PYTHON)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .with_context(|| format!("starting {PYTHON}"))?;
    if !output.status.success() {
        bail!("{PYTHON} could not name its standard library");
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

/// The host file at `host`, at the same place in the guest.
fn file(host: impl AsRef<Path>) -> anyhow::Result<Extra> {
    let host = host.as_ref();
    let text = host
        .to_str()
        .with_context(|| format!("{} is not UTF-8", host.display()))?;
    Ok(Extra::File {
        guest: guest_path(text),
        host: host.to_owned(),
    })
}

/// `/lib/x86_64-linux-gnu/libc.so.6` → `usr/lib/x86_64-linux-gnu/libc.so.6`: the guest's
/// `lib` and `lib64` are symbolic links into `usr`, so nothing may be put under them directly.
pub(crate) fn guest_path(host: &str) -> String {
    let relative = host.trim_start_matches('/');
    let first = relative.split('/').next().unwrap_or_default();
    if first == "lib" || first == "lib64" {
        format!("usr/{relative}")
    } else {
        relative.to_owned()
    }
}

/// Every file and link under `dir` (names starting with one of `skipped` left out), with the
/// shared objects among them added to `elves`.
fn tree(
    dir: &Path,
    skipped: &[&str],
    extras: &mut Vec<Extra>,
    elves: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if skipped.iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            tree(&path, skipped, extras, elves)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&path)?;
            extras.push(Extra::Symlink {
                guest: guest_path(&path.to_string_lossy()),
                target: target.to_string_lossy().into_owned(),
            });
        } else {
            if name.ends_with(".so") {
                elves.push(path.clone());
            }
            extras.push(file(&path)?);
        }
    }
    Ok(())
}

/// The shared libraries (and the dynamic loader) that `ldd` names for any of `elves`.
fn closure(elves: &[PathBuf]) -> anyhow::Result<BTreeSet<String>> {
    let mut libraries = BTreeSet::new();
    for elf in elves {
        let output = Command::new("ldd")
            .arg(elf)
            .output()
            .with_context(|| format!("starting ldd {}", elf.display()))?;
        if !output.status.success() {
            bail!(
                "ldd {} failed: {}",
                elf.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let listed = parse_ldd(&String::from_utf8_lossy(&output.stdout))
            .with_context(|| format!("ldd {}", elf.display()))?;
        libraries.extend(listed);
    }
    Ok(libraries)
}

/// The paths in `ldd` output; the vDSO has none, and a library not found is an error.
pub(crate) fn parse_ldd(output: &str) -> anyhow::Result<Vec<String>> {
    let mut paths = Vec::new();
    for line in output
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let resolved = match line.split_once("=>") {
            Some((name, resolved)) => {
                let resolved = resolved.trim();
                if resolved.starts_with("not found") {
                    bail!("{} not found", name.trim());
                }
                resolved
            }
            None => line,
        };
        let path = resolved.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            paths.push(path.to_owned());
        }
    }
    Ok(paths)
}

/// The headers bcc compiles against, as Debian installs them: the flavour's tree (generated
/// headers, `.config`) as `/lib/modules/<version>/build` and the common tree as `source`,
/// with only x86 of the common tree's architectures.
fn headers(
    apt: &mut SuiteApt,
    kernel_version: &str,
    work_dir: &Path,
    extras: &mut Vec<Extra>,
) -> anyhow::Result<()> {
    let root = fetch_headers(apt, kernel_version, &work_dir.join("headers"))?;
    let src = root.join("usr/src");
    for entry in fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let dir = entry?.path();
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let guest = format!("usr/src/{name}");
        if name.ends_with("-common") {
            extras.push(file_as(
                &dir.join("Makefile"),
                &format!("{guest}/Makefile"),
            )?);
            for part in ["include", "arch/x86"] {
                tree_as(&dir.join(part), &format!("{guest}/{part}"), extras)?;
            }
            extras.push(Extra::Symlink {
                guest: format!("usr/lib/modules/{kernel_version}/source"),
                target: format!("/{guest}"),
            });
        } else {
            for part in ["Makefile", ".config"] {
                extras.push(file_as(&dir.join(part), &format!("{guest}/{part}"))?);
            }
            for part in ["include", "arch"] {
                tree_as(&dir.join(part), &format!("{guest}/{part}"), extras)?;
            }
            extras.push(Extra::Symlink {
                guest: format!("usr/lib/modules/{kernel_version}/build"),
                target: format!("/{guest}"),
            });
        }
    }
    Ok(())
}

fn file_as(host: &Path, guest: &str) -> anyhow::Result<Extra> {
    if !host.is_file() {
        bail!("{} is missing", host.display());
    }
    Ok(Extra::File {
        guest: guest.to_owned(),
        host: host.to_owned(),
    })
}

/// Every file and link under the host's `dir`, under `guest` in the guest.
fn tree_as(dir: &Path, guest: &str, extras: &mut Vec<Extra>) -> anyhow::Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let guest = format!("{guest}/{name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            tree_as(&path, &guest, extras)?;
        } else if kind.is_symlink() {
            extras.push(Extra::Symlink {
                guest,
                target: fs::read_link(&path)?.to_string_lossy().into_owned(),
            });
        } else {
            extras.push(Extra::File { guest, host: path });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd5b9f2000)
\tlibbcc.so.0 => /lib/x86_64-linux-gnu/libbcc.so.0 (0x00007f0e1c000000)
\tlibLLVM-14.so.1 => /lib/x86_64-linux-gnu/libLLVM-14.so.1 (0x00007f0e14000000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1f2f5000)
";

    #[test]
    fn ldd_output_gives_every_path_but_the_vdso() {
        assert_eq!(
            parse_ldd(LDD).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libbcc.so.0",
                "/lib/x86_64-linux-gnu/libLLVM-14.so.1",
                "/lib64/ld-linux-x86-64.so.2",
            ]
        );
    }

    #[test]
    fn a_library_ldd_cannot_find_is_an_error() {
        let err = parse_ldd("\tlibgone.so.1 => not found\n").unwrap_err();
        assert_eq!(err.to_string(), "libgone.so.1 not found");
    }

    #[test]
    fn lib_and_lib64_move_under_usr() {
        assert_eq!(
            guest_path("/lib/x86_64-linux-gnu/libc.so.6"),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            guest_path("/lib64/ld-linux-x86-64.so.2"),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(guest_path("/usr/bin/python3"), "usr/bin/python3");
        assert_eq!(guest_path("/library/x"), "library/x");
    }
}
