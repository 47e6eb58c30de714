//! TOML for `dbagent --config FILE`, written the way an operator would.

use crate::agent::LaunchContext;
use crate::pki::PkiFiles;
use std::path::Path;

/// A TOML basic string for `path`; JSON string escaping is valid TOML for these paths.
pub fn toml_path(path: &Path) -> String {
    serde_json::to_string(&path.to_string_lossy()).expect("a string always serializes")
}

/// A complete config for an agent using `pki`, the given CRL files and roles, with test kinds on.
pub fn custom_config(
    ctx: &LaunchContext,
    pki: &PkiFiles,
    crls: &[&Path],
    orchestrators: &[&str],
    monitors: &[&str],
) -> String {
    let list = |items: Vec<String>| items.join(", ");
    let quoted = |names: &[&str]| list(names.iter().map(|n| serde_json::to_string(n).expect("string")).collect());
    format!(
        r#"state_dir = {state_dir}

[api]
listen = "{listen}"
shutdown_grace_secs = 5

[tls]
cert = {cert}
key = {key}
client_ca = {ca}
crls = [{crls}]

[auth]
orchestrators = [{orchestrators}]
monitors = [{monitors}]

[operations]
enable_test_kinds = true

# Tests run many agents side by side: any free port for Prometheus.
[metrics]
prometheus_listen = "127.0.0.1:0"

# The tests' log receivers listen on 127.0.0.1 without TLS: allowed here explicitly, as the
# packaged config refuses loopback and plaintext syslog.
[logs.drain_policy]
allowed_cidrs = ["127.0.0.0/8"]
plaintext_syslog_cidrs = ["127.0.0.0/8"]
"#,
        state_dir = toml_path(&ctx.state_dir),
        listen = ctx.listen,
        cert = toml_path(&pki.cert),
        key = toml_path(&pki.key),
        ca = toml_path(&pki.ca),
        crls = list(crls.iter().map(|p| toml_path(p)).collect()),
        orchestrators = quoted(orchestrators),
        monitors = quoted(monitors),
    )
}

/// `config` with `lines` added at the top of its `[section]`, which is appended when missing.
pub fn with_lines(config: &str, section: &str, lines: &str) -> String {
    let header = format!("[{section}]\n");
    match config.find(&header) {
        Some(at) => {
            let body = at + header.len();
            format!("{}{lines}\n{}", &config[..body], &config[body..])
        }
        None => format!("{config}\n{header}{lines}\n"),
    }
}
