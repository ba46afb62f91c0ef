//! `tailforge import movielens`: MovieLens files → the events/items contract.
//!
//! Two layouts are recognized by their files:
//!
//! * **MovieLens-100k** (`u.data`, `u.item`, `u.genre`): `u.data` is
//!   tab-separated `user item rating timestamp`; `u.item` is pipe-separated
//!   and **latin-1** encoded (titles like "Misérables, Les (1995)"), with 19
//!   genre flags that become a `genres` attribute ("Animation|Comedy").
//!   Small and irregular, so it is parsed line by line with exact line
//!   numbers in errors.
//! * **MovieLens latest / 25M** (`ratings.csv`, `movies.csv`, `tags.csv`):
//!   RFC 4180 CSV with quoted titles, read by DataFusion; user tags are
//!   aggregated into a `tags` attribute by SQL (`sql/import_movielens_*.sql`).
//!
//! Both write `<out>/events/part-00000.parquet` and `<out>/items/part-00000.parquet`.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::prelude::{CsvReadOptions, SessionContext};
use serde::{Deserialize, Serialize};
use tailforge_core::parquet_io::ParquetSink;
use tailforge_core::{DataError, Error, Location, Result};
use tracing::info;

/// SQL of the MovieLens-latest import, one query per output.
const LATEST_EVENTS_SQL: &str = include_str!("../../../sql/import_movielens_events.sql");
const LATEST_ITEMS_SQL: &str = include_str!("../../../sql/import_movielens_items.sql");

/// The 19 MovieLens-100k genres in flag order, used when `u.genre` is absent.
const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// What was imported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportSummary {
    pub format: String,
    pub events: u64,
    pub items: u64,
    pub events_url: String,
    pub items_url: String,
}

/// Imports the MovieLens directory `src` into `out/events` and `out/items`.
pub async fn import(src: &Path, out: &Location) -> Result<ImportSummary> {
    let out = out.as_dir();
    if src.join("u.data").is_file() {
        import_100k(src, &out).await
    } else if src.join("ratings.csv").is_file() {
        import_latest(src, &out).await
    } else {
        Err(Error::usage(format!(
            "{}: not a MovieLens directory: expected u.data + u.item (MovieLens-100k) or ratings.csv + movies.csv (MovieLens latest)",
            src.display()
        )))
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::from(DataError::new(format!("cannot read: {e}")).file(path.display().to_string())))
}

/// Latin-1 maps each byte to the code point of the same value, so decoding
/// is a byte-to-char widening; the result is valid UTF-8 by construction.
pub fn decode_latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

fn bad_line(path: &Path, line: usize, message: String) -> Error {
    DataError::new(message)
        .file(path.display().to_string())
        .row(line as u64)
        .hint("the file does not look like MovieLens-100k; re-download it or fix the line")
        .into()
}

