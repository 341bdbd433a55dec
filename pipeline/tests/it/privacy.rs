//! For a public tenant nothing stored anywhere under the lake contains a raw
//! device id, meter id, subject or pii value: every Parquet file is decoded (values)
//! and scanned as bytes (statistics, page headers, footer metadata); every other
//! file (Delta log, checkpoints, CRCs) is scanned as bytes.

use arrow::json::ArrayWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;

use crate::common::{collect_files, contains, run_until_accounted, Harness};

fn secrets_for(i: usize) -> Vec<String> {
    vec![
        format!("devsecret-{i:05}-x"),
        meterline::generator::gsrn(4_200_000 + i as u32), // a valid GSRN
        format!("subject-secret-{i:04}"),
        format!("Kari Nordmann {i}"),
        format!("kari.{i}@example.no"),
        format!("+47 4455{i:04}"),
        format!("Hemmelig gate {i}, Oslo"),
        format!("203.0.113.{}", 100 + i),
        format!("N-0{i:03}-zip"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_raw_identifier_or_pii_of_a_public_tenant_is_stored() {
    let h = Harness::new(2);
    let meters = 20;
    let mut messages = Vec::new();
    let mut secrets = Vec::new();
    for i in 0..meters {
        let s = secrets_for(i);
        for hour in 0..24 {
            let mut v = json!({
                "schema": "reading/v1", "tenant": "oslo-utility",
                "device_id": s[0], "meter_id": s[1], "subject": s[2],
                "quantity": "electricity",
                "start": format!("2026-10-25T{:02}:00:00Z", hour % 24),
                "resolution": "PT1H", "value": 0.5 + hour as f64, "unit": "kWh",
                "quality": "measured", "version": "2026-10-26T06:00:00Z", "area": "NO1",
                "pii": { "name": s[3], "email": s[4], "phone": s[5], "address": s[6],
                         "ip": s[7], "zip": s[8], "lat": 59.91, "lon": 10.75 }
            });
            if hour == 5 {
                // A dead letter of the same tenant carries the same personal data.
                v["value"] = json!(-1);
            }
            messages.push((s[0].clone(), Some(v.to_string().into_bytes())));
        }
        secrets.extend(s);
    }
    let produced = messages.len() as u64;
    h.produce(&messages).await;
    run_until_accounted(h.settings("privacy-group"), produced).await;
    assert_eq!(
        h.count("SELECT count(*) FROM readings").await,
        produced - meters as u64
    );
    assert_eq!(
        h.count("SELECT count(*) FROM dead_letters").await,
        meters as u64
    );
    assert_eq!(
        h.count("SELECT count(*) FROM readings WHERE subject IS NOT NULL")
            .await,
        0
    );

    let mut files = Vec::new();
    collect_files(h.lake.path(), &mut files);
    let mut parquet_files = 0;
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        let mut views = vec![bytes.clone()];
        if path.extension().is_some_and(|e| e == "parquet") {
            parquet_files += 1;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                .unwrap()
                .build()
                .unwrap();
            let mut text = Vec::new();
            {
                let mut w = ArrayWriter::new(&mut text);
                for batch in reader {
                    w.write(&batch.unwrap()).unwrap();
                }
                w.finish().unwrap();
            }
            views.push(text);
        }
        for view in &views {
            for secret in &secrets {
                assert!(
                    !contains(view, secret),
                    "{} contains a raw personal value",
                    path.display()
                );
            }
        }
    }
    assert!(
        parquet_files >= 2,
        "scanned the data files ({parquet_files})"
    );
}
