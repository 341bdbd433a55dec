//! The ops kit against a real Prometheus (Debian's `prometheus`, started on loopback):
//! it scrapes `meterline run` and `meterline serve` on the real broker and S3 with
//! `deploy/prometheus/alerts.yml` and `recording.yml` loaded. Every rule must load and
//! evaluate without error, every metric name a rule or a dashboard panel uses must be
//! among the live series (a panel or alert for a metric that does not exist fails
//! here), every dashboard expression must return data, and two faults must bring their
//! alerts to `pending` or `firing`: a burst of bad records (`MeterlineDeadLetterRate`)
//! and the process gone (`MeterlineDown`).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meterline::dev::testkit::{free_port, Process};

use crate::rig::{eventually, eventually_async, messages, serial, Rig, KEY_HEX};
use crate::GRACE;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

/// `GET path` over HTTP/1.0 (no chunked bodies): (status, body).
fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad response: {response:.80}"))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_owned()))
}

/// Percent-encoding of a query parameter's value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus on loopback scraping `targets` (job, port) every second.
struct Prometheus {
    port: u16,
    /// Stopped when dropped.
    _process: Process,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[(&str, u16)]) -> Self {
        let bin = std::env::var("METERLINE_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let port = free_port();
        let scrape: String = targets
            .iter()
            .map(|(job, p)| {
                format!("  - job_name: {job}\n    static_configs:\n      - targets: [\"127.0.0.1:{p}\"]\n")
            })
            .collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n  - {}\nscrape_configs:\n{scrape}",
                deploy("prometheus/alerts.yml").display(),
                deploy("prometheus/recording.yml").display(),
            ),
        )
        .unwrap();
        let mut command = Command::new(&bin);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let process = Process::spawn("prometheus", command);
        Self {
            port,
            _process: process,
        }
    }

    /// `data` of an API answer with `"status": "success"`, else the error.
    fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let (status, body) = get(self.port, path)?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{status} {e}: {body:.200}"))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{status}: {} {}", v["errorType"], v["error"]))
        }
    }

    /// The result vector of an instant query.
    fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(expr)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Names of every series Prometheus holds.
    fn names(&self) -> BTreeSet<String> {
        self.api("/api/v1/label/__name__/values")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect()
    }

    /// The state (`pending`, `firing`) of alert `name`, if it is active.
    fn alert_state(&self, name: &str) -> Option<String> {
        let data = self.api("/api/v1/alerts").ok()?;
        data["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .and_then(|a| a["state"].as_str().map(str::to_owned))
    }
}

/// The metric names an expression reads: its identifiers that are meterline's,
/// the process collector's, recorded (`level:metric:operations`) or `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| {
            t.starts_with("meterline_")
                || t.starts_with("process_")
                || *t == "up"
                || (t.contains(':') && !t.starts_with(':') && !t.ends_with(':'))
        })
        .map(str::to_owned)
        .collect()
}

/// Every target expression of the dashboard, Grafana's variables replaced.
fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("grafana/meterline.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                let expr = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$__interval", "15s")
                    .replace("$__range", "1h")
                    .replace("$instance", ".*")
                    .replace("${instance}", ".*");
                out.push((p["title"].as_str().unwrap_or("?").to_owned(), expr));
            }
        }
    }
    assert!(out.len() > 20, "{} dashboard expressions", out.len());
    out
}

const SERVE_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

/// The `[serve]` section of a loopback SQL server with its own metrics port.
fn serve_section(dir: &Path, sql_port: u16, metrics_port: u16) -> String {
    let secret = dir.join("jwt.secret");
    std::fs::write(&secret, SERVE_SECRET).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    format!(
        "\n[serve]\nlisten = \"127.0.0.1:{sql_port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
         [serve.jwt]\nhs256_secret_file = \"{}\"\nissuer = \"https://auth.example.no/\"\naudience = \"meterline\"\n",
        secret.display()
    )
}

/// One SQL query through `meterline serve` (psycopg, a token made with PyJWT), so
/// that the server's query metrics have series; its answer.
fn sql_query(sql_port: u16, secret: &str, sql: &str) -> String {
    let python = std::env::var("METERLINE_PYTHON").expect("METERLINE_PYTHON (scripts/test.sh)");
    let now = meterline::dev::testkit::clock().now().timestamp();
    let script = r#"
import sys, jwt, psycopg
port, secret, now, sql = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
token = jwt.encode({"iss": "https://auth.example.no/", "aud": "meterline", "tenant": "*",
                    "role": "operator", "iat": now, "exp": now + 3600}, secret, algorithm="HS256")
with psycopg.connect(host="127.0.0.1", port=port, dbname="meterline", user="ops", password=token,
                     sslmode="disable", autocommit=True, connect_timeout=30) as conn:
    print(conn.execute(sql).fetchone()[0])
"#;
    let out = Command::new(python)
        .args([
            "-c",
            script,
            &sql_port.to_string(),
            secret,
            &now.to_string(),
            sql,
        ])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the SQL query failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Steady good traffic until stopped: a new meter's day of hourly readings every
/// two seconds, so rates and shares have a denominator while the checks run (load,
/// not a synchronization).
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: Option<tokio::task::JoinHandle<u64>>,
}

