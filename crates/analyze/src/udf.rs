//! `list_field(list_of_structs, 'name')`: the `name` field of every struct in
//! a list, as a list — zero-copy (the list's offsets over the struct's child
//! column).
//!
//! Why it exists: `sql/sequences.sql` orders each user's events by sorting a
//! list of `(ts, item_id)` structs (`array_sort` compares structs field by
//! field, which is exactly eval-v1's "ts, then item id"), then needs the
//! items and the times back as plain lists. DataFusion's `get_field` does not
//! reach into lists, and the alternative, `array_agg(… ORDER BY …)`, was ~45×
//! slower on 1M events (its order-sensitive partial/final merge).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ListField {
    signature: Signature,
}

impl ListField {
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(ListField { signature: Signature::any(2, Volatility::Immutable) })
    }
}

/// The struct fields of a `List<Struct>` type.
fn struct_fields(dt: &DataType) -> Option<&datafusion::arrow::datatypes::Fields> {
    match dt {
        DataType::List(item) => match item.data_type() {
            DataType::Struct(fields) => Some(fields),
            _ => None,
        },
        _ => None,
    }
}

fn field_name(arg: Option<&ScalarValue>) -> Option<&str> {
    match arg {
        Some(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s))) => Some(s),
        _ => None,
    }
}

impl ScalarUDFImpl for ListField {
    fn name(&self) -> &str {
        "list_field"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        plan_err!("list_field: return type depends on the field name; use return_field_from_args")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let list = &args.arg_fields[0];
        let Some(fields) = struct_fields(list.data_type()) else {
            return plan_err!("list_field: first argument must be a list of structs, got {}", list.data_type());
        };
        let Some(name) = field_name(args.scalar_arguments.get(1).copied().flatten()) else {
            return plan_err!("list_field: second argument must be a string literal");
        };
        let Some((_, field)) = fields.find(name) else {
            return plan_err!("list_field: the structs have no field {name:?}");
        };
        Ok(Arc::new(Field::new(list.name(), DataType::List(Arc::clone(field)), list.is_nullable())))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::List(out_item) = args.return_field.data_type().clone() else {
            return exec_err!("list_field: unexpected return type");
        };
        let ColumnarValue::Array(array) = &args.args[0] else {
            return exec_err!("list_field: expected an array argument");
        };
        let list = array.as_list::<i32>();
        let values = list.values().as_struct();
        let child: ArrayRef = values
            .column_by_name(out_item.name())
            .cloned()
            .ok_or_else(|| datafusion::error::DataFusionError::Execution("list_field: field vanished".into()))?;
        let out = ListArray::try_new(out_item, list.offsets().clone(), child, list.nulls().cloned())?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}
