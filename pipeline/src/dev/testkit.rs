//! Real infrastructure on loopback for the end-to-end tests and benchmarks: a
//! [tansu](https://crates.io/crates/tansu) Kafka-protocol broker, an S3 API server
//! (`moto_server`), and `meterline run` child processes whose logs are watched.
//!
//! Every [`Broker`] and [`S3Server`] is a separate process on a free port, owned
//! by one test: a test may pause (SIGSTOP) its broker or its storage without
//! disturbing other tests. Dropping the handle stops the process.
//!
//! Tools are found through `METERLINE_TANSU` and `METERLINE_MOTO_SERVER`, then in
//! `~/.cache/meterline-tools` (where `scripts/test.sh` installs them), then on
//! `PATH`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Where `scripts/test.sh` installs tansu (built with the `libsql` storage engine)
/// under `~/.cache/meterline-tools`.
pub const TANSU_CACHED: &str = "tansu-0.6.0-libsql/bin/tansu";

/// Paths of the external programs.
#[derive(Debug, Clone)]
pub struct Tools {
    pub tansu: PathBuf,
    pub moto_server: PathBuf,
}

fn tools_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/meterline-tools"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn locate(env: &str, cached: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    if let Some(p) = tools_dir().map(|d| d.join(cached)).filter(|p| p.is_file()) {
        return Ok(p);
    }
    on_path(name).ok_or_else(|| {
        format!(
            "`{name}` not found: run scripts/test.sh (it installs the test tools into \
             ~/.cache/meterline-tools) or set {env}"
        )
    })
}

impl Tools {
    /// Find the tools or explain how to get them.
    ///
    /// # Errors
    /// A tool is neither configured, cached nor on `PATH`.
    pub fn find() -> Result<Self, String> {
        Ok(Self {
            tansu: locate("METERLINE_TANSU", TANSU_CACHED, "tansu")?,
            moto_server: locate(
                "METERLINE_MOTO_SERVER",
                "venv/bin/moto_server",
                "moto_server",
            )?,
        })
    }
}

/// A port nobody listens on right now.
///
/// # Panics
/// Loopback cannot be bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind loopback")
        .port()
}

