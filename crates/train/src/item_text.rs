//! Each item's text, as the text encoder reads it: the catalog's title and
//! attributes (analyze's `item_text.parquet`), plus for tail items the
//! generate stage's description and keywords.
//!
//! ```text
//! Toy Story (1995). genres: Animation|Children's|Comedy. release_date: 01-Jan-1995.
//! <generated description> Keywords: toys, friendship, rivalry.
//! ```
//!
//! Keywords also explain recommendations ("why"): an item's keywords are its
//! generated keywords, else the words of its catalog attributes.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use tailforge_core::parquet_io::{parquet_files, read_parquet};
use tailforge_core::schema::{generate_outputs, outputs};
use tailforge_core::{DataError, Error, Location, Result};

use crate::dataset::{Dataset, Ids};

/// The text side of every catalog item, by dense index.
#[derive(Debug, Clone, Default)]
pub struct ItemTexts {
    pub titles: Vec<String>,
    /// The text the encoder embeds.
    pub texts: Vec<String>,
    /// Lower-cased keywords for explanations.
    pub keywords: Vec<Vec<String>>,
    /// Whether the item's text includes a generated description.
    pub generated: Vec<bool>,
}

impl ItemTexts {
    pub fn generated_count(&self) -> usize {
        self.generated.iter().filter(|&&g| g).count()
    }
}

/// Dense index of each row's item id, `None` for ids outside the vocabulary.
fn dense_indices(ids: &Ids, column: &dyn Array, file: &str) -> Result<Vec<Option<usize>>> {
    let bad = |e: String| -> Error { DataError::new(e).file(file).column("item_id").into() };
    Ok(match ids {
        Ids::Int64(vocab) => {
            let c = cast(column, &DataType::Int64).map_err(|e| bad(format!("not an integer id: {e}")))?;
            let c = c.as_primitive_opt::<Int64Type>().ok_or_else(|| bad("not an integer id".into()))?;
            c.iter().map(|v| v.and_then(|v| vocab.binary_search(&v).ok())).collect()
        }
        Ids::Utf8(vocab) => {
            let c = cast(column, &DataType::Utf8).map_err(|e| bad(format!("not a text id: {e}")))?;
            let c = c.as_string_opt::<i32>().ok_or_else(|| bad("not a text id".into()))?;
            c.iter().map(|v| v.and_then(|v| vocab.binary_search_by(|x| x.as_str().cmp(v)).ok())).collect()
        }
    })
}

/// A column as optional strings (any type arrow can cast to text).
fn strings(batch: &RecordBatch, index: usize) -> Option<Vec<Option<String>>> {
    let c = cast(batch.column(index), &DataType::Utf8).ok()?;
    let c = c.as_string_opt::<i32>()?;
    Some(c.iter().map(|v| v.map(str::to_string)).collect())
}

/// Catalog values worth reading: not empty, not a URL (links carry no meaning
/// a sentence encoder can use and would spend its token budget).
fn meaningful(value: &str) -> bool {
    let v = value.trim();
    !v.is_empty() && !v.starts_with("http://") && !v.starts_with("https://")
}

/// Words of a catalog attribute value, as keywords: `Animation|Children's` → `animation`, `children's`.
fn attribute_keywords(value: &str) -> impl Iterator<Item = String> + '_ {
    // Values with digits (dates, sizes, codes) make poor explanations.
    value
        .split(['|', ',', ';', '/'])
        .map(|w| w.trim().to_lowercase())
        .filter(|w| !w.is_empty() && w.len() <= 40 && !w.chars().any(|c| c.is_ascii_digit()))
}

