//! Facts about the bucket under an S3 lake that the object store has no call
//! for. Today one: whether the bucket keeps old versions of objects (a signed
//! `GET /?versioning`, with the lake's own credentials, endpoint and region).
//!
//! A versioned bucket keeps what meterline deletes: an erased subject's Parquet
//! files and a destroyed epoch key would survive as noncurrent versions.

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpConnector, HttpRequest, HttpRequestBody, ReqwestConnector};
use object_store::ClientOptions;

use crate::{Lake, SinkError};

/// A bucket's versioning state (`GetBucketVersioning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versioning {
    /// Never enabled: a delete removes the object.
    Off,
    /// Enabled: deleted and overwritten objects stay as noncurrent versions.
    Enabled,
    /// Suspended after having been enabled: the versions kept while it was
    /// enabled are still there.
    Suspended,
}

/// The versioning state of an S3 lake's bucket; `None` for a lake that is not
/// on S3.
///
/// # Errors
/// [`SinkError::Config`] when the state cannot be read (denied, unreachable,
/// an answer that is not a versioning configuration); the message says which.
pub async fn versioning(lake: &Lake) -> Result<Option<Versioning>, SinkError> {
    let root = lake.root();
    if !matches!(root.scheme(), "s3" | "s3a") {
        return Ok(None);
    }
    let bucket = root
        .host_str()
        .ok_or_else(|| SinkError::Config(format!("lake.uri {root} names no bucket")))?
        .to_owned();
    let mut builder = AmazonS3Builder::from_env().with_url(format!("s3://{bucket}"));
    for (key, value) in lake.storage_options() {
        if let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(key, value);
        }
    }
    let config = |key: AmazonS3ConfigKey| builder.get_config_value(&key);
    let region = config(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = config(AmazonS3ConfigKey::Endpoint);
    let virtual_hosted = config(AmazonS3ConfigKey::VirtualHostedStyleRequest)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let allow_http = crate::lake::allows_http(lake.storage_options());
    let url = match endpoint {
        // With virtual-hosted requests the endpoint already names the bucket.
        Some(e) if virtual_hosted => format!("{}/?versioning", e.trim_end_matches('/')),
        Some(e) => format!("{}/{bucket}?versioning", e.trim_end_matches('/')),
        None => format!("https://{bucket}.s3.{region}.amazonaws.com/?versioning"),
    };
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        SinkError::Config(format!(
            "cannot check whether bucket {bucket} keeps old versions ({what}): {e}"
        ))
    };
    let store = builder
        .build()
        .map_err(|e| failed("object store settings", &e))?;
    let credential = store
        .credentials()
        .get_credential()
        .await
        .map_err(|e| failed("credentials", &e))?;
    let mut request: HttpRequest = http::Request::builder()
        .method(http::Method::GET)
        .uri(url.as_str())
        .body(HttpRequestBody::empty())
        .map_err(|e| failed("request", &e))?;
    AwsAuthorizer::new(&credential, "s3", &region).authorize(&mut request, None);
    let client = ReqwestConnector::default()
        .connect(&ClientOptions::new().with_allow_http(allow_http))
        .map_err(|e| failed("client", &e))?;
    let response = client
        .execute(request)
        .await
        .map_err(|e| failed("GET ?versioning", &e))?;
    let status = response.status();
    // Not a secret and no personal data: a bucket's configuration or an S3 error.
    let body = response
        .into_body()
        .bytes()
        .await
        .map_err(|e| failed("GET ?versioning", &e))?;
    let text = String::from_utf8_lossy(&body);
    parse_answer(status.as_u16(), &text)
        .map(Some)
        .map_err(|e| failed("GET ?versioning", &e))
}

/// The versioning state in an answer to `GET ?versioning`, or what is wrong
/// with the answer.
fn parse_answer(status: u16, text: &str) -> Result<Versioning, String> {
    if !(200..300).contains(&status) {
        let code = xml_element(text, "Code").unwrap_or("no error code");
        return Err(format!("HTTP {status} ({code})"));
    }
    // AWS answers `<VersioningConfiguration>`; some S3 servers (moto) name the
    // root `<GetBucketVersioningResponse>`.
    if !text.contains("<VersioningConfiguration") && !text.contains("<GetBucketVersioningResponse")
    {
        let start: String = text.chars().take(160).collect();
        return Err(format!(
            "the answer is not a versioning configuration: {start}"
        ));
    }
    Ok(match xml_element(text, "Status") {
        Some("Enabled") => Versioning::Enabled,
        Some("Suspended") => Versioning::Suspended,
        _ => Versioning::Off,
    })
}

/// The text of the first `<name>...</name>` in `xml` (S3's answers are flat).
fn xml_element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_of_a_versioning_configuration() {
        let enabled = r#"<?xml version="1.0" encoding="UTF-8"?>
<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#;
        assert_eq!(xml_element(enabled, "Status"), Some("Enabled"));
        let never = r#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"/>"#;
        assert_eq!(xml_element(never, "Status"), None);
        let denied = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
        assert_eq!(xml_element(denied, "Code"), Some("AccessDenied"));
        assert_eq!(parse_answer(200, enabled), Ok(Versioning::Enabled));
        assert_eq!(parse_answer(200, never), Ok(Versioning::Off));
        let suspended = enabled.replace("Enabled", "Suspended");
        assert_eq!(parse_answer(200, &suspended), Ok(Versioning::Suspended));
        let err = parse_answer(403, denied).unwrap_err();
        assert!(err.contains("403") && err.contains("AccessDenied"), "{err}");
        // A listing (what a server that ignores `?versioning` answers) is no
        // answer: never read as "off".
        let listing = "<ListBucketResult><Name>lake</Name></ListBucketResult>";
        assert!(parse_answer(200, listing).is_err());
        let moto =
            "<GetBucketVersioningResponse><Status>Enabled</Status></GetBucketVersioningResponse>";
        assert_eq!(parse_answer(200, moto), Ok(Versioning::Enabled));
    }
}
