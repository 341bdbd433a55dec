//! Security in transit: a broker reachable over TLS only (tansu behind stunnel,
//! with a CA and a server certificate made for the test), and the refusals at
//! start (plaintext to a broker off loopback, a key file others may read).

use std::process::Command;
use std::time::Duration;

use meterline::dev::testkit::{Broker, TestCa, Tools};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::rig::{assert_ledger, messages, metric, scrape, serial, Rig, KEY_HEX};
use crate::GRACE;

/// Readings reach the lake exactly once through TLS. Before that, the same
/// configuration without the CA is refused by the TLS handshake: the log says
/// the certificate is not trusted and what to set, nothing is consumed, and
/// nothing is lost (the run with the CA takes every record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_flow_over_tls_exactly_once_and_a_client_without_the_ca_is_refused() {
    let _serial = serial().await;
    let tools = Tools::find().unwrap_or_else(|e| panic!("{e}"));
    let ca = TestCa::generate();
    let broker = Broker::start_behind_tls(&tools, &ca);
    let mut rig = Rig::with_broker(&tools, broker, 2);
    // The only address clients learn is the TLS terminator's: plaintext gets no
    // answer there, so whatever reaches the lake came over TLS.
    let plain: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", rig.broker.bootstrap())
        .set("log_level", "0")
        .create()
        .unwrap();
    assert!(
        plain.fetch_metadata(None, Duration::from_secs(3)).is_err(),
        "the TLS port answered a plaintext client"
    );
    rig.produce(&messages(12_000, 10, 61)).await;

    // Without the CA.
    let port = meterline::dev::testkit::free_port();
    let untrusting = rig.config_with(
        "tls-no-ca",
        Some(port),
        "max_batch_rows = 5000",
        &[("security.protocol", "\"SSL\"")],
    );
    let mut p = rig.spawn("run-without-ca", &untrusting);
    p.wait_line(0, Duration::from_secs(60), |l| {
        l.contains("kafka client error") && l.contains("certificate verify failed")
    });
    // meterline's line, with its hint (librdkafka's own line has none).
    let logged = &p.lines_matching(|l| {
        l.contains("kafka client error") && l.contains("certificate verify failed")
    })[0];
    assert!(
        logged.contains("hint=") && logged.contains("not trusted"),
        "no hint: {logged}"
    );
    let consumed = metric(
        &scrape(port).expect("metrics of the refused run"),
        "meterline_records_consumed_total",
    );
    assert_eq!(consumed, 0.0, "records consumed without a trusted broker");
    let status = p.terminate(GRACE);
    assert!(status.is_some_and(|s| s.success()), "clean stop");

    // With the CA: everything, once.
    let ca_path = ca.ca.display().to_string();
    let trusting = rig.config_with(
        "tls",
        None,
        "max_batch_rows = 5000",
        &[
            ("security.protocol", "\"SSL\""),
            ("ssl.ca.location", &format!("\"{ca_path}\"")),
        ],
    );
    let mut p = rig.spawn("run-over-tls", &trusting);
    rig.await_rows(rig.produced.good, Duration::from_secs(180))
        .await;
    let status = p.terminate(GRACE);
    assert!(status.is_some_and(|s| s.success()), "clean stop");
    let ledger = assert_ledger(&p);
    assert_eq!(ledger.consumed, rig.produced.total(), "consumed over TLS");
    rig.assert_exact().await;
    // The terminator carried the connections.
    let tls_log = rig.broker.tls_server().expect("stunnel").log_text();
    assert!(
        tls_log.contains("accepted connection"),
        "stunnel saw no connection:\n{tls_log}"
    );
}

