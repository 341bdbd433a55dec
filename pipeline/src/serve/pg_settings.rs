//! What a Postgres client asks the server about itself: `current_setting`,
//! `session_user` and `current_user`.
//!
//! Grafana's data source settings page asks `SELECT
//! current_setting('server_version_num')::int/100` to pick its Postgres
//! version; drivers and tools ask for `DateStyle`, `TimeZone` or
//! `standard_conforming_strings` the same way. The answers are the parameters
//! the server sent the client when the session started (one map, so the two
//! cannot disagree), plus the few read-only facts Postgres also answers
//! (`server_version_num`, `transaction_read_only`, `max_identifier_length`).
//! Names are case-insensitive, as in Postgres. An unknown name is Postgres'
//! error 42704, or null with `current_setting(name, true)`.
//!
//! `session_user` (and `current_user`, which the library rewrites to it) is
//! the user name the client connected with. It is informational: the token
//! decides what the session sees.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result as DfResult, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

/// The settings a session answers, by lower-case name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSettings {
    values: HashMap<String, String>,
    user: String,
}

impl SessionSettings {
    /// The settings of a session that was sent `parameters` at startup and
    /// connected as `user`.
    #[must_use]
    pub fn new(parameters: &HashMap<String, String>, user: &str) -> Self {
        let mut values: HashMap<String, String> = parameters
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        if let Some(num) = values.get("server_version").and_then(|v| version_num(v)) {
            values.insert("server_version_num".into(), num.to_string());
        }
        for (name, value) in [
            ("transaction_read_only", "on"),
            ("default_transaction_read_only", "on"),
            ("max_identifier_length", "63"),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
        ] {
            values.entry(name.into()).or_insert_with(|| value.into());
        }
        Self {
            values,
            user: user.to_owned(),
        }
    }

    /// The value of the setting `name` (any case).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// `16.6-pgwire-0.41.1` -> 160006, as Postgres 10+ numbers its versions.
fn version_num(version: &str) -> Option<u32> {
    let digits = version
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = digits.split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some(major * 10_000 + minor)
}

/// Register `current_setting` and `session_user` over `settings` in `ctx`
/// (after the Postgres catalog, whose `session_user` it replaces).
pub fn register(ctx: &SessionContext, settings: &SessionSettings) {
    let settings = Arc::new(settings.clone());
    ctx.register_udf(ScalarUDF::new_from_impl(CurrentSetting {
        settings: settings.clone(),
        signature: Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Utf8]),
                TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
            ],
            Volatility::Stable,
        ),
    }));
    ctx.register_udf(ScalarUDF::new_from_impl(SessionUser {
        user: settings.user.clone(),
        signature: Signature::nullary(Volatility::Stable),
    }));
}

#[derive(Debug)]
struct CurrentSetting {
    settings: Arc<SessionSettings>,
    signature: Signature,
}

impl PartialEq for CurrentSetting {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}
impl Eq for CurrentSetting {}
impl std::hash::Hash for CurrentSetting {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.settings.user.hash(state);
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &'static str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(names) = arrays.first().and_then(|a| a.as_string_opt::<i32>()) else {
            return exec_err!("current_setting takes the setting's name as text");
        };
        let missing_ok = arrays.get(1).and_then(|a| a.as_boolean_opt());
        let mut values = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            if names.is_null(i) {
                values.push(None);
                continue;
            }
            let name = names.value(i);
            match self.settings.get(name) {
                Some(v) => values.push(Some(v.to_owned())),
                None if missing_ok.is_some_and(|m| m.is_valid(i) && m.value(i)) => {
                    values.push(None);
                }
                None => {
                    return exec_err!(
                        "unrecognized configuration parameter \"{}\"",
                        name.chars().take(64).collect::<String>()
                    )
                }
            }
        }
        let values: StringArray = values.into_iter().collect();
        if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &values, 0,
            )?));
        }
        Ok(ColumnarValue::Array(Arc::new(values)))
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionUser {
    user: String,
    signature: Signature,
}

impl ScalarUDFImpl for SessionUser {
    fn name(&self) -> &'static str {
        "session_user"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
            self.user.clone(),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn one(ctx: &SessionContext, sql: &str) -> DfResult<Option<String>> {
        let batches = ctx.sql(sql).await?.collect().await?;
        let batch = batches.iter().find(|b| b.num_rows() > 0).expect("a row");
        let column = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        let column = column.as_string::<i32>();
        Ok(column.is_valid(0).then(|| column.value(0).to_owned()))
    }

    /// The answers Postgres 16 gives for the same questions, written out.
    #[tokio::test]
    async fn settings_answer_as_postgres_does() {
        let parameters: HashMap<String, String> = [
            ("server_version", "16.6-pgwire-0.41.1"),
            ("DateStyle", "ISO, YMD"),
            ("TimeZone", "Etc/UTC"),
            ("search_path", "public"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let ctx = SessionContext::new();
        register(&ctx, &SessionSettings::new(&parameters, "grafana"));
        let ask = |sql: &'static str| {
            let ctx = ctx.clone();
            async move { one(&ctx, sql).await }
        };
        assert_eq!(
            ask("SELECT CAST(current_setting('server_version_num') AS int) / 100")
                .await
                .unwrap()
                .as_deref(),
            Some("1600")
        );
        assert_eq!(
            ask("SELECT current_setting('datestyle')")
                .await
                .unwrap()
                .as_deref(),
            Some("ISO, YMD")
        );
        assert_eq!(
            ask("SELECT current_setting('TIMEZONE')")
                .await
                .unwrap()
                .as_deref(),
            Some("Etc/UTC")
        );
        assert_eq!(
            ask("SELECT current_setting('transaction_read_only')")
                .await
                .unwrap()
                .as_deref(),
            Some("on")
        );
        assert_eq!(
            ask("SELECT current_setting('no_such_thing', true)")
                .await
                .unwrap(),
            None
        );
        let err = ask("SELECT current_setting('no_such_thing')")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unrecognized configuration parameter \"no_such_thing\""),
            "{err}"
        );
        assert_eq!(
            ask("SELECT \"session_user\"()").await.unwrap().as_deref(),
            Some("grafana")
        );
    }

    #[test]
    fn versions_number_as_postgres_does() {
        assert_eq!(version_num("16.6-pgwire-0.41.1"), Some(160_006));
        assert_eq!(version_num("15.10"), Some(150_010));
        assert_eq!(version_num("17"), Some(170_000));
        assert_eq!(version_num("pgwire"), None);
    }
}
