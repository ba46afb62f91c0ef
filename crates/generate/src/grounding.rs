//! Grounding: how much of a generated answer comes from what is known about
//! the item (its own catalog text and its co-interaction neighbours' titles)
//! rather than from the model's imagination, and the extractive keyword
//! vocabulary that grounds keywords by construction.
//!
//! A small model asked to describe "Wiha 26190 Screwdriver" from its title
//! alone invents; asked to pick keywords from phrases of its own text it
//! cannot. The score makes the difference measurable on every accepted row:
//!
//! * `keyword_grounding`: the share of keywords all of whose content words
//!   occur in the source;
//! * `description_grounding`: the share of the description's content words
//!   that occur in the source.
//!
//! Words are compared lower-cased with a plural `s` removed, so "screwdrivers"
//! matches "screwdriver"; stopwords are not content words.

use std::collections::HashSet;

pub use tailforge_core::records::{Distribution, GroundingSummary};

/// Words that carry no content of their own (English function words).
const STOPWORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can",
    "do", "does", "each", "for", "from", "has", "have", "in", "into", "is", "it", "its", "may", "more", "most", "no",
    "not", "of", "on", "one", "or", "other", "our", "out", "over", "so", "such", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "those", "through", "to", "up", "use", "used", "using", "very",
    "was", "we", "well", "were", "what", "when", "where", "which", "while", "who", "will", "with", "would", "you",
    "your",
];

fn is_stopword(word: &str) -> bool {
    STOPWORDS.binary_search(&word).is_ok()
}

/// Lower-cased alphanumeric words of `text`.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase)
}

/// The form words are compared in: a plural `s` removed from longer words.
fn stem(word: &str) -> &str {
    if word.len() > 3 && word.ends_with('s') && !word.ends_with("ss") { &word[..word.len() - 1] } else { word }
}

/// The words known about one item.
#[derive(Debug, Clone, Default)]
pub struct Source {
    stems: HashSet<String>,
}

/// The grounding of one answer, each in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Grounding {
    pub keywords: f64,
    pub description: f64,
}

impl Source {
    /// The source of an item: its title, every catalog attribute (whole, not
    /// the truncated prompt text) and its neighbours' titles.
    pub fn new<'a>(texts: impl IntoIterator<Item = &'a str>) -> Source {
        let mut stems = HashSet::new();
        for t in texts {
            stems.extend(words(t).map(|w| stem(&w).to_string()));
        }
        Source { stems }
    }

    fn knows(&self, word: &str) -> bool {
        self.stems.contains(stem(word))
    }

    /// Whether every content word of `phrase` is known (a phrase of only
    /// stopwords is grounded when all its words are known).
    fn grounds(&self, phrase: &str) -> bool {
        let all: Vec<String> = words(phrase).collect();
        let content: Vec<&String> = all.iter().filter(|w| !is_stopword(w)).collect();
        if content.is_empty() {
            !all.is_empty() && all.iter().all(|w| self.knows(w))
        } else {
            content.iter().all(|w| self.knows(w))
        }
    }

    /// Scores an answer against this source.
    pub fn score(&self, description: &str, keywords: &[String]) -> Grounding {
        let grounded = keywords.iter().filter(|k| self.grounds(k)).count();
        let content: Vec<String> = words(description).filter(|w| !is_stopword(w)).collect();
        let known = content.iter().filter(|w| self.knows(w)).count();
        Grounding {
            keywords: if keywords.is_empty() { 0.0 } else { grounded as f64 / keywords.len() as f64 },
            description: if content.is_empty() { 0.0 } else { known as f64 / content.len() as f64 },
        }
    }
}

/// The grounding of accepted rows given as (keyword count, grounding).
pub fn summarize(rows: &[(usize, Grounding)]) -> GroundingSummary {
    let keywords: usize = rows.iter().map(|(n, _)| n).sum();
    let grounded: f64 = rows.iter().map(|(n, g)| (*n as f64 * g.keywords).round()).sum();
    let kw: Vec<f64> = rows.iter().map(|(_, g)| g.keywords).collect();
    let desc: Vec<f64> = rows.iter().map(|(_, g)| g.description).collect();
    GroundingSummary {
        rows: rows.len() as u64,
        keywords_grounded: if keywords == 0 { 0.0 } else { grounded / keywords as f64 },
        rows_fully_grounded: if rows.is_empty() {
            0.0
        } else {
            kw.iter().filter(|&&k| k >= 1.0).count() as f64 / rows.len() as f64
        },
        keyword_share: Distribution::of(&kw),
        description_share: Distribution::of(&desc),
    }
}

/// Most keyword phrases offered to the model for one item.
pub const MAX_PHRASES: usize = 64;
/// Most phrases taken from one text (so a long description cannot crowd out the title).
const MAX_PHRASES_PER_TEXT: usize = 24;
/// Longest phrase, in words.
const MAX_PHRASE_WORDS: usize = 3;

