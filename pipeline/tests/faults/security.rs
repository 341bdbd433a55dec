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

/// Runs `script` with the Python of moto's virtualenv (which has boto3), with
/// `args`; its stdout.
fn boto3(tools: &Tools, script: &str, args: &[&str]) -> String {
    let python = tools
        .moto_server
        .parent()
        .expect("moto_server's directory")
        .join("python");
    let output = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        output.status.success(),
        "boto3 script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}

/// boto3 clients of the moto server at argv[1].
const BOTO3_CLIENTS: &str = r#"
import boto3, json, sys
kw = dict(endpoint_url=sys.argv[1], region_name="us-east-1",
          aws_access_key_id="meterline-test", aws_secret_access_key="meterline-test")
"#;

/// Every object meterline writes (Parquet files, Delta log entries, the wrapped
/// epoch keys under `_keys/`) is stored with the configured server-side
/// encryption: SSE-KMS with the key the test created in moto's KMS, and SSE-S3
/// (AES256). Checked with a HEAD of each object by an independent client
/// (boto3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_is_written_with_the_configured_server_side_encryption() {
    let _serial = serial().await;
    let tools = Tools::find().unwrap_or_else(|e| panic!("{e}"));
    let mut rig = Rig::new(2);
    rig.produce(&messages(4_000, 4, 83)).await;
    let endpoint = rig.s3.endpoint();
    let kms_key = boto3(
        &tools,
        &format!(
            "{BOTO3_CLIENTS}print(boto3.client('kms', **kw).create_key()['KeyMetadata']['KeyId'])"
        ),
        &[&endpoint],
    )
    .trim()
    .to_owned();
    assert!(!kms_key.is_empty());
    for (encryption, key_id) in [("aws:kms", Some(kms_key.as_str())), ("AES256", None)] {
        let bucket = meterline::dev::testkit::unique_name("sse");
        rig.s3.create_bucket(&bucket);
        let config = rig.config("sse", None, "max_batch_rows = 2000");
        let mut options = format!("aws_server_side_encryption = \"{encryption}\"\n");
        if let Some(id) = key_id {
            options.push_str(&format!("aws_sse_kms_key_id = \"{id}\"\n"));
        }
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace(&format!("s3://{}/", rig.bucket), &format!("s3://{bucket}/"))
            .replace(
                "[lake.storage_options]\n",
                &format!("[lake.storage_options]\n{options}"),
            )
            // Key epochs, so that wrapped epoch keys are written under _keys/.
            .replace("key_rotation = \"never\"", "key_rotation = \"monthly\"");
        std::fs::write(&config, text).unwrap();
        // The readings are of October 2026: "now" in early November keeps their
        // epochs' keys (the test never depends on today's date).
        let mut p = rig.spawn_with_env(
            "run-sse",
            &config,
            &[("METERLINE_FAKE_NOW", "2026-11-05T12:00:00+01:00")],
        );
        let lake = meterline_sinks::LakeConfig {
            uri: format!("s3://{bucket}/lake"),
            ..rig.lake()
        };
        let good = rig.produced.good;
        crate::rig::eventually_async(
            "every reading in the encrypted lake",
            Duration::from_secs(120),
            || {
                let lake = lake.clone();
                async move {
                    meterline::query::sql::query(&lake, "SELECT count(*) FROM readings")
                        .await
                        .ok()
                        .and_then(|b| {
                            use arrow::array::AsArray;
                            b.first().map(|b| {
                                b.column(0)
                                    .as_primitive::<arrow::datatypes::Int64Type>()
                                    .value(0)
                            })
                        })
                        == Some(good as i64)
                }
            },
        )
        .await;
        let status = p.terminate(GRACE);
        assert!(status.is_some_and(|s| s.success()), "clean stop");

        let listing = boto3(
            &tools,
            &format!(
                "{BOTO3_CLIENTS}{}",
                r#"
s3 = boto3.client('s3', **kw)
out = []
for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[2]):
    for o in page.get('Contents', []):
        h = s3.head_object(Bucket=sys.argv[2], Key=o['Key'])
        out.append([o['Key'], h.get('ServerSideEncryption'), h.get('SSEKMSKeyId')])
print(json.dumps(out))
"#
            ),
            &[&endpoint, &bucket],
        );
        let objects: Vec<(String, Option<String>, Option<String>)> =
            serde_json::from_str(&listing).expect("the listing");
        for part in ["lake/readings/", ".parquet", "/_delta_log/", "lake/_keys/"] {
            assert!(
                objects.iter().any(|(k, _, _)| k.contains(part)),
                "{encryption}: no object with {part} in {objects:?}"
            );
        }
        for (key, sse, kms) in &objects {
            assert_eq!(sse.as_deref(), Some(encryption), "{key}");
            if let Some(id) = key_id {
                assert!(
                    kms.as_deref().is_some_and(|k| k.ends_with(id)),
                    "{key}: KMS key {kms:?}, configured {id}"
                );
            }
        }
        eprintln!(
            "{encryption}: {} objects, every one encrypted",
            objects.len()
        );
    }
}

/// A bucket with versioning enabled is refused at start (exit code 2, naming
/// the override and why); with `privacy.allow_versioned_bucket = true`
/// meterline starts with a warning, and `meterline audit` lists the override as
/// a standing exception. (Every other scenario's bucket is unversioned and
/// starts: the signed versioning request works against the S3 server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_versioned_bucket_is_refused_unless_overridden() {
    let _serial = serial().await;
    let tools = Tools::find().unwrap_or_else(|e| panic!("{e}"));
    let mut rig = Rig::new(1);
    rig.produce(&messages(500, 0, 97)).await;
    boto3(
        &tools,
        &format!(
            "{BOTO3_CLIENTS}boto3.client('s3', **kw).put_bucket_versioning(Bucket=sys.argv[2], \
             VersioningConfiguration={{'Status': 'Enabled'}})"
        ),
        &[&rig.s3.endpoint(), &rig.bucket],
    );
    let config = rig.config("versioned", None, "max_batch_rows = 500");
    let output = Command::new(env!("CARGO_BIN_EXE_meterline"))
        .args(["run", "--config"])
        .arg(&config)
        .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
        .output()
        .expect("meterline run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("privacy.allow_versioned_bucket"),
        "{stderr}"
    );
    assert!(stderr.contains("versioning enabled"), "{stderr}");
    assert!(stderr.contains("lifecycle"), "{stderr}");

    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[privacy]\nallow_versioned_bucket = true\n");
    std::fs::write(&config, &text).unwrap();
    let mut p = rig.spawn("run-versioned", &config);
    p.wait_line(0, Duration::from_secs(60), |l| {
        l.contains("privacy.allow_versioned_bucket is set")
    });
    rig.await_rows(rig.produced.good, Duration::from_secs(120))
        .await;
    let status = p.terminate(GRACE);
    assert!(status.is_some_and(|s| s.success()), "clean stop");
    let audit = Command::new(env!("CARGO_BIN_EXE_meterline"))
        .args(["audit", "--config"])
        .arg(&config)
        .env("METERLINE_PSEUDONYM_KEY", KEY_HEX)
        .output()
        .expect("meterline audit");
    let report = String::from_utf8_lossy(&audit.stdout);
    assert!(
        report.contains("standing exception: privacy.allow_versioned_bucket = true"),
        "{report}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
}
