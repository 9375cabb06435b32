//! Fuzzes the parsers of `/proc/<pid>/{cgroup,status,statm}` text. A process controls its
//! own cgroup names and comm, so these files carry untrusted bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

use oomtrace::procfs;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    let cgroups = procfs::parse(&text);
    // Whatever is reported is an absolute path that really occurs in the file.
    for path in cgroups.unified.iter().chain(cgroups.memory.iter()) {
        assert!(path.starts_with('/'), "relative path {path:?}");
        assert!(text.contains(path.as_str()), "{path:?} is not in the file");
    }
    if cgroups.unified.is_some() {
        assert!(
            cgroups.memory.is_some(),
            "the memory path falls back to the unified one"
        );
    }

    // Numbers, if any, come from the file's own fields.
    if let Some(tgid) = procfs::status_tgid(&text) {
        assert!(text.contains(&tgid.to_string()));
    }
    if let Some(inner) = procfs::namespace_pid(&text) {
        assert!(text.contains(&inner.to_string()));
    }
    if let Some(pages) = procfs::resident_pages(&text) {
        assert!(text.contains(&pages.to_string()));
    }
});
