//! The read-only rule, checked on every parsed statement before anything
//! plans or runs it: queries, `EXPLAIN` of a query, transaction statements,
//! `SHOW`, and the session `SET`s that clients send on connect. Everything
//! else (DDL, DML, `COPY`, `CREATE EXTERNAL TABLE`, cursors, SQL-level
//! `PREPARE`, `SET` of engine options) is refused with a clear error.
//! (Plans are checked again with DataFusion's `SQLOptions`: no DDL, DML or
//! statement plan runs whatever its SQL looked like.)

use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The longest query text accepted.
pub const MAX_QUERY_BYTES: usize = 1024 * 1024;

/// The most tokens (words, literals, operators; not whitespace) a query may
/// have. Parsing, planning and optimizing recurse over the statement's tree,
/// and a chain of `UNION`s or operators is as deep as it is long: a bound on
/// the tokens is a bound on that depth, so a hostile query is refused instead
/// of exhausting a thread's stack (which would end the whole server).
pub const MAX_QUERY_TOKENS: usize = 20_000;

/// Session variables a client may set: accepted, and no-ops unless the
/// Postgres front end gives them a meaning (time zone, statement timeout
/// capped by the server's, date style).
pub const HARMLESS_SETTINGS: [&str; 17] = [
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "extra_float_digits",
    "idle_in_transaction_session_timeout",
    "intervalstyle",
    "lc_messages",
    "lock_timeout",
    "search_path",
    "standard_conforming_strings",
    "statement_timeout",
    "timezone",
    "transaction_isolation",
];

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE: `25006` (read-only) for writes, `42501` for engine settings,
    /// `0A000` for the rest.
    pub code: &'static str,
    pub message: String,
}

/// Check a query's size before it is parsed.
///
/// # Errors
/// A query over [`MAX_QUERY_BYTES`] or [`MAX_QUERY_TOKENS`] (SQLSTATE 54001,
/// statement too complex).
pub fn check_size(sql: &str) -> Result<(), Refusal> {
    let too_complex = |what: String| Refusal {
        code: "54001",
        message: format!("the query is too large: {what}; split it or use parameters"),
    };
    if sql.len() > MAX_QUERY_BYTES {
        return Err(too_complex(format!(
            "{} bytes, at most {MAX_QUERY_BYTES}",
            sql.len()
        )));
    }
    // Tokenizing is iterative; an error here is left to the parser to report.
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let n = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .count();
    if n > MAX_QUERY_TOKENS {
        return Err(too_complex(format!(
            "{n} tokens, at most {MAX_QUERY_TOKENS}"
        )));
    }
    Ok(())
}

/// Check one statement.
///
/// # Errors
/// The refusal, for anything but a read.
pub fn check(statement: &Statement) -> Result<(), Refusal> {
    match statement {
        Statement::Query(_)
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. } => Ok(()),
        Statement::Explain { statement, .. } => match statement.as_ref() {
            Statement::Query(_) => Ok(()),
            other => Err(Refusal {
                code: "0A000",
                message: format!(
                    "EXPLAIN is allowed for queries only, not for {}",
                    kind(other)
                ),
            }),
        },
        Statement::Set(set) => check_set(set),
        other => Err(refuse(other)),
    }
}

fn check_set(set: &Set) -> Result<(), Refusal> {
    let harmless = |name: &str| {
        let name = name.to_ascii_lowercase();
        HARMLESS_SETTINGS.contains(&name.as_str())
    };
    match set {
        Set::SingleAssignment { variable, .. } if harmless(&variable.to_string()) => Ok(()),
        Set::SingleAssignment { variable, .. } => Err(setting(&variable.to_string())),
        Set::MultipleAssignments { assignments } => assignments
            .iter()
            .map(|a| a.name.to_string())
            .find(|n| !harmless(n))
            .map_or(Ok(()), |n| Err(setting(&n))),
        Set::SetTimeZone { .. } | Set::SetNames { .. } | Set::SetNamesDefault {} => Ok(()),
        _ => Err(Refusal {
            code: "0A000",
            message: "this SET form is not supported by meterline serve".to_owned(),
        }),
    }
}