async fn import_100k(src: &Path, out: &Location) -> Result<ImportSummary> {
    // u.data: user \t item \t rating \t timestamp
    let data_path = src.join("u.data");
    let data = read(&data_path)?;
    let text = std::str::from_utf8(&data).map_err(|e| bad_line(&data_path, 0, format!("not ASCII/UTF-8 text: {e}")))?;
    let (mut users, mut items, mut ts, mut weights) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != 4 {
            return Err(bad_line(
                &data_path,
                i + 1,
                format!("expected 4 tab-separated fields, found {}", fields.len()),
            ));
        }
        let int = |k: usize, what: &str| -> Result<i64> {
            fields[k]
                .trim()
                .parse::<i64>()
                .map_err(|_| bad_line(&data_path, i + 1, format!("{what} {:?} is not an integer", fields[k])))
        };
        users.push(int(0, "user id")?);
        items.push(int(1, "item id")?);
        weights.push(int(2, "rating")? as f64);
        ts.push(int(3, "timestamp")?);
    }
    let n = users.len();
    let events = RecordBatch::try_new(
        crate::events_schema(),
        vec![
            Arc::new(Int64Array::from(users)) as ArrayRef,
            Arc::new(Int64Array::from(items)),
            Arc::new(Int64Array::from(ts)),
            Arc::new(StringArray::from(vec!["rating"; n])),
            Arc::new(Float64Array::from(weights)),
        ],
    )
    .map_err(|e| Error::internal(e.to_string()))?;

    // u.genre: name|index, in flag order.
    let genre_path = src.join("u.genre");
    let genres: Vec<String> = if genre_path.is_file() {
        let text = decode_latin1(&read(&genre_path)?);
        let mut g: Vec<(usize, String)> = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let (name, idx) =
                line.rsplit_once('|').ok_or_else(|| bad_line(&genre_path, i + 1, "expected name|index".into()))?;
            let idx: usize = idx
                .trim()
                .parse()
                .map_err(|_| bad_line(&genre_path, i + 1, format!("index {idx:?} is not an integer")))?;
            g.push((idx, name.to_string()));
        }
        g.sort();
        g.into_iter().map(|(_, n)| n).collect()
    } else {
        ML100K_GENRES.iter().map(|s| s.to_string()).collect()
    };

    // u.item: id|title|release date|video release date|IMDb URL|19 flags, latin-1.
    let item_path = src.join("u.item");
    let text = decode_latin1(&read(&item_path)?);
    let (mut ids, mut titles, mut release, mut genre_col, mut urls) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('|').collect();
        if f.len() != 5 + genres.len() {
            return Err(bad_line(
                &item_path,
                i + 1,
                format!("expected {} |-separated fields, found {}", 5 + genres.len(), f.len()),
            ));
        }
        let id: i64 = f[0]
            .trim()
            .parse()
            .map_err(|_| bad_line(&item_path, i + 1, format!("item id {:?} is not an integer", f[0])))?;
        let mut g = Vec::new();
        for (k, flag) in f[5..].iter().enumerate() {
            match flag.trim() {
                "1" => g.push(genres[k].as_str()),
                "0" => {}
                other => return Err(bad_line(&item_path, i + 1, format!("genre flag {other:?} is not 0 or 1"))),
            }
        }
        let non_empty = |s: &str| if s.trim().is_empty() { None } else { Some(s.trim().to_string()) };
        ids.push(id);
        titles.push(f[1].trim().to_string());
        release.push(non_empty(f[2]));
        genre_col.push(g.join("|"));
        urls.push(non_empty(f[4]));
    }
    let items_schema = Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::Int64, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("release_date", DataType::Utf8, true),
        Field::new("genres", DataType::Utf8, false),
        Field::new("imdb_url", DataType::Utf8, true),
    ]));
    let items = RecordBatch::try_new(
        items_schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids)) as ArrayRef,
            Arc::new(StringArray::from(titles)),
            Arc::new(StringArray::from(release)),
            Arc::new(StringArray::from(genre_col)),
            Arc::new(StringArray::from(urls)),
        ],
    )
    .map_err(|e| Error::internal(e.to_string()))?;

    let events_loc = out.join("events/part-00000.parquet");
    let items_loc = out.join("items/part-00000.parquet");
    let n_events = write_one(&events_loc, events).await?;
    let n_items = write_one(&items_loc, items).await?;
    info!(events = n_events, items = n_items, "imported MovieLens-100k");
    Ok(ImportSummary {
        format: "movielens-100k".into(),
        events: n_events,
        items: n_items,
        events_url: out.join("events/").display(),
        items_url: out.join("items/").display(),
    })
}

async fn write_one(loc: &Location, batch: RecordBatch) -> Result<u64> {
    let mut sink = ParquetSink::create(loc, batch.schema())?;
    sink.write(&batch).await?;
    sink.finish().await
}

