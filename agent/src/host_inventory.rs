//! What the host is: operating system, kernel, CPUs and memory, as the orchestrator places databases by
//! them. Read once when the agent starts: none of it changes while the agent runs short of a
//! hot-plug (seen at the next start), and GetInfo should not scan /proc on every call.

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// The host's inventory. A part that cannot be read stays empty (or 0), logged once at start: the
/// agent serves without it rather than refusing to start over an informational field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInventory {
    /// The distribution's name from os-release, e.g. "Debian GNU/Linux".
    pub os_name: String,
    /// The distribution's version from os-release, e.g. "12".
    pub os_version: String,
    /// The running kernel's release, e.g. "6.1.0-18-amd64".
    pub kernel_version: String,
    /// The CPU model name; distinct models joined by ", " on a host that mixes them.
    pub cpu_model: String,
    /// Logical CPUs online.
    pub cpu_count: u32,
    /// Total usable memory (MemTotal), in bytes.
    pub memory_bytes: u64,
}

impl HostInventory {
    /// Reads the inventory from the running host.
    pub fn read() -> Self {
        let mut inventory = HostInventory {
            os_name: or_empty("the OS name", System::name()),
            os_version: or_empty("the OS version", System::os_version()),
            kernel_version: or_empty("the kernel version", System::kernel_version()),
            ..HostInventory::default()
        };
        let refresh = RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram());
        match System::new_with_specifics(refresh) {
            Ok(system) => {
                let mut models: Vec<&str> = Vec::new();
                for cpu in system.cpus() {
                    if !models.contains(&cpu.brand()) {
                        models.push(cpu.brand());
                    }
                }
                inventory.cpu_model = models.join(", ");
                inventory.cpu_count = u32::try_from(system.cpus().len()).unwrap_or(u32::MAX);
                inventory.memory_bytes = system.total_memory();
            }
            Err(e) => tracing::warn!("read the host's CPUs and memory: {e}; GetInfo reports them as 0"),
        }
        inventory
    }
}

fn or_empty(what: &str, value: Result<String, sysinfo::Error>) -> String {
    value.unwrap_or_else(|e| {
        tracing::warn!("read {what}: {e}; GetInfo reports it empty");
        String::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_file(name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{name}")).unwrap()
    }

    #[test]
    fn cpus_match_proc_cpuinfo() {
        let cpuinfo = proc_file("cpuinfo");
        let inventory = HostInventory::read();
        let processors = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
        assert_eq!(inventory.cpu_count as usize, processors);
        // x86 names the model on "model name" lines; other architectures may not, so only where it is.
        if let Some(model) = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")) {
            let model = model.trim_start_matches([' ', '\t', ':']).trim();
            assert!(inventory.cpu_model.contains(model), "{:?} should name {model:?}", inventory.cpu_model);
        }
    }

    #[test]
    fn memory_matches_meminfo() {
        let meminfo = proc_file("meminfo");
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert_eq!(HostInventory::read().memory_bytes, kib * 1024);
    }

    #[test]
    fn os_and_kernel_match_the_host() {
        let inventory = HostInventory::read();
        assert_eq!(inventory.kernel_version, proc_file("sys/kernel/osrelease").trim());
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
        let field = |key: &str| os_release.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.replace('"', ""));
        assert_eq!(Some(inventory.os_name.clone()), field("NAME="));
        assert!(!inventory.os_name.is_empty(), "{inventory:?}");
        // VERSION_ID is optional in os-release (rolling distributions leave it out).
        if let Some(version) = field("VERSION_ID=") {
            assert_eq!(inventory.os_version, version);
        }
    }
}
