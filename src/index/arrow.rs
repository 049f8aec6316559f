//! The item table as Arrow record batches: items.parquet's columns (Polars) converted to
//! arrow-rs arrays, plus the vector column, with the model recorded in the schema metadata.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::types::Float32Type;
use arrow_array::{
    ArrayRef, BooleanArray, FixedSizeListArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, UInt32Array,
};
use arrow_schema::{DataType as ArrowType, Field, Schema};
use polars::prelude::*;

use crate::cols;
use crate::encoder::{Embeddings, ModelInfo};

/// Rows per record batch written to LanceDB.
const BATCH_ROWS: usize = 8192;

/// `parent_asin`, `vector`, then every other column of `items` in its order.
pub fn item_batches(
    items: &DataFrame,
    file: &Path,
    vectors: &Embeddings,
    info: &ModelInfo,
) -> Result<Vec<RecordBatch>> {
    anyhow::ensure!(vectors.len() == items.height(), "one vector per item");
    let dim = i32::try_from(vectors.dim)?;
    let mut fields = vec![
        Field::new(cols::PARENT_ASIN, ArrowType::Utf8, false),
        Field::new(
            super::VECTOR,
            ArrowType::FixedSizeList(Arc::new(Field::new("item", ArrowType::Float32, true)), dim),
            false,
        ),
    ];
    let others: Vec<&Column> = items
        .columns()
        .iter()
        .filter(|c| c.name().as_str() != cols::PARENT_ASIN)
        .collect();
    let asin = Context::with_context(items.column(cols::PARENT_ASIN), || {
        format!("{}: no column {}", file.display(), cols::PARENT_ASIN)
    })?;
    let mut out = Vec::new();
    let mut start = 0;
    while start < items.height() {
        let len = BATCH_ROWS.min(items.height() - start);
        let mut arrays: Vec<ArrayRef> = vec![
            to_arrow(&asin.slice(start as i64, len), file)?,
            Arc::new(
                FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
                    (start..start + len).map(|i| Some(vectors.row(i).iter().map(|&x| Some(x)))),
                    dim,
                ),
            ),
        ];
        for c in &others {
            arrays.push(to_arrow(&c.slice(start as i64, len), file)?);
        }
        if out.is_empty() {
            for (c, a) in others.iter().zip(&arrays[2..]) {
                fields.push(Field::new(c.name().as_str(), a.data_type().clone(), true));
            }
        }
        let schema = Arc::new(Schema::new_with_metadata(
            fields.clone(),
            super::model_metadata(info)?,
        ));
        out.push(RecordBatch::try_new(schema, arrays)?);
        start += len;
    }
    Ok(out)
}

/// One Polars column as an arrow-rs array (the dtypes items.parquet uses).
fn to_arrow(c: &Column, file: &Path) -> Result<ArrayRef> {
    let name = c.name().as_str();
    let s = c.as_materialized_series();
    Ok(match s.dtype() {
        DataType::String => Arc::new(s.str()?.iter().collect::<StringArray>()),
        DataType::Float64 => Arc::new(s.f64()?.iter().collect::<Float64Array>()),
        DataType::Int64 => Arc::new(s.i64()?.iter().collect::<Int64Array>()),
        DataType::Int32 => Arc::new(s.i32()?.iter().collect::<Int32Array>()),
        DataType::UInt32 => Arc::new(s.u32()?.iter().collect::<UInt32Array>()),
        DataType::Boolean => Arc::new(s.bool()?.iter().collect::<BooleanArray>()),
        DataType::List(inner) if **inner == DataType::String => {
            let mut b = ListBuilder::new(StringBuilder::new());
            for row in s.list()?.series_iter() {
                match row {
                    Some(v) => {
                        for x in v.str()?.iter() {
                            b.values().append_option(x);
                        }
                        b.append(true);
                    }
                    None => b.append(false),
                }
            }
            Arc::new(b.finish())
        }
        other => bail!(
            "{}: column {name} has type {other}, which the index does not store \
             (string, float64, int32/64, uint32, bool, list<string>)",
            file.display()
        ),
    })
}