/// A random lower-case name with a prefix, for topics, groups and buckets.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// A server process on a loopback port; stopped when dropped.
#[derive(Debug)]
pub struct Server {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn spawn(name: &'static str, mut command: Command, port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let mut server = Self {
            name,
            child,
            port,
            log,
            _dir: dir,
        };
        server.await_listening(Duration::from_secs(60));
        server
    }

    /// Poll until the port accepts connections (readiness, not a fixed sleep).
    fn await_listening(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before listening:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on port {} within {timeout:?}:\n{}",
                self.name,
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing.
    pub fn pause(&self) {
        assert!(signal(self.pid(), "STOP"), "SIGSTOP {}", self.name);
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        assert!(signal(self.pid(), "CONT"), "SIGCONT {}", self.name);
    }

    /// The server's output so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        signal(self.pid(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tansu broker storing its log in SQLite (in the broker's temporary directory).
///
/// Not the `memory://` engine: tansu 0.6's object-store engines answer a fetch at
/// an offset inside a record batch with the *next* batch, silently skipping the
/// rest of the batch, so a consumer resuming at a stored offset loses records.
/// The SQL engines store records individually and fetch from the exact offset,
/// as Apache Kafka does.
#[derive(Debug)]
pub struct Broker {
    pub server: Server,
    tansu: PathBuf,
    _data: tempfile::TempDir,
    /// The TLS terminator in front of the broker, and the CA that signed its
    /// certificate ([`Broker::start_behind_tls`]).
    tls: Option<(Server, PathBuf)>,
    /// The SCRAM-SHA-512 user clients authenticate as
    /// ([`Broker::start_authenticating`]).
    user: Option<(String, String)>,
}

impl Broker {
    /// Start a broker on a free port.
    ///
    /// # Panics
    /// The broker does not start.
    pub fn start(tools: &Tools) -> Self {
        Self::start_with(tools, "sqlite://tansu.db")
    }

    /// Start a broker that keeps its records in memory (tansu's `memory://`
    /// engine; a tansu built with its `dynostore` feature).
    ///
    /// Only for runs that read each topic once from its start, as the
    /// `kafka_to_lake` bench does: tansu 0.6's object-store engines answer a fetch
    /// at an offset inside a record batch with the next batch, so a consumer
    /// resuming at a stored offset loses records. Its SQLite engine sums the sizes
    /// of all of a partition's records past the fetch offset for every fetch, so
    /// a topic of millions of records stops draining.
    ///
    /// # Panics
    /// The broker does not start.
    pub fn start_in_memory(tools: &Tools) -> Self {
        Self::start_with(tools, "memory://tansu/")
    }

    /// Start a broker that clients reach over TLS only: tansu on a private
    /// loopback port, advertising the port of a TLS terminator (`stunnel`, with
    /// the server certificate of `ca`) in front of it. tansu 0.6 has TLS options,
    /// but its broker does not use them.
    ///
    /// # Panics
    /// The broker or stunnel does not start (stunnel is found through
    /// `METERLINE_STUNNEL`, then `stunnel4` or `stunnel` on `PATH`).
    pub fn start_behind_tls(tools: &Tools, ca: &TestCa) -> Self {
        let stunnel = std::env::var_os("METERLINE_STUNNEL")
            .map(PathBuf::from)
            .or_else(|| on_path("stunnel4"))
            .or_else(|| on_path("stunnel"))
            .unwrap_or_else(|| {
                panic!("stunnel not found: run scripts/test.sh (it installs stunnel4) or set METERLINE_STUNNEL")
            });
        let tls_port = free_port();
        let mut broker = Self::start_advertising(
            tools,
            "sqlite://tansu.db",
            &format!("tcp://127.0.0.1:{tls_port}"),
        );
        let config = ca.dir.path().join(format!("stunnel-{tls_port}.conf"));
        std::fs::write(
            &config,
            format!(
                "foreground = yes\npid =\ndebug = notice\n[kafka]\naccept = 127.0.0.1:{tls_port}\n\
                 connect = 127.0.0.1:{plain}\ncert = {cert}\nkey = {key}\nsslVersionMin = TLSv1.2\n",
                plain = broker.server.port(),
                cert = ca.cert.display(),
                key = ca.key.display(),
            ),
        )
        .expect("stunnel config");
        let mut command = Command::new(stunnel);
        command.arg(&config);
        broker.tls = Some((Server::spawn("stunnel", command, tls_port), ca.ca.clone()));
        broker
    }

    /// Start a broker that requires SASL/SCRAM-SHA-512 authentication, with one
    /// user and `topics` (name, partitions) created. tansu's own CLI cannot
    /// authenticate, so the user and the topics are created on a first start
    /// without authentication, and the broker is then started again on the same
    /// port and data with `--authentication`.
    ///
    /// # Panics
    /// The broker does not start, or tansu refuses the user or a topic.
    pub fn start_authenticating(
        tools: &Tools,
        user: &str,
        password: &str,
        topics: &[(&str, i32)],
    ) -> Self {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let data = tempfile::tempdir().expect("tempdir");
        let command = |authentication: bool| {
            let mut command = tansu_broker(tools, data.path(), &url, &url, "sqlite://tansu.db");
            if authentication {
                command.arg("--authentication");
            }
            command
        };
        let tansu = |args: &[&str]| {
            let output = Command::new(&tools.tansu)
                .args(args)
                .args(["--broker", &url])
                .output()
                .expect("tansu");
            assert!(
                output.status.success(),
                "tansu {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        };
        {
            let _open = Server::spawn("tansu", command(false), port);
            tansu(&["user", "create", user, password, "--mechanism", "scram512"]);
            for (topic, partitions) in topics {
                tansu(&[
                    "topic",
                    "create",
                    topic,
                    "--partitions",
                    &partitions.to_string(),
                ]);
            }
            // Dropped here: killed and reaped before the port is taken again.
        }
        Self {
            server: Server::spawn("tansu", command(true), port),
            tansu: tools.tansu.clone(),
            _data: data,
            tls: None,
            user: Some((user.to_owned(), password.to_owned())),
        }
    }

    fn start_with(tools: &Tools, storage_engine: &str) -> Self {
        Self::start_advertising(tools, storage_engine, "")
    }

    /// tansu on a free port, advertising `advertised` (its own address when empty).
    fn start_advertising(tools: &Tools, storage_engine: &str, advertised: &str) -> Self {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = if advertised.is_empty() {
            url.clone()
        } else {
            advertised.to_owned()
        };
        let data = tempfile::tempdir().expect("tempdir");
        let command = tansu_broker(tools, data.path(), &url, &advertised, storage_engine);
        Self {
            server: Server::spawn("tansu", command, port),
            tansu: tools.tansu.clone(),
            _data: data,
            tls: None,
            user: None,
        }
    }

    /// `host:port` for librdkafka's `bootstrap.servers` (the TLS terminator's,
    /// for a broker behind TLS).
    pub fn bootstrap(&self) -> String {
        let port = self
            .tls
            .as_ref()
            .map_or(self.server.port(), |(t, _)| t.port());
        format!("127.0.0.1:{port}")
    }

    /// The librdkafka properties a client needs to reach this broker: TLS with
    /// the test CA for a broker behind TLS, nothing otherwise.
    pub fn client_properties(&self) -> Vec<(&'static str, String)> {
        let mut properties = Vec::new();
        let protocol = match (&self.tls, &self.user) {
            (None, None) => return properties,
            (Some(_), None) => "SSL",
            (None, Some(_)) => "SASL_PLAINTEXT",
            (Some(_), Some(_)) => "SASL_SSL",
        };
        properties.push(("security.protocol", protocol.to_owned()));
        if let Some((_, ca)) = &self.tls {
            properties.push(("ssl.ca.location", ca.display().to_string()));
        }
        if let Some((user, password)) = &self.user {
            properties.push(("sasl.mechanism", "SCRAM-SHA-512".to_owned()));
            properties.push(("sasl.username", user.clone()));
            properties.push(("sasl.password", password.clone()));
        }
        properties
    }

    /// The TLS terminator in front of the broker, if any.
    pub fn tls_server(&self) -> Option<&Server> {
        self.tls.as_ref().map(|(t, _)| t)
    }

    /// Create a topic with `partitions` partitions.
    ///
    /// # Panics
    /// tansu refuses.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let output = Command::new(&self.tansu)
            .args(["topic", "create", name])
            .args(["--partitions", &partitions.to_string()])
            // The broker's own port: tansu's CLI does not speak TLS.
            .args([
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.server.port()),
            ])
            .output()
            .expect("tansu topic create");
        assert!(
            output.status.success(),
            "tansu topic create {name}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// `tansu broker` listening on `url`, advertising `advertised`, its data in `data`.
fn tansu_broker(
    tools: &Tools,
    data: &std::path::Path,
    url: &str,
    advertised: &str,
    storage_engine: &str,
) -> Command {
    let mut command = Command::new(&tools.tansu);
    command
        // tansu resolves the SQLite path relative to its working directory.
        .current_dir(data)
        .arg("broker")
        .args(["--listener-url", url])
        .args(["--advertised-listener-url", advertised])
        .args(["--storage-engine", storage_engine])
        .env("RUST_LOG", "warn");
    command
}

/// A certificate authority and a server certificate it signed, for 127.0.0.1
/// and `localhost`, made for one test with the `openssl` command (EC P-256,
/// valid for 30 days from now).
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
    /// The CA certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    /// The server certificate and key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// # Panics
    /// `openssl` is missing or fails.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap_or_else(|e| panic!("openssl (scripts/test.sh installs it): {e}"));
            assert!(
                output.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &[
                    "req",
                    "-x509",
                    "-days",
                    "30",
                    "-subj",
                    "/CN=meterline test CA",
                ][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req", "-subj", "/CN=localhost"][..],
                &ec,
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
        );
        std::fs::write(
            path("server.ext"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n\
             keyUsage = digitalSignature\nextendedKeyUsage = serverAuth\n",
        )
        .expect("extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        Self {
            ca: path("ca.pem"),
            cert: path("server.pem"),
            key: path("server.key"),
            dir,
        }
    }
}

/// An S3 API server (moto) keeping objects in memory.
#[derive(Debug)]
pub struct S3Server {
    pub server: Server,
}

impl S3Server {
    /// Start a server on a free port.
    ///
    /// # Panics
    /// The server does not start.
    pub fn start(tools: &Tools) -> Self {
        let port = free_port();
        let mut command = Command::new(&tools.moto_server);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("PYTHONUNBUFFERED", "1");
        Self {
            server: Server::spawn("moto_server", command, port),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port())
    }

    /// Create a bucket (an unsigned `PUT /bucket`, which moto accepts).
    ///
    /// # Panics
    /// The server answers anything but 200.
    pub fn create_bucket(&self, bucket: &str) {
        let status = http(self.server.port(), "PUT", &format!("/{bucket}"))
            .expect("create bucket")
            .0;
        assert_eq!(status, 200, "create bucket {bucket}");
    }

    /// `[lake.storage_options]` for a lake on this server. Short client timeouts
    /// so that an outage surfaces as retried storage errors within seconds.
    pub fn storage_options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("endpoint", self.endpoint()),
            ("region", "us-east-1".into()),
            ("allow_http", "true".into()),
            ("access_key_id", "meterline-test".into()),
            ("secret_access_key", "meterline-test".into()),
            ("timeout", "5s".into()),
            ("connect_timeout", "2s".into()),
            ("max_retries", "1".into()),
            ("retry_timeout", "5s".into()),
        ]
    }
}

/// A minimal HTTP/1.1 request on loopback: (status, body).
///
/// # Errors
/// Connection or protocol errors.
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {response:.80}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// A `meterline run` (or compatible) child process whose stderr is collected
/// line by line, so tests can wait for what it reports instead of sleeping.
pub struct Process {
    pub name: String,
    child: Child,
    lines: Arc<(Mutex<Lines>, Condvar)>,
    /// No wait for a log line lasts past this (a test's overall time cap).
    deadline: Option<Instant>,
}

impl Process {
    /// Spawn `command` (its stderr is captured and echoed with a `[name]` prefix),
    /// on the tests' [`clock`].
    ///
    /// # Panics
    /// The program cannot be started.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        // The tests' clock, unless the test gave the process a "now" of its own
        // (a scenario that runs phases at fixed instants).
        let own_now = command
            .get_envs()
            .any(|(k, v)| k == crate::config::FAKE_NOW_ENV && v.is_some());
        if !own_now {
            command.envs(clock_env());
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let lines: Arc<(Mutex<Lines>, Condvar)> = Arc::default();
        let sink = lines.clone();
        let prefix = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{prefix}] {line}");
                let (m, cv) = &*sink;
                m.lock().unwrap_or_else(|e| e.into_inner()).lines.push(line);
                cv.notify_all();
            }
            let (m, cv) = &*sink;
            m.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            cv.notify_all();
        });
        Self {
            name: name.to_owned(),
            child,
            lines,
            deadline: None,
        }
    }

    /// Cap every later [`wait_line`](Self::wait_line) at `deadline`, whatever
    /// timeout it asks for: a test that gives itself an overall time cap fails
    /// at the cap instead of adding up its waits.
    pub fn cap_waits_at(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until a line at index >= `from` satisfies `pred`; returns its index.
    ///
    /// # Panics
    /// Timeout, the cap set by [`cap_waits_at`](Self::cap_waits_at), or the
    /// process closed its stderr (exited) first.
    pub fn wait_line(&self, from: usize, timeout: Duration, pred: impl Fn(&str) -> bool) -> usize {
        let started = Instant::now();
        let wanted = started + timeout;
        let deadline = self.deadline.map_or(wanted, |cap| cap.min(wanted));
        let (m, cv) = &*self.lines;
        let mut guard = m.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = from;
        loop {
            while next < guard.lines.len() {
                if pred(&guard.lines[next]) {
                    return next;
                }
                next += 1;
            }
            assert!(
                !guard.closed,
                "{}: exited before the awaited log line",
                self.name
            );
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: awaited log line not seen within {:?}{}",
                self.name,
                started.elapsed(),
                if deadline < wanted {
                    " (the test's overall time cap)"
                } else {
                    ""
                }
            );
            guard = cv
                .wait_timeout(guard, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// All lines so far matching `pred`.
    pub fn lines_matching(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let guard = self.lines.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.lines.iter().filter(|l| pred(l)).cloned().collect()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `timeout` for the exit; `None` if it did not exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        assert!(signal(self.pid(), "TERM"), "SIGTERM {}", self.name);
        self.wait_exit(timeout)
    }

    /// Wait up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader thread collect the last lines.
                let (m, cv) = &*self.lines;
                let mut guard = m.lock().unwrap_or_else(|e| e.into_inner());
                while !guard.closed {
                    guard = cv
                        .wait_timeout(guard, Duration::from_secs(5))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The ledger a process logs when it stops cleanly (its last `ledger:` line).
    ///
    /// # Errors
    /// No ledger line, or a line without one of the four counts: a test must not
    /// read an absent count as 0 (0 = 0 + 0 + 0 balances).
    pub fn ledger(&self) -> Result<Ledger, String> {
        let lines = self.lines_matching(|l| l.contains("ledger:"));
        let line = lines
            .last()
            .ok_or_else(|| format!("{} logged no ledger", self.name))?;
        Ledger::parse(line).map_err(|e| format!("{}: {e}", self.name))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One process's account of the records it consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ledger {
    pub consumed: u64,
    pub written: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
}

impl Ledger {
    /// The four counts of a ledger log line (`consumed=10 written=7 ...`).
    ///
    /// # Errors
    /// A count is missing or not a number.
    pub fn parse(line: &str) -> Result<Self, String> {
        Ok(Self {
            consumed: field(line, "consumed")?,
            written: field(line, "written")?,
            dead_lettered: field(line, "dead_lettered")?,
            dropped: field(line, "dropped")?,
        })
    }

    pub fn balanced(&self) -> bool {
        self.consumed == self.written + self.dead_lettered + self.dropped
    }
}

/// `name=123` in a log line.
fn field(line: &str, name: &str) -> Result<u64, String> {
    let key = format!("{name}=");
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&key))
        .ok_or_else(|| format!("no `{key}` in the ledger line: {line}"))?;
    value
        .parse()
        .map_err(|_| format!("`{key}{value}` is not a count in the ledger line: {line}"))
}

/// The tests' clock: `METERLINE_FAKE_NOW` when set (`scripts/test.sh --dates`
/// runs the date-dependent tests at several moments that way), else the system
/// clock. One clock per test process, so every test in it reads the same "now".
///
/// # Panics
/// When `METERLINE_FAKE_NOW` is not an RFC 3339 instant with an offset.
pub fn clock() -> meterline_operators::Clock {
    static CLOCK: std::sync::OnceLock<meterline_operators::Clock> = std::sync::OnceLock::new();
    *CLOCK.get_or_init(|| crate::config::clock_from_env().unwrap_or_else(|e| panic!("{e}")))
}

/// Environment for a child `meterline` process so that it reads the tests' clock:
/// `METERLINE_FAKE_NOW` at the tests' "now" (a child started later than the test
/// process must not start back at the original instant).
pub fn clock_env() -> Option<(&'static str, String)> {
    let clock = clock();
    clock
        .is_shifted()
        .then(|| (crate::config::FAKE_NOW_ENV, clock.now().to_rfc3339()))
}

/// The test oracle of monthly key epochs: the months whose keys must exist on
/// local date `today` with `grace` days, worked out from the rule alone (every
/// month whose end plus the grace lies after today, up to next month), not by
/// `Epoch::open`.
pub fn expected_open_months(
    today: chrono::NaiveDate,
    grace: u32,
) -> Vec<meterline_operators::epoch::Epoch> {
    use chrono::{Datelike, Duration};
    let first = |d: chrono::NaiveDate| d.with_day(1).expect("day 1 exists");
    let next_month = first(first(today) + Duration::days(32));
    let mut month = first(today - Duration::days(i64::from(grace) + 62));
    let mut out = Vec::new();
    while month <= next_month {
        let end = first(month + Duration::days(32));
        if end + Duration::days(i64::from(grace)) > today {
            out.push(meterline_operators::epoch::Epoch::Month(
                month.year(),
                month.month(),
            ));
        }
        month = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "2026-11-23T10:00:00Z  INFO meterline::service: ledger: consumed = written + dead_lettered + dropped consumed=10 written=7 dead_lettered=2 dropped=1 balanced=true";

    #[test]
    fn ledger_fields_parse_from_the_log_line() {
        let ledger = Ledger::parse(LINE).unwrap();
        assert_eq!(
            ledger,
            Ledger {
                consumed: 10,
                written: 7,
                dead_lettered: 2,
                dropped: 1
            }
        );
        assert!(ledger.balanced());
    }

    #[test]
    fn a_ledger_line_without_a_count_is_an_error_not_zero() {
        for name in ["consumed", "written", "dead_lettered", "dropped"] {
            let line = LINE.replace(&format!(" {name}="), &format!(" {name}_total="));
            let err = Ledger::parse(&line).unwrap_err();
            assert!(err.contains(&format!("no `{name}=`")), "{err}");
        }
        let err = Ledger::parse(&LINE.replace("written=7", "written=seven")).unwrap_err();
        assert!(err.contains("not a count"), "{err}");
    }
}