/// SASL/SCRAM-SHA-512 against a broker that requires it, the password read from
/// an owner-only file named in `[kafka.secret_files]`. A wrong password is
/// logged as the broker's refusal with a hint and retried (never a silent hang),
/// and nothing is consumed; with the right one every record arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_authentication_reads_its_password_from_a_secret_file() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = serial().await;
    let tools = Tools::find().unwrap_or_else(|e| panic!("{e}"));
    let topic = meterline::dev::testkit::unique_name("readings");
    let password = format!("pw-{}", rand::random::<u64>());
    let broker = Broker::start_authenticating(&tools, "meterline", &password, &[(&topic, 2)]);
    let mut rig = Rig::with_topic(&tools, broker, topic);
    rig.produce(&messages(6_000, 6, 71)).await;

    let secret = rig.dir.path().join("kafka-password");
    let config = |name: &str, port: Option<u16>, password: &str| {
        std::fs::write(&secret, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let path = rig.config_with(
            name,
            port,
            "max_batch_rows = 3000",
            &[
                ("security.protocol", "\"SASL_PLAINTEXT\""),
                ("sasl.mechanism", "\"SCRAM-SHA-512\""),
                ("sasl.username", "\"meterline\""),
            ],
        );
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "\n[kafka.secret_files]\n\"sasl.password\" = \"{}\"\n",
            secret.display()
        ));
        std::fs::write(&path, text).unwrap();
        path
    };

    let port = meterline::dev::testkit::free_port();
    let mut p = rig.spawn(
        "run-wrong-password",
        &config("sasl-wrong", Some(port), "not-it"),
    );
    let first = p.wait_line(0, Duration::from_secs(60), |l| {
        l.contains("kafka client error") && l.contains("SASL authentication")
    });
    let logged = &p
        .lines_matching(|l| l.contains("kafka client error") && l.contains("SASL authentication"))
        [0];
    assert!(
        logged.contains("hint=") && logged.contains("refused the credentials"),
        "no hint: {logged}"
    );
    assert!(
        !logged.contains(&password) && !logged.contains("not-it"),
        "{logged}"
    );
    // Retried, not given up: the refusal comes again.
    p.wait_line(first + 1, Duration::from_secs(60), |l| {
        l.contains("kafka client error") && l.contains("SASL authentication")
    });
    let consumed = metric(
        &scrape(port).expect("metrics of the refused run"),
        "meterline_records_consumed_total",
    );
    assert_eq!(consumed, 0.0, "records consumed without authenticating");
    let status = p.terminate(GRACE);
    assert!(status.is_some_and(|s| s.success()), "clean stop");

    let mut p = rig.spawn("run-scram", &config("sasl", None, &password));
    rig.await_rows(rig.produced.good, Duration::from_secs(180))
        .await;
    let status = p.terminate(GRACE);
    assert!(status.is_some_and(|s| s.success()), "clean stop");
    let ledger = assert_ledger(&p);
    assert_eq!(ledger.consumed, rig.produced.total(), "consumed over SASL");
    rig.assert_exact().await;
    let all = p.lines_matching(|_| true).join("\n");
    assert!(!all.contains(&password), "the password is in the log");
}

/// `meterline run` with `config`, the bench key in the environment: (exit code,
/// stderr).
fn run_refused(config: &std::path::Path, key_in_env: bool) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meterline"));
    command.args(["run", "--config"]).arg(config);
    if key_in_env {
        command.env("METERLINE_PSEUDONYM_KEY", KEY_HEX);
    } else {
        command.env_remove("METERLINE_PSEUDONYM_KEY");
    }
    let output = command.output().expect("meterline run");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Refused at start with exit code 2 and a message naming the field: plaintext
/// to a broker off loopback, and a key file group or others may read.
#[test]
fn insecure_configurations_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = |kafka_extra: &str, privacy: &str| {
        let path = dir.path().join(format!("c{}.toml", rand::random::<u32>()));
        std::fs::write(
            &path,
            format!(
                r#"
[kafka]
brokers = "kafka-1.example.net:9092,kafka-2.example.net:9092"
group_id = "meterline"
{kafka_extra}
[lake]
uri = "{lake}"
[metrics]
listen = ""
{privacy}
[[tenants]]
id = "oslo-utility"
deployment = "public"
"#,
                lake = dir.path().join("lake").display(),
            ),
        )
        .unwrap();
        path
    };
    let (code, stderr) = run_refused(&config("", ""), true);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("kafka.allow_plaintext"), "{stderr}");
    assert!(stderr.contains("kafka-1.example.net:9092"), "{stderr}");

    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("pseudonym.key");
    std::fs::write(&key, format!("{KEY_HEX}\n")).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let privacy = format!("[privacy]\nkey_file = \"{}\"\n", key.display());
    let (code, stderr) = run_refused(&config("allow_plaintext = true", &privacy), false);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("privacy.key_file"), "{stderr}");
    assert!(stderr.contains("0644"), "{stderr}");
    assert!(!stderr.contains(KEY_HEX), "{stderr}");
}
