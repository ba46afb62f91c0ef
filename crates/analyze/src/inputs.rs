//! Reading the inputs: listing files, checking them against the data
//! contract, and presenting them to SQL as the normalized tables `events`
//! and `catalog`.
//!
//! Column mapping and type normalization are built as DataFusion expressions
//! from the schema, never as SQL text: a user's column name is looked up in
//! the file schema and referenced as a column, so it cannot inject SQL.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::common::Column;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::logical_expr::{Expr, cast, lit};
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::{StreamExt, TryStreamExt};
use tailforge_core::config::{EventColumns, ItemColumns, TsUnit};
use tailforge_core::schema::{IdKind, InputFile, is_text};
use tailforge_core::{DataError, Error, Location, Result};
use tracing::warn;

/// One input table: where it is, its files and their (common) schema.
pub struct InputTable {
    pub role: &'static str,
    pub location: Location,
    pub files: Vec<InputFile>,
    /// Each file's display name and footer schema, in listing order.
    pub schemas: Vec<(String, SchemaRef)>,
    objects: Vec<object_store::ObjectMeta>,
}

impl InputTable {
    /// The first file's schema.
    pub fn schema(&self) -> Result<SchemaRef> {
        self.schemas.first().map(|(_, s)| Arc::clone(s)).ok_or_else(|| Error::internal("input without files"))
    }

    /// Whether all files share the first file's schema exactly.
    pub fn uniform(&self) -> bool {
        self.schemas.windows(2).all(|w| w[0].1 == w[1].1)
    }
}

/// Reads the Arrow schema and row count from one Parquet file's footer (one
/// ranged read of the object's tail, as DataFusion's own planning does).
async fn read_schema(location: &Location, meta: &object_store::ObjectMeta) -> Result<(SchemaRef, i64)> {
    let store = location.store();
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::from(
            DataError::new(format!("not a readable Parquet file ({e})"))
                .file(location.object_display(&meta.location))
                .hint("check that the file was completely written and is Parquet, not CSV or JSON"),
        )
    };
    let metadata = DFParquetMetadata::new(store.as_ref(), meta).fetch_metadata().await.map_err(|e| unreadable(&e))?;
    let file = metadata.file_metadata();
    let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata()).map_err(|e| unreadable(&e))?;
    Ok((Arc::new(schema), file.num_rows()))
}

/// Lists the Parquet files of `location` (a file, directory, glob or Hive
/// prefix) the way DataFusion will, and reads each footer's schema.
pub async fn open_input(ctx: &SessionContext, role: &'static str, location: &Location) -> Result<InputTable> {
    let storage_error = |e: &dyn std::fmt::Display| Error::storage(location.display(), e);
    let mut metas: Vec<object_store::ObjectMeta> = match location.glob() {
        // A glob is matched against the path below its base, '/' included,
        // so `dt=2026-11-2*/*.parquet` selects partitions; the matching files
        // are then handed to DataFusion one by one.
        Some(glob) => {
            let pattern = glob::Pattern::new(glob)
                .map_err(|e| Error::usage(format!("{}: invalid glob: {e}", location.display())))?;
            let options = glob::MatchOptions { require_literal_separator: true, ..Default::default() };
            let base = location.as_dir();
            let prefix = format!("{}/", base.path().as_ref());
            base.list_recursive()
                .await?
                .into_iter()
                .filter(|m| {
                    let rel = m.location.as_ref().strip_prefix(prefix.as_str()).unwrap_or(m.location.as_ref());
                    rel.ends_with(".parquet") && pattern.matches_with(rel, options)
                })
                .collect()
        }
        // A file, a directory or a Hive prefix: listed as DataFusion lists it.
        None => ListingTableUrl::try_new(location.url().clone(), None)
            .map_err(|e| Error::usage(format!("{}: {e}", location.display())))?
            .list_all_files(&ctx.state(), location.store().as_ref(), ".parquet")
            .await
            .map_err(|e| storage_error(&e))?
            .try_collect()
            .await
            .map_err(|e| storage_error(&e))?,
    };
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    if metas.is_empty() {
        return Err(DataError::new(format!("no Parquet files (*.parquet) found for the {role} input"))
            .file(location.display())
            .hint(
                "point it at a .parquet file, a directory or Hive prefix holding them, or a glob such as dir/*.parquet",
            )
            .into());
    }
    // Footers are small: fetch them concurrently, fail on the first bad file
    // in listing order.
    let schemas: Vec<Result<(SchemaRef, i64)>> =
        futures::stream::iter(metas.iter()).map(|m| read_schema(location, m)).buffered(16).collect().await;
    let mut files = Vec::with_capacity(metas.len());
    let mut file_schemas = Vec::with_capacity(metas.len());
    for (meta, schema) in metas.iter().zip(schemas) {
        let url = location.object_display(&meta.location);
        let (schema, rows) = schema?;
        if rows == 0 {
            // Legal (an export task that had nothing to write), and read as
            // such; said, since it can also be a sign of a failed export.
            warn!(file = %url, input = role, "the file has no rows; reading the others");
        }
        file_schemas.push((url.clone(), schema));
        files.push(InputFile { url, size: meta.size, e_tag: meta.e_tag.clone() });
    }
    Ok(InputTable { role, location: location.clone(), files, schemas: file_schemas, objects: metas })
}

