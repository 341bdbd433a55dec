//! Date functions that compute a constant input once.
//!
//! The lake's date partition columns (`local_date`, `month`) hold one value per
//! data file, so a batch of a scan usually holds one value of them; yet
//! DataFusion evaluates `date_trunc('month', local_date)` row by row, through
//! the calendar, for every row of every batch. On a year of 1,000 hourly meters
//! that row-by-row calendar work was most of a tenant-wide monthly rollup
//! (about 60 % of its time). [`ConstantOnce`] wraps such a function: when every
//! argument of a call is one repeated value, the function runs on one row and
//! the answer stands for all of them; otherwise the wrapped function runs as
//! usual. Same function, same value: the answers cannot differ.
//!
//! Only functions whose answer depends on nothing but their arguments (the
//! immutable ones) are wrapped ([`WRAPPED`]).

use std::any::Any;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{ExprSchema, Result as DfResult, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::interval_arithmetic::Interval;
use datafusion::logical_expr::preimage::PreimageResult;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// The functions wrapped: date arithmetic analysts group by.
pub const WRAPPED: [&str; 4] = ["date_trunc", "date_part", "date_bin", "to_char"];

/// Replace each of [`WRAPPED`] in `ctx` by its [`ConstantOnce`] wrapper (a
/// function missing, or not immutable, is left as it is).
pub fn register(ctx: &SessionContext) {
    for name in WRAPPED {
        let Some(inner) = ctx.state().scalar_functions().get(name).cloned() else {
            continue;
        };
        if inner.signature().volatility != Volatility::Immutable {
            continue;
        }
        ctx.register_udf(ScalarUDF::new_from_impl(ConstantOnce {
            inner: inner.inner().clone(),
        }));
    }
}

/// A function evaluated once for a call whose arguments are each one repeated
/// value (see the module docs).
#[derive(Debug)]
pub struct ConstantOnce {
    inner: Arc<dyn ScalarUDFImpl>,
}

impl PartialEq for ConstantOnce {
    fn eq(&self, other: &Self) -> bool {
        self.inner.as_ref().dyn_eq(other.inner.as_ref() as &dyn Any)
    }
}

impl Eq for ConstantOnce {}

impl std::hash::Hash for ConstantOnce {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.dyn_hash(state);
    }
}

/// The one value `array` holds in every row, if it does (nulls included).
fn repeated(array: &ArrayRef) -> DfResult<Option<ScalarValue>> {
    if array.is_empty() {
        return Ok(None);
    }
    let first = array.slice(0, 1);
    // Compare every row with the first, as arrays: one kernel call.
    let same = datafusion::arrow::compute::kernels::cmp::not_distinct(
        array,
        &datafusion::arrow::array::Scalar::new(first),
    )?;
    if same.true_count() == array.len() {
        Ok(Some(ScalarValue::try_from_array(array, 0)?))
    } else {
        Ok(None)
    }
}

impl ScalarUDFImpl for ConstantOnce {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn display_name(&self, args: &[Expr]) -> DfResult<String> {
        #[allow(deprecated)] // delegated as is, so plans print as before
        self.inner.display_name(args)
    }

    fn schema_name(&self, args: &[Expr]) -> DfResult<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(arg_types)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        self.inner.with_updated_config(config).map(|updated| {
            ScalarUDF::new_from_impl(ConstantOnce {
                inner: updated.inner().clone(),
            })
        })
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        #[allow(deprecated)]
        self.inner.is_nullable(args, schema)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let mut any_array = false;
        let mut once = Vec::with_capacity(args.args.len());
        for arg in &args.args {
            match arg {
                ColumnarValue::Scalar(s) => once.push(ColumnarValue::Scalar(s.clone())),
                ColumnarValue::Array(a) => {
                    any_array = true;
                    match repeated(a)? {
                        Some(s) => once.push(ColumnarValue::Scalar(s)),
                        None => return self.inner.invoke_with_args(args),
                    }
                }
            }
        }
        if !any_array || rows <= 1 {
            return self.inner.invoke_with_args(args);
        }
        let answer = self.inner.invoke_with_args(ScalarFunctionArgs {
            args: once,
            arg_fields: args.arg_fields.clone(),
            number_rows: 1,
            return_field: args.return_field.clone(),
            config_options: args.config_options.clone(),
        })?;
        Ok(match answer {
            ColumnarValue::Scalar(s) => ColumnarValue::Scalar(s),
            ColumnarValue::Array(a) => ColumnarValue::Scalar(ScalarValue::try_from_array(&a, 0)?),
        })
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> DfResult<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn preimage(
        &self,
        args: &[Expr],
        lit_expr: &Expr,
        info: &SimplifyContext,
    ) -> DfResult<PreimageResult> {
        self.inner.preimage(args, lit_expr, info)
    }