fn setting(name: &str) -> Refusal {
    Refusal {
        code: "42501",
        message: format!(
            "SET {name} is not allowed: sessions may set only {}",
            HARMLESS_SETTINGS.join(", ")
        ),
    }
}

fn refuse(statement: &Statement) -> Refusal {
    let what = kind(statement);
    let write = matches!(
        statement,
        Statement::Insert(_)
            | Statement::Update { .. }
            | Statement::Delete(_)
            | Statement::Merge { .. }
            | Statement::Truncate { .. }
            | Statement::Copy { .. }
            | Statement::CreateTable(_)
            | Statement::CreateView { .. }
            | Statement::CreateSchema { .. }
            | Statement::CreateDatabase { .. }
            | Statement::CreateIndex(_)
            | Statement::CreateFunction(_)
            | Statement::Drop { .. }
            | Statement::AlterTable { .. }
    );
    Refusal {
        code: if write { "25006" } else { "0A000" },
        message: format!("{what} is not allowed: this server is read-only (SELECT, WITH, EXPLAIN, SHOW and session SETs only)"),
    }
}

/// The statement's leading keywords, for messages (never its literals).
fn kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic()))
        .take(3)
        .collect();
    if words.is_empty() {
        "this statement".to_owned()
    } else {
        words.join(" ").to_ascii_uppercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn verdict(sql: &str) -> Result<(), Refusal> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        assert_eq!(statements.len(), 1, "{sql}");
        check(&statements[0])
    }

    #[test]
    fn long_chains_are_refused_before_parsing() {
        let chain = |n: usize| format!("SELECT 1{}", " + 1".repeat(n));
        assert_eq!(check_size(&chain(MAX_QUERY_TOKENS / 2 - 10)), Ok(()));
        let refused = check_size(&chain(MAX_QUERY_TOKENS)).unwrap_err();
        assert_eq!(refused.code, "54001");
        assert!(refused.message.contains("tokens"), "{}", refused.message);
        let huge = format!("SELECT '{}'", "x".repeat(MAX_QUERY_BYTES));
        assert!(check_size(&huge).unwrap_err().message.contains("bytes"));
    }

    #[test]
    fn reads_and_session_settings_pass() {
        for sql in [
            "SELECT 1",
            "WITH r AS (SELECT 1 AS x) SELECT * FROM r",
            "VALUES (1)",
            "EXPLAIN SELECT * FROM readings",
            "EXPLAIN ANALYZE SELECT 1",
            "SET DateStyle = 'ISO, MDY'",
            "SET extra_float_digits = 3",
            "SET application_name = 'psql'",
            "SET search_path TO public",
            "SET TIME ZONE 'Europe/Oslo'",
            "SET statement_timeout = '5s'",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SHOW TimeZone",
        ] {
            assert_eq!(verdict(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn writes_ddl_copy_and_engine_settings_are_refused() {
        for (sql, code) in [
            ("INSERT INTO readings VALUES (1)", "25006"),
            ("UPDATE readings SET value = 0", "25006"),
            ("DELETE FROM readings", "25006"),
            ("DROP TABLE readings", "25006"),
            ("CREATE TABLE t (x INT)", "25006"),
            ("CREATE VIEW v AS SELECT 1", "25006"),
            ("COPY readings TO '/tmp/x.csv'", "25006"),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "25006"),
            ("TRUNCATE readings", "25006"),
            ("SET datafusion.execution.batch_size = 1", "42501"),
            ("SET datafusion.catalog.default_catalog = 'x'", "42501"),
            ("EXPLAIN DELETE FROM readings", "0A000"),
            ("DECLARE c CURSOR FOR SELECT 1", "0A000"),
            ("PREPARE p AS SELECT 1", "0A000"),
        ] {
            let refusal = verdict(sql).expect_err(sql);
            assert_eq!(refusal.code, code, "{sql}: {}", refusal.message);
            assert!(
                refusal.message.contains("not allowed") || refusal.message.contains("only"),
                "{sql}: {}",
                refusal.message
            );
            // Messages name the statement kind, never its literals.
            assert!(!refusal.message.contains("/tmp"), "{}", refusal.message);
        }
    }
}
