//! `information_schema.columns.data_type` in Postgres' words.
//!
//! DataFusion's `information_schema` names column types as Arrow does
//! (`Utf8View`, `Decimal128(18, 3)`, `Timestamp(µs, "UTC")`); a Postgres client
//! reads that column to know a column's type (Grafana's query builder does).
//! [`PostgresTypeNames`] puts a projection over every scan of
//! `information_schema.columns` that renames the type as Postgres would
//! (`text`, `numeric`, `timestamp with time zone`), the same types the wire
//! protocol reports. The table itself stays DataFusion's, with its rule of
//! listing only the session's tables.

use std::str::FromStr;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result as DfResult};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, Projection, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The Postgres name of the Arrow type written `arrow` (as DataFusion's
/// `information_schema` writes it); the text itself when it does not parse.
pub fn postgres_name(arrow: &str) -> String {
    match DataType::from_str(arrow) {
        Ok(t) => name_of(&t).unwrap_or(arrow).to_owned(),
        Err(_) => arrow.to_owned(),
    }
}

fn name_of(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Dictionary(_, value) => return name_of(value),
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "numeric",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 => "bigint",
        DataType::UInt64 => "numeric",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Boolean => "boolean",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone",
        DataType::Timestamp(_, None) => "timestamp without time zone",
        DataType::Time32(_) | DataType::Time64(_) => "time without time zone",
        DataType::Interval(_) | DataType::Duration(_) => "interval",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        DataType::FixedSizeBinary(_) => "bytea",
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(..) => "ARRAY",
        _ => return None,
    })
}

/// The analyzer rule: see the module documentation.
#[derive(Debug)]
pub struct PostgresTypeNames;

impl AnalyzerRule for PostgresTypeNames {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> DfResult<LogicalPlan> {
        let rename = ScalarUDF::new_from_impl(TypeName {
            signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
        });
        plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let is_columns = scan.table_name.table() == "columns"
                && scan.table_name.schema() == Some("information_schema");
            let types_read = node
                .schema()
                .fields()
                .iter()
                .any(|f| f.name() == "data_type");
            if !is_columns || !types_read {
                return Ok(Transformed::no(node));
            }
            let exprs = node
                .schema()
                .iter()
                .map(|(qualifier, field)| {
                    let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
                    if field.name() == "data_type" {
                        rename
                            .call(vec![column])
                            .alias_qualified(qualifier.cloned(), "data_type")
                    } else {
                        column
                    }
                })
                .collect();
            let projection = Projection::try_new(exprs, Arc::new(node))?;
            Ok(Transformed::yes(LogicalPlan::Projection(projection)))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &'static str {
        "postgres_type_names"
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TypeName {
    signature: Signature,
}

impl ScalarUDFImpl for TypeName {
    fn name(&self) -> &'static str {
        "postgres_type_name"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(types) = arrays.first().and_then(|a| a.as_string_opt::<i32>()) else {
            return Err(datafusion::error::DataFusionError::Internal(
                "postgres_type_name takes text".into(),
            ));
        };
        let names: StringArray = (0..types.len())
            .map(|i| types.is_valid(i).then(|| postgres_name(types.value(i))))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(names)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names Postgres' own `information_schema.columns` gives, written
    /// out by hand, for the types the lake's tables use.
    #[test]
    fn arrow_types_read_as_postgres_names() {
        for (arrow, postgres) in [
            ("Utf8", "text"),
            ("Utf8View", "text"),
            ("Dictionary(UInt16, Utf8)", "text"),
            ("Decimal128(18, 3)", "numeric"),
            ("Timestamp(µs, \"UTC\")", "timestamp with time zone"),
            (
                "Timestamp(Microsecond, None)",
                "timestamp without time zone",
            ),
            ("Date32", "date"),
            ("Int32", "integer"),
            ("Int64", "bigint"),
            ("Float64", "double precision"),
            ("Boolean", "boolean"),
        ] {
            assert_eq!(postgres_name(arrow), postgres, "{arrow}");
        }
        assert_eq!(postgres_name("not a type"), "not a type");
    }
}