    fn is_strict(&self) -> bool {
        self.inner.is_strict()
    }

    fn strictly_order_preserving(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.inner.strictly_order_preserving(inputs)
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.inner.placement(args)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn evaluate_bounds(&self, input: &[&Interval]) -> DfResult<Interval> {
        self.inner.evaluate_bounds(input)
    }

    fn propagate_constraints(
        &self,
        interval: &Interval,
        inputs: &[&Interval],
    ) -> DfResult<Option<Vec<Interval>>> {
        self.inner.propagate_constraints(interval, inputs)
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> DfResult<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn preserves_lex_ordering(&self, inputs: &[ExprProperties]) -> DfResult<bool> {
        self.inner.preserves_lex_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Date32Array, RecordBatch};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;

    use super::*;

    fn days(date: &str) -> i32 {
        let d = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        i32::try_from((d - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days())
            .unwrap()
    }

    /// Batches of one repeated date (as a partition column gives them), of
    /// mixed dates, and with nulls: the wrapped functions answer what a
    /// calendar says, row by row.
    #[tokio::test]
    async fn wrapped_date_functions_answer_row_by_row_whatever_the_batch() {
        let schema = Arc::new(Schema::new(vec![Field::new("d", DataType::Date32, true)]));
        let batch = |dates: Vec<Option<&str>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Date32Array::from(
                    dates.into_iter().map(|d| d.map(days)).collect::<Vec<_>>(),
                ))],
            )
            .unwrap()
        };
        let batches = vec![
            batch(vec![Some("2026-03-29"); 5]),
            batch(vec![
                Some("2026-10-25"),
                Some("2026-01-31"),
                Some("2025-12-31"),
            ]),
            batch(vec![None, None]),
            batch(vec![Some("2026-02-28"), None]),
            batch(vec![Some("2024-02-29")]),
        ];
        let ctx = SessionContext::new();
        register(&ctx);
        let wrapped = ctx.state().scalar_functions()["date_trunc"].clone();
        assert!(
            wrapped.inner().as_ref().dyn_eq(&ConstantOnce {
                inner: datafusion::functions::datetime::date_trunc()
                    .inner()
                    .clone(),
            } as &dyn std::any::Any),
            "date_trunc is not wrapped"
        );
        ctx.register_table(
            "t",
            Arc::new(MemTable::try_new(schema.clone(), vec![batches]).unwrap()),
        )
        .unwrap();
        let out = ctx
            .sql(
                "SELECT CAST(date_trunc('month', d) AS VARCHAR), CAST(date_part('year', d) AS VARCHAR), \
                 to_char(d, '%Y/%m') FROM t",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut rows: Vec<[Option<String>; 3]> = Vec::new();
        for b in &out {
            let b = datafusion::arrow::compute::cast(b.column(0), &DataType::Utf8)
                .map(|c0| (c0, b.clone()))
                .unwrap();
            for i in 0..b.1.num_rows() {
                let cell = |c: usize| {
                    let col =
                        datafusion::arrow::compute::cast(b.1.column(c), &DataType::Utf8).unwrap();
                    let col = col
                        .as_any()
                        .downcast_ref::<datafusion::arrow::array::StringArray>()
                        .unwrap()
                        .clone();
                    col.is_valid(i).then(|| col.value(i).to_owned())
                };
                rows.push([cell(0), cell(1), cell(2)]);
            }
        }
        // The oracle: the calendar, by hand.
        let row = |m: &str, y: &str, c: &str| {
            [
                Some(format!("{m}T00:00:00")),
                Some(y.to_owned()),
                Some(c.to_owned()),
            ]
        };
        let mut expected = vec![row("2026-03-01", "2026", "2026/03"); 5];
        expected.push(row("2026-10-01", "2026", "2026/10"));
        expected.push(row("2026-01-01", "2026", "2026/01"));
        expected.push(row("2025-12-01", "2025", "2025/12"));
        expected.push([None, None, None]);
        expected.push([None, None, None]);
        expected.push(row("2026-02-01", "2026", "2026/02"));
        expected.push([None, None, None]);
        expected.push(row("2024-02-01", "2024", "2024/02"));
        assert_eq!(rows, expected);
    }
}