async fn import_latest(src: &Path, out: &Location) -> Result<ImportSummary> {
    let ctx = SessionContext::new();
    ctx.runtime_env().register_object_store(&out.store_url(), out.store());
    let csv = |name: &str| src.join(name).display().to_string();
    for (table, file, required) in
        [("ratings", "ratings.csv", true), ("movies", "movies.csv", true), ("tags", "tags.csv", false)]
    {
        let path = src.join(file);
        if !path.is_file() {
            if required {
                return Err(Error::usage(format!(
                    "{}: missing {file} (MovieLens latest needs ratings.csv and movies.csv)",
                    src.display()
                )));
            }
            // No tags: an empty table with the expected columns keeps one SQL path.
            ctx.sql("CREATE TABLE tags (\"userId\" BIGINT, \"movieId\" BIGINT, tag VARCHAR, \"timestamp\" BIGINT)")
                .await
                .map_err(|e| Error::internal(e.to_string()))?;
            continue;
        }
        ctx.register_csv(table, &csv(file), CsvReadOptions::new().has_header(true)).await.map_err(|e| {
            Error::from(DataError::new(format!("cannot read as CSV: {e}")).file(path.display().to_string()))
        })?;
    }
    let mut counts = Vec::new();
    for (sql_name, sql, target) in [
        ("import_movielens_events.sql", LATEST_EVENTS_SQL, "events"),
        ("import_movielens_items.sql", LATEST_ITEMS_SQL, "items"),
    ] {
        let df = ctx.sql(sql).await.map_err(|e| {
            Error::from(
                DataError::new(format!("the CSV files do not have MovieLens columns: {e}"))
                    .file(src.display().to_string())
                    .hint(format!("checked by sql/{sql_name}")),
            )
        })?;
        let loc = out.join(&format!("{target}/part-00000.parquet"));
        let written = df
            .write_parquet(loc.url().as_str(), DataFrameWriteOptions::new().with_single_file_output(true), None)
            .await
            .map_err(|e| Error::from(DataError::new(format!("import failed: {e}")).file(src.display().to_string())))?;
        counts.push(tailforge_core::parquet_io::rows_written(&written));
    }
    info!(events = counts[0], items = counts[1], "imported MovieLens latest");
    Ok(ImportSummary {
        format: "movielens-latest".into(),
        events: counts[0],
        items: counts[1],
        events_url: out.join("events/").display(),
        items_url: out.join("items/").display(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_decodes_accents() {
        assert_eq!(decode_latin1(b"Mis\xe9rables, Les (1995)"), "Misérables, Les (1995)");
    }

    #[tokio::test]
    async fn latest_layout_aggregates_tags() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("ml");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(
            src.join("ratings.csv"),
            "userId,movieId,rating,timestamp\n1,10,4.5,1000000000\n2,10,3.0,1000000100\n2,20,5.0,1000000200\n",
        )
        .unwrap();
        std::fs::write(src.join("movies.csv"), "movieId,title,genres\n10,\"Heat, The (1995)\",Action|Crime\n20,Up (2009),Animation\n30,Cold (2001),Drama\n").unwrap();
        std::fs::write(
            src.join("tags.csv"),
            "userId,movieId,tag,timestamp\n1,10,Heist,1\n2,10,heist,2\n2,10,Pacino,3\n",
        )
        .unwrap();
        let out = Location::parse(dir.path().join("out").to_str().unwrap()).unwrap();
        let s = import(&src, &out).await.unwrap();
        assert_eq!((s.events, s.items), (3, 3));
        let items = tailforge_core::parquet_io::read_parquet(&out.join("items/part-00000.parquet")).await.unwrap();
        let batch = datafusion::arrow::compute::concat_batches(&items[0].schema(), &items).unwrap();
        let pretty = datafusion::arrow::util::pretty::pretty_format_batches(&[batch]).unwrap().to_string();
        assert!(pretty.contains("Heat, The (1995)"), "{pretty}");
        assert!(pretty.contains("heist|pacino"), "tags are lower-cased, de-duplicated and sorted: {pretty}");
    }

    #[tokio::test]
    async fn malformed_u_data_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("u.data"), "1\t2\t3\t881250949\n1\t2\tx\t881250949\n").unwrap();
        std::fs::write(dir.path().join("u.item"), "").unwrap();
        let out = Location::parse(dir.path().join("out").to_str().unwrap()).unwrap();
        let e = import(dir.path(), &out).await.unwrap_err();
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains("u.data: row 2: rating \"x\" is not an integer"), "{e}");
    }
}
