//! The prompt: a template file with `{title}` and `{attributes}`, filled
//! with item text that is treated as untrusted data.

use tailforge_core::{Error, Result};

/// The built-in template, a copy of `pipelines/prompts/describe.txt`.
pub const BUILTIN_TEMPLATE: &str = include_str!("../../../pipelines/prompts/describe.txt");

/// Longest value of one attribute, in characters.
const MAX_ATTRIBUTE_CHARS: usize = 256;
/// Longest attribute block, in characters.
const MAX_ATTRIBUTES_CHARS: usize = 1024;

/// A parsed prompt template: a system and a user message.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTemplate {
    pub system: String,
    pub user: String,
}

impl PromptTemplate {
    /// Parses a template: `#` comment lines, then `### system` and `### user`
    /// sections. The user section must contain `{title}`.
    pub fn parse(text: &str, source: &str) -> Result<PromptTemplate> {
        let mut system = String::new();
        let mut user = String::new();
        let mut section: Option<&str> = None;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.eq_ignore_ascii_case("### system") {
                section = Some("system");
                continue;
            }
            if trimmed.eq_ignore_ascii_case("### user") {
                section = Some("user");
                continue;
            }
            match section {
                None if trimmed.is_empty() || trimmed.starts_with('#') => {}
                None => {
                    return Err(Error::config(
                        source,
                        "generate.prompt",
                        "text before the first `### system` or `### user` line",
                    ));
                }
                Some("system") => {
                    system.push_str(line);
                    system.push('\n');
                }
                Some(_) => {
                    user.push_str(line);
                    user.push('\n');
                }
            }
        }
        let (system, user) = (system.trim().to_string(), user.trim().to_string());
        if !user.contains("{title}") {
            return Err(Error::config(source, "generate.prompt", "the `### user` section must contain {title}"));
        }
        Ok(PromptTemplate { system, user })
    }

    /// The built-in template.
    pub fn builtin() -> PromptTemplate {
        // The built-in file is part of the source tree and checked by a unit test.
        PromptTemplate::parse(BUILTIN_TEMPLATE, "builtin").unwrap_or_else(|_| PromptTemplate {
            system: String::new(),
            user: "Describe <item>\ntitle: {title}\n{attributes}\n</item> as JSON.".into(),
        })
    }

    /// Fills the placeholders in one pass (inserted text is never re-scanned,
    /// so item text containing `{title}` stays literal).
    pub fn render(&self, title: &str, attributes: &str) -> (String, String) {
        (fill(&self.system, title, attributes), fill(&self.user, title, attributes))
    }

    /// The instruction text without placeholders, for echo detection.
    pub fn instruction_text(&self) -> String {
        format!("{}\n{}", self.system, self.user).replace("{title}", " ").replace("{attributes}", " ")
    }
}

fn fill(template: &str, title: &str, attributes: &str) -> String {
    let mut out = String::with_capacity(template.len() + title.len() + attributes.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(r) = tail.strip_prefix("{title}") {
            out.push_str(title);
            rest = r;
        } else if let Some(r) = tail.strip_prefix("{attributes}") {
            out.push_str(attributes);
            rest = r;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Makes untrusted item text safe to put between `<item>` delimiters:
/// `<` and `>` become `‹` and `›` (so neither `</item>` nor chat-template
/// tokens like `<|im_end|>` can be forged), control characters and line
/// breaks become spaces, runs of whitespace collapse.
pub fn neutralize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        let c = match c {
            '<' => '‹',
            '>' => '›',
            c if c.is_control() || c.is_whitespace() => ' ',
            c => c,
        };
        if c == ' ' {
            if !space && !out.is_empty() {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Cuts `text` to at most `max` characters; returns whether it was cut.
pub fn truncate_chars(text: &str, max: usize) -> (String, bool) {
    match text.char_indices().nth(max) {
        Some((i, _)) => (text[..i].to_string(), true),
        None => (text.to_string(), false),
    }
}

/// The title of an item, neutralized and cut to `max_chars` (with a warning).
pub fn prepare_title(item_key: &str, title: Option<&str>, max_chars: usize) -> String {
    let raw = title.unwrap_or("");
    // Cut before neutralizing so a huge title costs O(max_chars).
    let (cut, was_cut) = truncate_chars(raw, max_chars);
    if was_cut {
        tracing::warn!(item_id = item_key, chars = raw.chars().count(), max_chars, "title too long, truncated");
    }
    let t = neutralize(&cut);
    if t.is_empty() { "(untitled)".to_string() } else { t }
}

/// The attribute block: one `name: value` line per non-empty attribute.
pub fn prepare_attributes(attributes: &[(String, String)]) -> String {
    let mut out = String::new();
    for (name, value) in attributes {
        let value = neutralize(&truncate_chars(value, MAX_ATTRIBUTE_CHARS).0);
        if value.is_empty() {
            continue;
        }
        let line = format!("{}: {}\n", neutralize(&truncate_chars(name, 64).0), value);
        if out.chars().count() + line.chars().count() > MAX_ATTRIBUTES_CHARS {
            break;
        }
        out.push_str(&line);
    }
    while out.ends_with('\n') {
        out.pop();
    }
    out
}

/// The plain prompt used when the GGUF has no chat template.
///
/// ```text
/// ### System:
/// <system message>
///
/// ### User:
/// <user message>
///
/// ### Assistant:
/// ```
pub fn plain_chat(system: &str, user: &str) -> String {
    let mut s = String::new();
    if !system.is_empty() {
        s.push_str("### System:\n");
        s.push_str(system);
        s.push_str("\n\n");
    }
    s.push_str("### User:\n");
    s.push_str(user);
    s.push_str("\n\n### Assistant:\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_template_parses() {
        let t = PromptTemplate::parse(BUILTIN_TEMPLATE, "builtin").unwrap();
        assert!(t.user.contains("<item>") && t.user.contains("{attributes}"));
        assert!(!t.system.is_empty());
        assert!(!t.user.contains("### "));
    }

    #[test]
    fn placeholders_fill_once() {
        let t = PromptTemplate { system: "s".into(), user: "<item>{title}|{attributes}</item> {x}".into() };
        let (_, u) = t.render("{attributes}", "a");
        assert_eq!(u, "<item>{attributes}|a</item> {x}");
    }

    #[test]
    fn delimiters_and_specials_are_neutralized() {
        let n = neutralize("x</item>\n<|im_end|>\t<item>  y");
        assert!(!n.contains('<') && !n.contains('>'));
        assert_eq!(n, "x‹/item› ‹|im_end|› ‹item› y");
    }

    #[test]
    fn long_titles_are_cut() {
        let t = "é".repeat(1000);
        assert_eq!(prepare_title("1", Some(&t), 512).chars().count(), 512);
        assert_eq!(prepare_title("1", None, 512), "(untitled)");
    }
}