/// The DataFusion table paths: the location itself, or with a glob the
/// exact files that matched it.
fn table_paths(input: &InputTable) -> Result<Vec<ListingTableUrl>> {
    let location = &input.location;
    if location.glob().is_none() {
        let url = ListingTableUrl::try_new(location.url().clone(), None)
            .map_err(|e| Error::usage(format!("{}: {e}", location.display())))?;
        return Ok(vec![url]);
    }
    input
        .objects
        .iter()
        .map(|m| {
            let mut url = location.store_url();
            url.set_path(&format!("/{}", m.location));
            ListingTableUrl::try_new(url, None).map_err(|e| Error::internal(format!("{}: {e}", m.location)))
        })
        .collect()
}

/// Reads the input as a DataFrame. With a single schema across files it is
/// passed to DataFusion as is; with several, DataFusion merges them.
pub async fn read_table(ctx: &SessionContext, input: &InputTable) -> Result<DataFrame> {
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let mut config = ListingTableConfig::new_with_multi_paths(table_paths(input)?).with_listing_options(options);
    config = if input.uniform() {
        config.with_schema(input.schema()?)
    } else {
        config.infer_schema(&ctx.state()).await.map_err(|e| data_error_from(input, e))?
    };
    let table = ListingTable::try_new(config).map_err(|e| data_error_from(input, e))?;
    ctx.read_table(Arc::new(table)).map_err(|e| data_error_from(input, e))
}

fn data_error_from(input: &InputTable, e: impl std::fmt::Display) -> Error {
    DataError::new(format!("cannot read the {} input: {e}", input.role)).file(input.location.display()).into()
}

fn column_ref(name: &str) -> Expr {
    Expr::Column(Column::from_name(name))
}

/// Looks a mapped column up in a file schema; a missing column lists the
/// present ones.
fn require<'a>(input: &InputTable, schema: &'a Schema, file: &str, name: &str, key: &str) -> Result<&'a DataType> {
    match schema.field_with_name(name) {
        Ok(f) => Ok(f.data_type()),
        Err(_) => {
            let present: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Err(DataError::new(format!(
                "the {} input has no column \"{name}\" (columns present: {})",
                input.role,
                present.join(", ")
            ))
            .file(file)
            .column(name)
            .hint(format!("rename the column, or map it in the pipeline: inputs.{key} = \"<column>\""))
            .into())
        }
    }
}