impl Traffic {
    fn start(rig: &Rig) -> Self {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", rig.broker.bootstrap())
            .create()
            .expect("producer");
        let (topic, flag) = (rig.topic.clone(), stop.clone());
        let from: chrono::DateTime<chrono::Utc> = "2026-10-19T22:00:00Z".parse().unwrap();
        let task = tokio::spawn(async move {
            let mut sent = 0u64;
            let mut pace = tokio::time::interval(Duration::from_secs(2));
            for n in 0u32.. {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                pace.tick().await;
                let meter = meterline::dev::generator::gsrn(60_000 + n);
                for m in crate::traffic::hourly("acme-industri", &meter, None, from, 24, 0.5) {
                    producer
                        .send(
                            FutureRecord::<str, [u8]>::to(&topic)
                                .key(&m.key)
                                .payload(&m.payload),
                            Duration::from_secs(30),
                        )
                        .await
                        .expect("delivered");
                    sent += 1;
                }
            }
            sent
        });
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stop; the number of records sent.
    async fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.task.take().unwrap().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboards_and_alerts_work_on_a_live_prometheus() {
    let _serial = serial().await;
    let mut rig = Rig::new(2);
    let (run_port, serve_port, sql_port) = (free_port(), free_port(), free_port());
    let config = rig.config("prometheus", Some(run_port), "max_batch_rows = 1000");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&serve_section(rig.dir.path(), sql_port, serve_port));
    // The three inputs, so that their lag and pause series exist.
    let inputs = ["prices", "profiles", "weather"].map(|i| {
        let topic = meterline::dev::testkit::unique_name(i);
        rig.broker.create_topic(&topic, 1);
        topic
    });
    text.push_str(&format!(
        "\n[inputs]\nprices_topic = \"{}\"\nprofiles_topic = \"{}\"\nweather_topic = \"{}\"\n",
        inputs[0], inputs[1], inputs[2]
    ));
    std::fs::write(&config, text).unwrap();

    let dir = rig.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let prom = Prometheus::start(
        &dir,
        &[("meterline", run_port), ("meterline-serve", serve_port)],
    );
    rig.produce(&messages(2000, 0, 11)).await;
    let mut run = rig.spawn("run", &config);
    rig.await_rows(2000, Duration::from_secs(120)).await;
    let traffic = Traffic::start(&rig);
    let mut serve_cmd = Command::new(env!("CARGO_BIN_EXE_meterline"));
    serve_cmd
        .args(["serve", "--config"])
        .arg(&config)
        .env("METERLINE_PSEUDONYM_KEY", KEY_HEX);
    let mut serve = Process::spawn("serve", serve_cmd);
    serve.wait_line(0, Duration::from_secs(60), |l| {
        l.contains("serving the lake")
    });
    let counted = sql_query(sql_port, SERVE_SECRET, "SELECT count(*) FROM readings");
    assert!(counted.parse::<u64>().is_ok_and(|n| n >= 2000), "{counted}");
    eventually("both targets up", Duration::from_secs(60), || {
        prom.query("sum(up{job=~\"meterline|meterline-serve\"})")
            .ok()
            .and_then(|r| r.first().cloned())
            .is_some_and(|s| s["value"][1] == "2")
    })
    .await;

    // The rules: loaded, evaluated without error, reading metrics that exist.
    eventually("every rule evaluated", Duration::from_secs(60), || {
        prom.api("/api/v1/rules").is_ok_and(|d| {
            d["groups"].as_array().is_some_and(|g| {
                g.iter()
                    .flat_map(|g| g["rules"].as_array().unwrap().iter())
                    .all(|r| r["health"] == "ok")
            })
        })
    })
    .await;
    let rules = prom.api("/api/v1/rules").unwrap();
    let rules: Vec<(String, String)> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["query"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(rules.len() >= 40, "{} rules loaded", rules.len());
    let dashboard = dashboard_exprs();

    // Every dashboard expression returns data (rates need a few scrapes first).
    eventually_async(
        "every dashboard expression to return data",
        Duration::from_secs(120),
        || async {
            let empty: Vec<_> = dashboard
                .iter()
                .filter(|(_, e)| !prom.query(e).is_ok_and(|r| !r.is_empty()))
                .map(|(title, e)| format!("{title}: {e}"))
                .collect();
            if !empty.is_empty() {
                eprintln!("still without data: {empty:#?}");
            }
            empty.is_empty()
        },
    )
    .await;
    // A recorded series (`level:metric:operations`) must be recorded by a loaded
    // rule (one like a 15-minute `deriv` has no sample until it has two points);
    // every other name must be among the series the targets export.
    let live = prom.names();
    let recorded: BTreeSet<&str> = rules.iter().map(|(name, _)| name.as_str()).collect();
    for (name, expr) in rules.iter().chain(dashboard.iter()) {
        for metric in metric_names(expr) {
            let exists = if metric.contains(':') {
                recorded.contains(metric.as_str())
            } else {
                live.contains(&metric)
            };
            assert!(
                exists,
                "{name} reads `{metric}`, which no target exports and no rule records: {expr}"
            );
        }
    }

    // A burst of bad records, the steady traffic stopped: 500 of each of six reasons
    // against the 2001 good ones and the traffic's (12 a second for a minute or two), so
    // each reason is above 5 % of what was consumed in 15 minutes (the alert's threshold).
    let sent = traffic.stop().await;
    assert!(sent > 0);
    assert_eq!(
        prom.alert_state("MeterlineDeadLetterRate"),
        None,
        "before any bad record"
    );
    rig.produce(&messages(1, 3000, 12)).await;
    eventually(
        "MeterlineDeadLetterRate pending or firing",
        Duration::from_secs(120),
        || prom.alert_state("MeterlineDeadLetterRate").is_some(),
    )
    .await;
    assert_eq!(
        prom.alert_state("MeterlineDown"),
        None,
        "down while running"
    );

    // The process gone.
    run.kill();
    eventually(
        "MeterlineDown pending or firing",
        Duration::from_secs(60),
        || prom.alert_state("MeterlineDown").is_some(),
    )
    .await;
    serve.terminate(GRACE);
    drop(prom);
}
