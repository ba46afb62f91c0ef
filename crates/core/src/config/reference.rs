//! `docs/config.md`, rendered from the config declarations, so that a key's
//! meaning and default are written once (as DataFusion's settings page is
//! generated from its `config_namespace!` declarations).
//!
//! - a key's meaning is its field's doc comment,
//! - its default is the field's value in `PipelineConfig::default()`, as
//!   `--print-config` writes it; a key unset by default reads "none", or
//!   what a `Default: …` paragraph closing its doc comment says (for
//!   defaults that are decided at run time, like "all with `cuda`, else 0"),
//! - a section's intro is its struct's doc comment, and the page's own intro
//!   is `reference_intro.md`.
//!
//! Rust keeps no doc comments at run time, so they are read from the source
//! files, included below. The reader knows the one shape the config structs
//! are written in — `///` lines, attributes, `pub struct Name {`, one
//! `pub field: Type,` per line, `}` — and panics, naming the struct, on a
//! config field it cannot document. `make config-docs` writes the page; the
//! test `docs_config_md_is_current` fails when the committed page differs.

use std::collections::HashMap;

use super::PipelineConfig;

/// The files declaring the config structs, in the order their sections appear.
const SOURCES: [&str; 4] =
    [include_str!("../config.rs"), include_str!("train.rs"), include_str!("generate.rs"), include_str!("storage.rs")];

/// The page's title and the prose before the first table.
const INTRO: &str = include_str!("reference_intro.md");

/// The struct whose fields are the top-level keys.
const ROOT: &str = "PipelineConfig";

/// A doc comment paragraph starting with this gives the default of a key
/// that is unset by default.
const DEFAULT_PREFIX: &str = "Default: ";

/// One row of the reference: a key, its default as shown, its meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: String,
    pub default: String,
    pub meaning: String,
}

/// A struct as declared: its doc comment and its fields in order.
struct Declared {
    doc: Vec<String>,
    fields: Vec<Field>,
}

struct Field {
    name: String,
    ty: String,
    doc: Vec<String>,
}

/// A section of the page: the struct at `prefix` (empty for the top level),
/// its plain keys and its nested sections.
struct Section<'a> {
    prefix: String,
    doc: &'a [String],
    rows: Vec<Row>,
    nested: Vec<Section<'a>>,
}

/// The page `docs/config.md` should hold.
pub fn markdown() -> String {
    let structs = declared_structs();
    let mut page = String::new();
    page.push_str(
        "<!-- Generated from the doc comments and defaults in crates/core/src/config.rs and\n     \
         crates/core/src/config/*.rs by `make config-docs`: edit those, not this file. -->\n\n",
    );
    page.push_str(INTRO.trim_end());
    page.push('\n');
    render(&section(&structs, &defaults(), ROOT, String::new()), 1, &mut page);
    page
}

/// Every key of the reference with its default and meaning, in page order.
pub fn rows() -> Vec<Row> {
    fn flatten(section: Section, out: &mut Vec<Row>) {
        out.extend(section.rows);
        section.nested.into_iter().for_each(|s| flatten(s, out));
    }
    let structs = declared_structs();
    let mut rows = Vec::new();
    flatten(section(&structs, &defaults(), ROOT, String::new()), &mut rows);
    rows
}

/// The defaults as `--print-config` writes them, read back as TOML (so an
/// `f32` such as 1.15 shows as written, not as its widened `f64`).
fn defaults() -> toml::Table {
    toml::from_str(&PipelineConfig::default().to_toml()).expect("the default config's TOML parses back")
}

/// The section of struct `name` at `prefix`: a field whose type is a declared
/// struct and whose default is a table is a nested section, any other a row.
fn section<'a>(
    structs: &'a HashMap<String, Declared>,
    defaults: &toml::Table,
    name: &str,
    prefix: String,
) -> Section<'a> {
    let declared = &structs[name];
    let mut rows = Vec::new();
    let mut nested = Vec::new();
    for field in &declared.fields {
        let key = join(&prefix, &field.name);
        match structs.get_key_value(field.ty.as_str()) {
            Some((ty, _)) if lookup(defaults, &key).is_some_and(toml::Value::is_table) => {
                nested.push(section(structs, defaults, ty, key))
            }
            _ => rows.push(row(name, field, key, defaults)),
        }
    }
    Section { prefix, doc: &declared.doc, rows, nested }
}

/// A section's heading (`## Top level` for the root), intro, table, then its
/// nested sections one heading level down.
fn render(section: &Section, depth: usize, page: &mut String) {
    if section.prefix.is_empty() {
        page.push_str("\n## Top level\n");
    } else {
        page.push_str(&format!("\n{} `[{}]`\n", "#".repeat(depth.min(6)), section.prefix));
        if !section.doc.is_empty() {
            page.push('\n');
            for line in section.doc {
                page.push_str(line.trim_end());
                page.push('\n');
            }
        }
    }
    if !section.rows.is_empty() {
        page.push_str("\n| key | default | meaning |\n|---|---|---|\n");
        for r in &section.rows {
            page.push_str(&format!("| `{}` | {} | {} |\n", r.key, r.default, r.meaning));
        }
    }
    for nested in &section.nested {
        render(nested, depth + 1, page);
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let (first, rest) = match key.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (key, None),
    };
    let value = table.get(first)?;
    match rest {
        None => Some(value),
        Some(rest) => lookup(value.as_table()?, rest),
    }
}