fn id_kind(input: &InputTable, dt: &DataType, file: &str, name: &str) -> Result<IdKind> {
    IdKind::of(dt).ok_or_else(|| {
        DataError::new(format!("has type {dt}; ids must be integers or strings"))
            .file(file)
            .column(name)
            .hint(format!("cast the column to an integer or string type in the {} data", input.role))
            .into()
    })
}

/// How the events' columns map and convert, decided from the schema.
#[derive(Debug, Clone)]
pub struct EventsShape {
    pub user: IdKind,
    pub item: IdKind,
    ts_type: DataType,
    ts_unit: TsUnit,
    has_event_type: bool,
    has_weight: bool,
    columns: EventColumns,
    /// Text columns that are read (for locating invalid UTF-8).
    pub text_columns: Vec<String>,
}

/// Checks every events file's schema against the contract and the mapping.
pub fn events_shape(input: &InputTable, columns: &EventColumns, ts_unit: TsUnit) -> Result<EventsShape> {
    let mut shape: Option<EventsShape> = None;
    for (file, schema) in &input.schemas {
        let user = id_kind(
            input,
            require(input, schema, file, &columns.user_id, "events_columns.user_id")?,
            file,
            &columns.user_id,
        )?;
        let item = id_kind(
            input,
            require(input, schema, file, &columns.item_id, "events_columns.item_id")?,
            file,
            &columns.item_id,
        )?;
        let ts_type = require(input, schema, file, &columns.ts, "events_columns.ts")?.clone();
        let ts_ok =
            ts_type.is_integer() || matches!(ts_type, DataType::Timestamp(..) | DataType::Date32 | DataType::Date64);
        if !ts_ok {
            return Err(DataError::new(format!(
                "has type {ts_type}; event times must be timestamps or integer Unix times"
            ))
            .file(file)
            .column(&columns.ts)
            .hint("store ts as a Parquet timestamp or an integer (set inputs.ts_unit for ms/us/ns)")
            .into());
        }
        let event_type = schema.field_with_name(&columns.event_type).ok().map(|f| f.data_type().clone());
        if let Some(dt) = &event_type
            && !is_text(dt)
        {
            return Err(DataError::new(format!("has type {dt}; event types must be strings"))
                .file(file)
                .column(&columns.event_type)
                .into());
        }
        let weight = schema.field_with_name(&columns.weight).ok().map(|f| f.data_type().clone());
        if let Some(dt) = &weight
            && !(dt.is_numeric())
        {
            return Err(DataError::new(format!("has type {dt}; weights must be numbers"))
                .file(file)
                .column(&columns.weight)
                .into());
        }
        let mut text_columns = Vec::new();
        for (name, kind) in [(&columns.user_id, user), (&columns.item_id, item)] {
            if kind == IdKind::Utf8 {
                text_columns.push(name.clone());
            }
        }
        if event_type.is_some() {
            text_columns.push(columns.event_type.clone());
        }
        let this = EventsShape {
            user,
            item,
            ts_type,
            ts_unit,
            has_event_type: event_type.is_some(),
            has_weight: weight.is_some(),
            columns: columns.clone(),
            text_columns,
        };
        match &shape {
            None => shape = Some(this),
            Some(s) if s.user != this.user || s.item != this.item || s.ts_type != this.ts_type => {
                return Err(DataError::new(format!(
                    "column types differ from the first file's (user_id {:?}, item_id {:?}, ts {})",
                    s.user, s.item, s.ts_type
                ))
                .file(file)
                .hint("write all files of one input with the same schema")
                .into());
            }
            Some(_) => {}
        }
    }
    shape.ok_or_else(|| Error::internal("no events files"))
}