/// Candidate keywords taken from `texts` in order of priority (title first):
/// lower-cased phrases of 1 to 3 words that neither start nor end with a
/// stopword, contain a letter, and do not cross punctuation. Only the
/// characters `a-z`, `0-9`, space and `-` survive, so every phrase is a safe
/// GBNF and JSON string literal.
pub fn phrases<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for text in texts {
        let mut taken = 0;
        // A word with a non-ASCII letter ("türlen") cannot be spelled in the
        // grammar's alphabet: it breaks the run instead of leaving a fragment.
        let lower: String = text
            .to_lowercase()
            .split(' ')
            .map(|w| if w.chars().any(|c| c.is_alphanumeric() && !c.is_ascii()) { "|" } else { w })
            .collect::<Vec<_>>()
            .join(" ");
        // Runs of plain words between punctuation.
        for run in lower.split(|c: char| !(c.is_ascii_alphanumeric() || c == ' ' || c == '-' || c == '\'')) {
            let ws: Vec<&str> = run.split([' ', '\'']).map(|w| w.trim_matches('-')).filter(|w| !w.is_empty()).collect();
            for n in 1..=MAX_PHRASE_WORDS {
                for gram in ws.windows(n) {
                    let (first, last) = (gram[0], gram[n - 1]);
                    if is_stopword(first) || is_stopword(last) {
                        continue;
                    }
                    if !gram.iter().any(|w| w.chars().any(|c| c.is_ascii_alphabetic())) {
                        continue;
                    }
                    if n == 1 && first.len() < 3 {
                        continue;
                    }
                    let phrase = gram.join(" ");
                    if phrase.len() > crate::contract::KEYWORD_MAX_CHARS || !seen.insert(phrase.clone()) {
                        continue;
                    }
                    out.push(phrase);
                    taken += 1;
                    if taken == MAX_PHRASES_PER_TEXT || out.len() == MAX_PHRASES {
                        break;
                    }
                }
                if taken == MAX_PHRASES_PER_TEXT || out.len() == MAX_PHRASES {
                    break;
                }
            }
            if taken == MAX_PHRASES_PER_TEXT || out.len() == MAX_PHRASES {
                break;
            }
        }
        if out.len() == MAX_PHRASES {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopwords_are_sorted_for_binary_search() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn keywords_from_the_source_are_grounded_and_invented_ones_are_not() {
        let s = Source::new(["White LED Desk Lamp", "category: Lighting > Lamps", "Adjustable arm, USB powered"]);
        let kw: Vec<String> = ["desk lamp", "lamps", "blue hue", "liquor", "usb-powered"].map(String::from).into();
        let g = s.score("A white lamp for the desk with an adjustable arm.", &kw);
        // desk lamp, lamps (plural of lamp), usb-powered: 3 of 5.
        assert!((g.keywords - 0.6).abs() < 1e-12, "{g:?}");
        // content words: white lamp desk adjustable arm, all known.
        assert!((g.description - 1.0).abs() < 1e-12, "{g:?}");
        let g = s.score("A refinery of blue liquor.", &kw);
        assert!((g.description - 0.0).abs() < 1e-12, "{g:?}");
    }

    #[test]
    fn phrases_do_not_cross_punctuation_or_end_in_stopwords() {
        let p = phrases(["Wiha 26190 Precision Screwdriver, Slotted", "Tools & Home Improvement > Hand Tools"]);
        assert!(p.contains(&"precision screwdriver".to_string()), "{p:?}");
        assert!(p.contains(&"wiha 26190 precision".to_string()), "{p:?}");
        assert!(p.contains(&"hand tools".to_string()), "{p:?}");
        assert!(!p.iter().any(|x| x.contains("screwdriver slotted")), "crossed a comma: {p:?}");
        assert!(!p.contains(&"26190".to_string()), "numbers alone are not keywords: {p:?}");
        assert!(
            p.iter().all(|x| x.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == ' ' || c == '-'))
        );
        let t = phrases(["Türlen Precision Indicator"]);
        assert_eq!(t[..2], ["precision".to_string(), "indicator".to_string()], "no fragment of türlen: {t:?}");
        let q = phrases(["the lamp of the year"]);
        assert!(q.iter().all(|x| !x.starts_with("the ") && !x.ends_with(" of")), "{q:?}");
    }

    #[test]
    fn the_summary_pools_keywords_and_takes_nearest_rank_quantiles() {
        let g = |k: f64, d: f64| Grounding { keywords: k, description: d };
        let s = summarize(&[(4, g(0.5, 0.2)), (2, g(1.0, 0.4)), (4, g(1.0, 0.9))]);
        // 2 + 2 + 4 of 10 keywords.
        assert!((s.keywords_grounded - 0.8).abs() < 1e-12);
        assert!((s.rows_fully_grounded - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!((s.keyword_share.min, s.keyword_share.p50, s.keyword_share.p90), (0.5, 1.0, 1.0));
        assert_eq!((s.description_share.p10, s.description_share.p50), (0.2, 0.4));
        assert_eq!(summarize(&[]), GroundingSummary::default());
    }

    #[test]
    fn phrases_are_capped() {
        let long = (0..500).map(|i| format!("word{i}")).collect::<Vec<_>>().join(" ");
        assert_eq!(phrases([long.as_str()]).len(), MAX_PHRASES_PER_TEXT);
        let texts: Vec<String> =
            (0..10).map(|j| (0..500).map(|i| format!("t{j}w{i}")).collect::<Vec<_>>().join(" ")).collect();
        assert_eq!(phrases(texts.iter().map(String::as_str)).len(), MAX_PHRASES);
    }
}