fn row(owner: &str, field: &Field, key: String, defaults: &toml::Table) -> Row {
    let mut meaning = Vec::new();
    let mut stated_default = None;
    for paragraph in paragraphs(&field.doc) {
        match paragraph.strip_prefix(DEFAULT_PREFIX) {
            Some(d) => stated_default = Some(d.trim_end_matches('.').to_string()),
            None => meaning.push(paragraph),
        }
    }
    assert!(
        !meaning.is_empty(),
        "{owner}::{}: a config field needs a doc comment (its meaning in docs/config.md)",
        field.name
    );
    let default = match (lookup(defaults, &key), stated_default) {
        (Some(value), None) => format!("`{}`", literal(value)),
        (Some(value), Some(_)) => panic!(
            "{owner}::{}: a `{DEFAULT_PREFIX}…` paragraph is only for keys unset by default, and this one defaults to {}",
            field.name,
            literal(value)
        ),
        (None, stated) => {
            assert!(
                field.ty.starts_with("Option<"),
                "{owner}::{}: `{key}` is missing from the default config's TOML but is not an Option",
                field.name
            );
            stated.unwrap_or_else(|| "none".to_string())
        }
    };
    Row { key, default, meaning: meaning.join(" ").replace('|', "\\|") }
}

/// A doc comment's paragraphs, each on one line.
fn paragraphs(doc: &[String]) -> Vec<String> {
    doc.split(|line| line.trim().is_empty())
        .filter(|p| !p.is_empty())
        .map(|p| p.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "))
        .collect()
}

/// A default as a TOML literal: `"s"`, `42`, `0.2`, `["id", "fused"]`, `{}`.
fn literal(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(t) if t.is_empty() => "{}".to_string(),
        toml::Value::Table(t) => {
            let pairs: Vec<String> = t.iter().map(|(k, v)| format!("{k} = {}", literal(v))).collect();
            format!("{{ {} }}", pairs.join(", "))
        }
        toml::Value::Array(a) => format!("[{}]", a.iter().map(literal).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// The structs declared in [`SOURCES`], by name.
fn declared_structs() -> HashMap<String, Declared> {
    let mut structs = HashMap::new();
    for source in SOURCES {
        parse_structs(source, &mut structs);
    }
    structs
}

/// Reads the `pub struct Name { … }` declarations of one source file with
/// their doc comments and their fields' (one `name: Type,` a line).
fn parse_structs(source: &str, out: &mut HashMap<String, Declared>) {
    let mut doc: Vec<String> = Vec::new();
    let mut current: Option<(String, Declared)> = None;
    for line in source.lines() {
        let trimmed = line.trim();
        if let Some(text) = trimmed.strip_prefix("///") {
            doc.push(text.strip_prefix(' ').unwrap_or(text).to_string());
            continue;
        }
        if trimmed.starts_with("#[") {
            continue;
        }
        let taken = std::mem::take(&mut doc);
        if current.is_some() {
            if line == "}" {
                let (name, declared) = current.take().expect("inside a struct");
                out.insert(name, declared);
            } else if let Some((name, ty)) = trimmed.strip_prefix("pub ").unwrap_or(trimmed).split_once(": ") {
                let (_, declared) = current.as_mut().expect("inside a struct");
                let ty = ty.trim_end_matches(',').trim().to_string();
                declared.fields.push(Field { name: name.trim().to_string(), ty, doc: taken });
            }
        } else if let Some(rest) = line.strip_prefix("pub struct ")
            && let Some(name) = rest.strip_suffix(" {")
        {
            current = Some((name.trim().to_string(), Declared { doc: taken, fields: Vec::new() }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docs_fields_and_stated_defaults() {
        let mut structs = HashMap::new();
        parse_structs(
            "/// A section.\n///\n/// More.\n#[derive(Debug)]\npub struct S {\n    /// One\n    /// line.\n    pub a: u32,\n    \
             /// Unset here.\n    ///\n    /// Default: decided later.\n    pub b: Option<String>,\n}\n",
            &mut structs,
        );
        let s = &structs["S"];
        assert_eq!(s.doc, ["A section.", "", "More."]);
        assert_eq!(
            s.fields.iter().map(|f| (&*f.name, &*f.ty)).collect::<Vec<_>>(),
            [("a", "u32"), ("b", "Option<String>")]
        );
        let defaults: toml::Table = toml::from_str("a = 3").unwrap();
        let a = row("S", &s.fields[0], "a".into(), &defaults);
        assert_eq!((a.default.as_str(), a.meaning.as_str()), ("`3`", "One line."));
        let b = row("S", &s.fields[1], "b".into(), &defaults);
        assert_eq!((b.default.as_str(), b.meaning.as_str()), ("decided later", "Unset here."));
    }
}