impl EventsShape {
    /// `events(user_id, item_id, ts, event_type, weight)` with ids of the
    /// given kinds and `ts` in Unix seconds.
    pub fn normalize(&self, df: DataFrame, item_kind: IdKind) -> Result<DataFrame> {
        let c = &self.columns;
        let ts = column_ref(&c.ts);
        let ts_seconds = match &self.ts_type {
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                cast(cast(ts, DataType::Timestamp(TimeUnit::Second, None)), DataType::Int64)
            }
            _ => {
                let per_second = self.ts_unit.per_second();
                let as_i64 = cast(ts, DataType::Int64);
                if per_second == 1 { as_i64 } else { as_i64 / lit(per_second) }
            }
        };
        let event_type = if self.has_event_type {
            cast(column_ref(&c.event_type), DataType::Utf8)
        } else {
            lit(ScalarValue::Utf8(None))
        };
        let weight = if self.has_weight {
            cast(column_ref(&c.weight), DataType::Float64)
        } else {
            lit(ScalarValue::Float64(None))
        };
        df.select(vec![
            cast(column_ref(&c.user_id), self.user.data_type()).alias("user_id"),
            cast(column_ref(&c.item_id), item_kind.data_type()).alias("item_id"),
            ts_seconds.alias("ts"),
            event_type.alias("event_type"),
            weight.alias("weight"),
        ])
        .map_err(|e| Error::internal(format!("normalizing events: {e}")))
    }
}

/// Names of `tail_items`' fixed columns, which catalog attributes may not reuse.
const RESERVED: [&str; 4] = ["item_id", "title", "interactions", "rank"];

/// How the catalog's columns map: id, title and the text attributes kept.
#[derive(Debug, Clone)]
pub struct ItemsShape {
    pub item: IdKind,
    columns: ItemColumns,
    /// (input column, output name) of each kept text attribute.
    attributes: Vec<(String, String)>,
    pub text_columns: Vec<String>,
}

pub fn items_shape(input: &InputTable, columns: &ItemColumns) -> Result<ItemsShape> {
    let (_, schema) = input.schemas.first().ok_or_else(|| Error::internal("no items files"))?;
    let mut shape = None;
    for (file, schema) in &input.schemas {
        let item = id_kind(
            input,
            require(input, schema, file, &columns.item_id, "items_columns.item_id")?,
            file,
            &columns.item_id,
        )?;
        let title = require(input, schema, file, &columns.title, "items_columns.title")?;
        if !is_text(title) {
            return Err(DataError::new(format!("has type {title}; titles must be strings"))
                .file(file)
                .column(&columns.title)
                .into());
        }
        if shape.is_none() {
            shape = Some(item);
        }
    }
    let item = shape.ok_or_else(|| Error::internal("no items files"))?;
    let mut attributes = Vec::new();
    for f in schema.fields() {
        let name = f.name();
        if name == &columns.item_id || name == &columns.title || !is_text(f.data_type()) {
            continue;
        }
        let out = if RESERVED.contains(&name.as_str()) { format!("attr_{name}") } else { name.clone() };
        attributes.push((name.clone(), out));
    }
    let mut text_columns = vec![columns.title.clone()];
    if item == IdKind::Utf8 {
        text_columns.push(columns.item_id.clone());
    }
    text_columns.extend(attributes.iter().map(|(i, _)| i.clone()));
    Ok(ItemsShape { item, columns: columns.clone(), attributes, text_columns })
}

impl ItemsShape {
    /// `catalog(item_id, title, <attributes>)`, all text as Utf8.
    pub fn normalize(&self, df: DataFrame, item_kind: IdKind) -> Result<DataFrame> {
        let mut exprs = vec![
            cast(column_ref(&self.columns.item_id), item_kind.data_type()).alias("item_id"),
            cast(column_ref(&self.columns.title), DataType::Utf8).alias("title"),
        ];
        for (input, output) in &self.attributes {
            exprs.push(cast(column_ref(input), DataType::Utf8).alias(output));
        }
        df.select(exprs).map_err(|e| Error::internal(format!("normalizing the catalog: {e}")))
    }
}
