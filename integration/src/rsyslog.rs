//! A private rsyslogd as a log drain: its own config, work folder and pid file, listening on
//! 127.0.0.1 only (a [`ReservedPort`]), writing what it receives from our test instance to a file.
//! Killed on drop.

use crate::servers::ReservedPort;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// PEM files of a test CA and a server certificate for 127.0.0.1 signed by it.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn generate(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "logs test CA");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        params.distinguished_name.push(rcgen::DnType::CommonName, "127.0.0.1");
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let cert = params.signed_by(&key, &issuer).expect("server cert");
        let files = Self { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") };
        std::fs::write(&files.ca, ca_cert.pem()).expect("write CA");
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }
}

pub struct Rsyslog {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub output: PathBuf,
    conf: PathBuf,
    _reserved: ReservedPort,
}

impl Rsyslog {
    /// Starts rsyslogd on a port of its own (plain TCP, or TLS with `tls`), writing the MSG of every
    /// message from app-name `inst-1` to `<dir>/received.log`, one per line.
    pub fn start(dir: &Path, tls: Option<&TlsFiles>) -> Self {
        Self::start_on(dir, ReservedPort::new(), tls)
    }

    /// As [`Rsyslog::start`], on a port reserved earlier (a drain pointed at it before the server
    /// is up sees connections refused, and no other process can take the port meanwhile).
    ///
    /// The main queue is direct: the thread that reads a connection writes its messages before it
    /// reads the next bytes, so once rsyslogd has closed a connection everything sent on it is in
    /// the output file ([`Rsyslog::wait_connections_closed`]).
    pub fn start_on(dir: &Path, reserved: ReservedPort, tls: Option<&TlsFiles>) -> Self {
        // Never pass quietly: a missing drain server is a broken test machine.
        assert!(
            Path::new(RSYSLOGD).exists(),
            "{RSYSLOGD} is not installed: apt-get install rsyslog rsyslog-gnutls (integration/run-tests.sh installs it)"
        );
        let port = reserved.port();
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).expect("create rsyslog work folder");
        let output = dir.join("received.log");
        let (global, input) = match tls {
            None => (String::new(), "module(load=\"imtcp\")".to_string()),
            Some(t) => (
                format!(
                    "global(DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{}\" DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\")\n",
                    t.ca.display(),
                    t.cert.display(),
                    t.key.display()
                ),
                "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")".to_string(),
            ),
        };
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{work}\" maxMessageSize=\"256k\")\n{global}main_queue(queue.type=\"Direct\")\n{input}\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
                 template(name=\"msgonly\" type=\"string\" string=\"%msg%\\n\")\n\
                 if $app-name == \"inst-1\" then {{\n  action(type=\"omfile\" file=\"{out}\" template=\"msgonly\" asyncWriting=\"off\" flushOnTXEnd=\"on\")\n  stop\n}}\n",
                work = work.display(),
                out = output.display(),
            ),
        )
        .expect("write rsyslog.conf");
        let mut r = Self { child: None, port, dir: dir.to_path_buf(), output, conf, _reserved: reserved };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let pid = self.dir.join("rsyslogd.pid");
        let _ = std::fs::remove_file(&pid);
        let child = Command::new(RSYSLOGD)
            .args(["-n", "-f"])
            .arg(&self.conf)
            .arg("-i")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        assert!(
            crate::servers::listening_within(([127, 0, 0, 1], self.port).into(), Duration::from_secs(10)),
            "rsyslogd did not listen on {} within 10 s",
            self.port
        );
    }

    /// The agent's drain to this receiver: plaintext syslog over TCP to 127.0.0.1, named "rsyslog".
    pub fn plain_drain(&self) -> dbagent_proto::v1::Drain {
        use dbagent_proto::v1::{SyslogDrain, drain::Target};
        let syslog = SyslogDrain { address: format!("127.0.0.1:{}", self.port), tls: false, ca_pem: String::new() };
        dbagent_proto::v1::Drain { name: "rsyslog".into(), target: Some(Target::Syslog(syslog)) }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Bytes written to the output so far: a cheap measure of progress to poll.
    pub fn received_bytes(&self) -> u64 {
        std::fs::metadata(&self.output).map(|m| m.len()).unwrap_or(0)
    }

    /// Waits until rsyslogd holds no open connection on its port (it read each to the end and
    /// closed it), so all a dead sender sent is in the output; panics after `timeout`.
    pub fn wait_connections_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let open = open_connections(self.port);
            if open == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "rsyslogd still has {open} connections open after {timeout:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The messages received so far.
    pub fn received(&self) -> Vec<String> {
        std::fs::read_to_string(&self.output).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Waits until at least `n` messages arrived, or `timeout`; returns what arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Server-side TCP sockets on 127.0.0.1:`port` that are not closed yet: accepted or waiting to be
/// (SYN_RECV, ESTABLISHED), or with the peer gone and rsyslogd yet to read the end (CLOSE_WAIT).
fn open_connections(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.len() > 3 && fields[1] == local && matches!(fields[3], "01" | "03" | "08")
        })
        .count()
}
