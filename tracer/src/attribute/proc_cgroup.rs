//! `/proc/<pid>/cgroup`: where a process is, for the tier whose programs cannot read cgroups
//! in the kernel. Read as soon as the kill arrives; a victim may already be gone.

/// The process's cgroup in the unified hierarchy and in the memory controller's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcCgroups {
    pub unified: Option<String>,
    /// The v1 memory hierarchy's path; on a pure v2 host, the unified one.
    pub memory: Option<String>,
}

pub fn read(pid: u32) -> Option<ProcCgroups> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    Some(parse(&text))
}

/// `hierarchy-id:controllers:path` per line; `0::/path` is the unified hierarchy.
pub fn parse(text: &str) -> ProcCgroups {
    let mut cgroups = ProcCgroups::default();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            cgroups.unified = Some(path.to_owned());
        } else if controllers
            .split(',')
            .any(|controller| controller == "memory")
        {
            cgroups.memory = Some(path.to_owned());
        }
    }
    if cgroups.memory.is_none() {
        cgroups.memory.clone_from(&cgroups.unified);
    }
    cgroups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrid_host_has_both() {
        let text = "12:memory:/libpod_parent/libpod-abc\n\
                    11:cpu,cpuacct:/libpod_parent/libpod-abc\n\
                    1:name=systemd:/libpod_parent/libpod-abc\n\
                    0::/libpod_parent/libpod-abc\n";
        assert_eq!(
            parse(text),
            ProcCgroups {
                unified: Some("/libpod_parent/libpod-abc".to_owned()),
                memory: Some("/libpod_parent/libpod-abc".to_owned()),
            }
        );
    }

    #[test]
    fn a_unified_host_uses_one_path_for_both() {
        let parsed = parse("0::/system.slice/nginx.service\n");
        assert_eq!(
            parsed.memory.as_deref(),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(
            parsed.unified.as_deref(),
            Some("/system.slice/nginx.service")
        );
    }

    #[test]
    fn garbage_yields_nothing() {
        assert_eq!(
            parse("nonsense\n1:memory\n::relative\n"),
            ProcCgroups::default()
        );
    }

    #[test]
    fn this_process_is_somewhere() {
        let own = read(std::process::id()).expect("our own /proc entry");
        assert!(own.unified.is_some() || own.memory.is_some());
    }
}