/// Reads the catalog text of `analyze_out` and, when `generate_out` is given,
/// the accepted generations, into each item's text.
pub async fn load_item_texts(
    dataset: &Dataset,
    analyze_out: &Location,
    generate_out: Option<&Location>,
) -> Result<ItemTexts> {
    let n = dataset.n_items();
    let mut titles = vec![String::new(); n];
    let mut attributes: Vec<Vec<(String, String)>> = vec![Vec::new(); n];
    let mut keywords: Vec<Vec<String>> = vec![Vec::new(); n];

    let file = analyze_out.join(&format!("{}.parquet", outputs::ITEM_TEXT));
    let name = file.display();
    for batch in read_parquet(&file).await? {
        let schema = batch.schema();
        let Some(id_col) = schema.index_of("item_id").ok() else {
            return Err(DataError::new("missing column").file(&name).column("item_id").into());
        };
        let index = dense_indices(&dataset.item_ids, batch.column(id_col).as_ref(), &name)?;
        for (c, field) in schema.fields().iter().enumerate() {
            if c == id_col {
                continue;
            }
            let Some(values) = strings(&batch, c) else { continue };
            for (row, value) in values.into_iter().enumerate() {
                let (Some(item), Some(value)) = (index[row], value) else { continue };
                if !meaningful(&value) {
                    continue;
                }
                if field.name() == "title" {
                    titles[item] = value.trim().to_string();
                } else {
                    keywords[item].extend(attribute_keywords(&value));
                    attributes[item].push((field.name().clone(), value.trim().to_string()));
                }
            }
        }
    }

    let mut descriptions: Vec<Option<String>> = vec![None; n];
    if let Some(dir) = generate_out {
        // (rows read, rows of this dataset's items, first shard)
        let mut seen = (0usize, 0usize, None);
        for (_, shard) in parquet_files(&dir.join(generate_outputs::GENERATED)).await? {
            let shard_name = shard.display();
            seen.2.get_or_insert_with(|| shard_name.clone());
            for batch in read_parquet(&shard).await? {
                let schema = batch.schema();
                let col = |c: &str| {
                    schema
                        .index_of(c)
                        .map_err(|_| Error::from(DataError::new("missing column").file(&shard_name).column(c)))
                };
                let (id_col, desc_col, kw_col) = (col("item_id")?, col("description")?, col("keywords")?);
                let index = dense_indices(&dataset.item_ids, batch.column(id_col).as_ref(), &shard_name)?;
                let desc = strings(&batch, desc_col).unwrap_or_default();
                let lists = batch.column(kw_col).as_list_opt::<i32>();
                seen.0 += index.len();
                for (row, item) in index.iter().enumerate() {
                    let Some(item) = *item else { continue };
                    seen.1 += 1;
                    descriptions[item] = desc.get(row).cloned().flatten();
                    if let Some(list) = lists.filter(|l| !l.is_null(row)) {
                        let words = list.value(row);
                        if let Some(words) = words.as_string_opt::<i32>() {
                            let generated: Vec<String> =
                                words.iter().flatten().map(|w| w.trim().to_lowercase()).collect();
                            if !generated.is_empty() {
                                keywords[item] = generated;
                            }
                        }
                    }
                }
            }
        }
        if let (rows @ 1.., 0, Some(shard)) = seen {
            // Some rows may name items a newer catalog dropped; none at all
            // means the directory belongs to another analyze output.
            return Err(DataError::new(format!(
                "none of its {rows} items is an item of this dataset ({}): this generate output was made for another dataset",
                analyze_out.display()
            ))
            .file(shard)
            .column("item_id")
            .hint("pass as --augment the output of `tailforge generate` run on this analyze output, or leave --augment out")
            .into());
        }
    }

    let mut texts = Vec::with_capacity(n);
    for item in 0..n {
        let title = if titles[item].is_empty() {
            format!("item {}", dataset.item_ids.display(item))
        } else {
            titles[item].clone()
        };
        let mut text = title.clone();
        if !text.ends_with('.') {
            text.push('.');
        }
        for (k, v) in &attributes[item] {
            text.push_str(&format!(" {k}: {v}."));
        }
        if let Some(d) = &descriptions[item] {
            text.push(' ');
            text.push_str(d.trim());
            if !keywords[item].is_empty() {
                text.push_str(&format!(" Keywords: {}.", keywords[item].join(", ")));
            }
        }
        titles[item] = title;
        texts.push(text);
        keywords[item].sort();
        keywords[item].dedup();
    }
    let generated = descriptions.iter().map(Option::is_some).collect();
    Ok(ItemTexts { titles, texts, keywords, generated })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_blanks_are_not_text() {
        assert!(meaningful("Animation|Comedy"));
        assert!(!meaningful("  "));
        assert!(!meaningful("http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)"));
    }

    #[test]
    fn attribute_values_split_into_keywords() {
        let k: Vec<String> = attribute_keywords("Animation|Children's| Comedy").collect();
        assert_eq!(k, ["animation", "children's", "comedy"]);
        assert_eq!(attribute_keywords("01-Jan-1995").count(), 0);
    }
}
