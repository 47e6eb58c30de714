//! The host inventory through the real binary: GetInfo reports this host's CPUs, memory, kernel and
//! OS as /proc and os-release show them, and `dbagentctl info` prints them.

use dbagent_integration::Agent;
use dbagent_proto::v1::GetInfoRequest;
use dbagent_proto::v1::agent_client::AgentClient;
use std::process::Command;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn processor_count() -> u64 {
    read("/proc/cpuinfo").lines().filter(|l| l.starts_with("processor")).count() as u64
}

fn mem_total_bytes() -> u64 {
    let kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib * 1024
}

#[tokio::test]
async fn get_info_reports_this_host() {
    let agent = Agent::start_dev();
    let info = AgentClient::new(agent.monitor().await).get_info(GetInfoRequest {}).await.unwrap().into_inner();
    let host = info.host.expect("GetInfo carries the host inventory");
    assert_eq!(u64::from(host.cpu_count), processor_count());
    assert_eq!(host.memory_bytes, mem_total_bytes());
    assert_eq!(host.kernel_version, read("/proc/sys/kernel/osrelease").trim());
    let os_release = read("/etc/os-release");
    let name = os_release.lines().find_map(|l| l.strip_prefix("NAME=")).expect("NAME in os-release");
    assert_eq!(host.os_name, name.replace('"', ""));
    assert!(!host.cpu_model.is_empty(), "{host:?}");
}

#[tokio::test]
async fn dbagentctl_info_prints_the_host() {
    let agent = Agent::start_dev();
    let ctl = dbagent_integration::agent::agent_binary().with_file_name("dbagentctl");
    let config = agent.state_dir().join("monitor.toml");
    let run = |output: &str| {
        let out = Command::new(&ctl)
            .args(["--config".as_ref(), config.as_os_str(), "--output".as_ref(), output.as_ref(), "info".as_ref()])
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", ctl.display()));
        assert!(out.status.success(), "dbagentctl info: {}\n{}", String::from_utf8_lossy(&out.stderr), agent.log());
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(json["host"]["cpu_count"], processor_count());
    assert_eq!(json["host"]["memory_bytes"], mem_total_bytes());
    let table = run("table");
    let kernel = read("/proc/sys/kernel/osrelease");
    assert!(table.lines().any(|l| l.starts_with("kernel:") && l.ends_with(kernel.trim())), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("cpus:") && l.contains(&format!(" {} x ", processor_count()))),
        "{table}"
    );
}
