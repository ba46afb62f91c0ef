//! `tailforge demo-data`: the deterministic synthetic shop, tailforge's
//! embedded default dataset (in the spirit of TPC-H's `dbgen`).
//!
//! # Output
//!
//! ```text
//! <out>/items/part-00000.parquet    the catalog: item_id 1..=items and text attributes
//! <out>/events/part-00000.parquet   interactions, a new file every `events_per_file` rows,
//! <out>/events/part-00001.parquet   sorted by user, then time
//! …
//! <out>/demo.json                   the DemoSummary, written last (a completion marker)
//! ```
//!
//! # The model of the shop, and why
//!
//! The dataset exists to exercise a long-tail recommender, so it is built to
//! have the properties that make long-tail recommendation both hard and
//! possible:
//!
//! * **A Zipf popularity curve with a known slope.** A random permutation
//!   gives every item a popularity rank `r`, and the item's weight is
//!   `1 / r^s` (`s` = `zipf_exponent`). Every event picks its item with
//!   probability exactly proportional to that weight (see below), so the
//!   rank/frequency plot of the events is a straight line of slope ≈ `-s` on
//!   log-log axes, and the head/tail split of the analysis is predictable.
//! * **Text that carries signal into the tail.** Items are products of about a
//!   dozen categories ("running shoes", "desk lamp", …), each with a few
//!   brands, plus a colour, a material and a price band. Attributes are drawn
//!   independently of the popularity rank, so a tail item shares its
//!   category, brand and material with head items: a content model can learn
//!   from the head what a tail item is like. Titles are built from the
//!   attributes ("Northpeak Teal Merino Running Shoes").
//! * **Users with tastes.** Each user picks 2–3 favourite categories, drawn
//!   with replacement in proportion to the global category distribution
//!   (a category's weight is the sum of its items' weights), and draws a
//!   session's category from a mixture: with probability 0.3 from the global
//!   distribution, otherwise uniformly among the favourites. Averaged over
//!   users the mixture *is* the global distribution, so tastes vary per user
//!   while the overall item frequency stays ∝ `1 / r^s`.
//! * **A preferred product line per category: the signal text carries into
//!   the tail.** A line is a brand and a material ("Northpeak merino"), a
//!   few items per category. Each user prefers one line in every category,
//!   drawn in proportion to the line's share of the category's weight. An
//!   item is drawn, with probability 0.7, among the user's preferred line of
//!   its category (by Zipf weight), else among the whole category. Because
//!   the preferred line is drawn by its share, the mixture again leaves
//!   every item's overall frequency unchanged (for the line component,
//!   P(item) = Σ_l P(prefer l)·[item ∈ l]·w_item/W_l = W_l/W_cat ·
//!   w_item/W_l = w_item/W_cat). What it adds is structure a content model
//!   can use and an ID model cannot: a user's history shows their lines,
//!   and a tail item of that line, seen a handful of times in training,
//!   shares its brand and material words with the head items the user
//!   chose. The test `catalog_text_finds_held_out_tail_targets` checks it as
//!   a property of the data (figures in the test).
//! * **Category-coherent sessions.** A user's events come in sessions of about
//!   seven events. Within a session the next item stays in the previous item's
//!   category with probability 0.8, else a new category is drawn from the
//!   user's tastes; within a category, items are drawn by their Zipf weight.
//!   Since the user's taste distribution is stationary for this chain, the
//!   marginal of every single event is still the user's taste distribution.
//! * **A purchase funnel.** After a view, the same item is put in the cart with
//!   probability 0.12; after a cart, it is bought with probability 0.35.
//!   Repeating an item leaves the per-event item marginal unchanged, and gives
//!   roughly 88 % views, 9 % carts and 3 % purchases (weights 1, 2 and 3).
//! * **Skewed activity.** Users' event counts follow a log-normal shape
//!   (σ = 1): many light users, a few heavy ones; every user has at least one
//!   event and, for realistic sizes, the large majority has three or more
//!   (what a leave-one-out evaluation needs). Counts are apportioned so that
//!   they sum to exactly `events`.
//! * **Plausible time.** Each user starts at a random moment in the first 90
//!   days of 2024 (Unix seconds from 2024-01-01T00:00:00Z). Events within a
//!   session are seconds to minutes apart (always under 25 minutes); sessions
//!   are at least 30 minutes plus hours to days apart, so the usual
//!   30-minute sessionization rule recovers them. Timestamps strictly increase
//!   within a user. Only users with millions of events have their clock
//!   compressed (to keep their history within ten years), so timestamps stay
//!   well before 2100 for any user with fewer than about 10⁹ events.
//!
//! # Determinism and scale
//!
//! The same parameters give byte-identical files. All randomness comes from
//! `SplitMix64` streams derived from `(seed, purpose, index)`: one stream per
//! item for its attributes, one for the popularity permutation, and two per
//! user (its activity level and its behaviour). Users are therefore generated
//! independently, in parallel with rayon, and written in user order; the
//! result does not depend on the number of threads.
//!
//! Events are generated in chunks of about a million, each built into one
//! Arrow batch and streamed through [`ParquetSink`] while the next chunk is
//! being generated, so memory stays bounded (a few chunks plus the Parquet
//! row group being encoded) whatever the number of events. The catalog is
//! held in memory (about 25 bytes an item), hence the cap on `--items`.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tailforge_core::parquet_io::ParquetSink;
use tailforge_core::{Error, Location, Result};
use tracing::{debug, info};

/// Parameters of `tailforge demo-data`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoParams {
    /// Number of users (`--users`); user ids are `1..=users`.
    pub users: u64,
    /// Number of catalog items (`--items`); item ids are `1..=items`.
    pub items: u64,
    /// Exact number of events (`--events`), at least one per user.
    pub events: u64,
    /// Seed of every random draw (`--seed`).
    pub seed: u64,
    /// Exponent `s` of the Zipf popularity curve (`--zipf`), in (0, 5].
    pub zipf_exponent: f64,
    /// Rows per events file (`--events-per-file`).
    pub events_per_file: u64,
}

impl Default for DemoParams {
    fn default() -> Self {
        DemoParams {
            users: 5_000,
            items: 2_000,
            events: 200_000,
            seed: 42,
            zipf_exponent: 1.0,
            events_per_file: 10_000_000,
        }
    }
}

/// What `demo-data` wrote; also stored as `<out>/demo.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoSummary {
    pub users: u64,
    pub items: u64,
    pub events: u64,
    /// The Parquet files written, relative to the output location:
    /// `items/part-00000.parquet`, then `events/part-00000.parquet`, ….
    pub files: Vec<String>,
    pub seed: u64,
    pub zipf_exponent: f64,
}

/// Largest accepted `--items`: the catalog and its sampling tables are held in memory.
pub const MAX_ITEMS: u64 = 10_000_000;
/// Largest accepted `--events` (keeps the count apportionment's integer arithmetic exact).
pub const MAX_EVENTS: u64 = 1_000_000_000_000;

/// Name of the summary, written last.
const SUMMARY_FILE: &str = "demo.json";
/// Target events per generated chunk (one Arrow batch).
const CHUNK_EVENTS: u64 = 1 << 20;
/// Target events per rayon task within a chunk.
const GROUP_EVENTS: u64 = 1 << 14;
/// Rows per items batch.
const ITEM_BATCH_ROWS: usize = 1 << 16;

impl DemoParams {
    /// Checks the parameters; errors name the command-line flag to fix.
    pub fn validate(&self) -> Result<()> {
        if self.users == 0 {
            return Err(Error::usage("--users must be at least 1"));
        }
        if self.items == 0 {
            return Err(Error::usage("--items must be at least 1"));
        }
        if self.items > MAX_ITEMS {
            return Err(Error::usage(format!(
                "--items {} is too large: at most {MAX_ITEMS} (the catalog is held in memory)",
                self.items
            )));
        }
        if self.events < self.users {
            return Err(Error::usage(format!(
                "--events {} is less than --users {}: every user needs at least one event",
                self.events, self.users
            )));
        }
        if self.events > MAX_EVENTS {
            return Err(Error::usage(format!("--events {} is too large: at most {MAX_EVENTS}", self.events)));
        }
        if !(self.zipf_exponent > 0.0 && self.zipf_exponent <= 5.0) {
            return Err(Error::usage(format!(
                "--zipf {} is out of range: the Zipf exponent must be in (0, 5] (1.0 is typical)",
                self.zipf_exponent
            )));
        }
        if self.events_per_file == 0 {
            return Err(Error::usage("--events-per-file must be at least 1"));
        }
        Ok(())
    }
}

/// Generates the synthetic shop into `out` (see the module documentation).
///
/// Writes the catalog, then the events files, then `demo.json`; a
/// `demo.json` left by an earlier run is removed first, so it only ever
/// describes complete data. Events files of an earlier run that this run did
/// not rewrite (`events/part-NNNNN.parquet` beyond the new last one) are
/// removed too, so a glob over `events/` reads exactly this dataset.
pub async fn generate(params: &DemoParams, out: &Location) -> Result<DemoSummary> {
    params.validate()?;
    let out = out.as_dir();
    let started = Instant::now();
    out.join(SUMMARY_FILE).delete_if_exists().await?;

    let generator = {
        let params = params.clone();
        tokio::task::spawn_blocking(move || Generator::new(&params)).await.map_err(join_error)??
    };
    let generator = Arc::new(generator);

    let items_file = part_name("items", 0);
    let item_rows = write_items(&generator.shop, &out.join(&items_file)).await?;
    if item_rows != params.items {
        return Err(Error::internal(format!("demo-data wrote {item_rows} items, expected {}", params.items)));
    }
    info!(items = item_rows, file = %out.join(&items_file).display(), "demo-data: wrote the catalog");

    let (event_files, event_rows) = write_events(&generator, params.events_per_file, &out).await?;
    if event_rows != params.events {
        return Err(Error::internal(format!("demo-data wrote {event_rows} events, expected {}", params.events)));
    }
    remove_stale_parts(&out, "events", &event_files).await?;

    let mut files = vec![items_file];
    files.extend(event_files);
    let summary = DemoSummary {
        users: params.users,
        items: params.items,
        events: event_rows,
        files,
        seed: params.seed,
        zipf_exponent: params.zipf_exponent,
    };
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|e| Error::internal(format!("cannot serialize the demo-data summary: {e}")))?;
    out.join(SUMMARY_FILE).put(json).await?;
    let secs = started.elapsed().as_secs_f64();
    info!(
        users = summary.users,
        items = summary.items,
        events = summary.events,
        files = summary.files.len(),
        seconds = secs,
        events_per_second = (summary.events as f64 / secs.max(1e-9)).round(),
        "demo-data: done"
    );
    Ok(summary)
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::internal(format!("a demo-data generator task failed: {e}"))
}

fn part_name(dir: &str, index: u64) -> String {
    format!("{dir}/part-{index:05}.parquet")
}

// ---------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------

/// SplitMix64 (Steele, Lea & Flood, 2014), with the constants of Vigna's
/// reference implementation.
///
/// Written here instead of taken from an RNG crate on purpose: a dbgen-style
/// dataset must stay byte-identical across versions, and RNG crates are free
/// to change their algorithms, seeding and sampling routines between releases
/// (`rand`'s `StdRng` explicitly promises no reproducibility across versions).
/// Ten lines of code pin the data forever. SplitMix64 is fast, passes
/// BigCrush, and is seeded by any 64-bit value, which makes per-user streams
/// derived from `(seed, user)` trivial.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform in [0, 1), with 53 random bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n` ≥ 1) by multiply-shift; the bias, below
    /// `n / 2^64`, is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Exponential with mean 1.
    fn exponential(&mut self) -> f64 {
        -(1.0 - self.next_f64()).ln()
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let radius = (2.0 * self.exponential()).sqrt();
        radius * (std::f64::consts::TAU * self.next_f64()).cos()
    }
}

/// SplitMix64's output function, a bijective 64-bit finalizer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a random stream is used for; part of the stream's identity.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// One stream per item: its attributes.
    Item = 1,
    /// One stream: the popularity permutation.
    Ranks = 2,
    /// One stream per user: the activity level deciding its event count.
    Activity = 3,
    /// One stream per user: tastes, sessions, items, times.
    Behaviour = 4,
}

/// The stream for `(seed, purpose, index)`. For a fixed seed and purpose the
/// map from index to starting state is a bijection, so no two users (or
/// items) share a stream.
fn stream(seed: u64, purpose: Purpose, index: u64) -> SplitMix64 {
    let base = mix64(seed ^ mix64(0xD1B5_4A32_D192_ED03 ^ purpose as u64));
    SplitMix64::new(mix64(base ^ index))
}

/// A discrete distribution as cumulative weights, sampled by binary search.
#[derive(Debug)]
struct Cumulative {
    cum: Vec<f64>,
    /// The last index with a positive weight (returned if rounding ever
    /// lands a draw at the very end).
    last_positive: usize,
}

impl Cumulative {
    fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut total = 0.0;
        let mut last_positive = 0;
        let mut cum = Vec::new();
        for (i, w) in weights.into_iter().enumerate() {
            if w > 0.0 {
                total += w;
                last_positive = i;
            }
            cum.push(total);
        }
        Cumulative { cum, last_positive }
    }

    fn total(&self) -> f64 {
        self.cum.last().copied().unwrap_or(0.0)
    }

    /// An index drawn with probability proportional to its weight; never an
    /// index of weight zero (an entry is chosen only where the cumulative
    /// weight steps up). Requires a positive total.
    fn sample(&self, rng: &mut SplitMix64) -> usize {
        let x = rng.next_f64() * self.total();
        let i = self.cum.partition_point(|&c| c <= x);
        if i < self.cum.len() { i } else { self.last_positive }
    }
}

/// Picks an index by small integer weights.
fn pick_weighted(weights: &[u64], rng: &mut SplitMix64) -> usize {
    let total: u64 = weights.iter().sum();
    let mut x = rng.below(total);
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len().saturating_sub(1)
}

// ---------------------------------------------------------------------------
// The catalog
// ---------------------------------------------------------------------------

/// A product category: its name (the `category` column), its relative share
/// of the catalog, and its brands.
struct Category {
    name: &'static str,
    share: u64,
    brands: [&'static str; 4],
}

const CATEGORIES: [Category; 12] = [
    Category { name: "running shoes", share: 14, brands: ["Northpeak", "Stridelab", "Fleetfoot", "Asphalt & Co"] },
    Category { name: "backpack", share: 12, brands: ["Trailhaven", "Packwell", "Summit Supply", "Urbancarry"] },
    Category { name: "desk lamp", share: 8, brands: ["Lumen & Oak", "Brightwork", "Nightowl", "Halcyon"] },
    Category { name: "coffee grinder", share: 6, brands: ["Burrhaus", "Grindstone", "Morning Ritual", "Bean Theory"] },
    Category { name: "headphones", share: 11, brands: ["Sonique", "Quietwave", "Audiofox", "Decibel"] },
    Category { name: "water bottle", share: 7, brands: ["Hydroloop", "Flaskr", "Streamline", "Aquaterra"] },
    Category { name: "yoga mat", share: 6, brands: ["Lotusflow", "Groundwork", "Zenith", "Asana Studio"] },
    Category { name: "rain jacket", share: 9, brands: ["Driftwood", "Stormline", "Kestrel", "Cloudburst"] },
    Category { name: "office chair", share: 7, brands: ["Ergoform", "Sitwell", "Posture Lab", "Linear"] },
    Category { name: "cookware set", share: 8, brands: ["Copperpot", "Hearthstone", "Panhandle", "Ironwood"] },
    Category { name: "wristwatch", share: 7, brands: ["Meridian", "Tickwell", "Chronos & Sons", "Solstice"] },
    Category { name: "board game", share: 5, brands: ["Meeple Works", "Dicetower", "Boardroom", "Gamenight"] },
];

const COLOURS: [&str; 12] = [
    "black",
    "white",
    "grey",
    "navy",
    "teal",
    "olive",
    "burgundy",
    "mustard",
    "coral",
    "sand",
    "forest green",
    "sky blue",
];

const MATERIALS: [&str; 10] = [
    "cotton",
    "merino",
    "leather",
    "canvas",
    "recycled nylon",
    "bamboo",
    "aluminium",
    "walnut",
    "cork",
    "stainless steel",
];

const PRICE_BANDS: [&str; 4] = ["budget", "mid", "premium", "luxury"];
const PRICE_BAND_SHARES: [u64; 4] = [35, 35, 20, 10];

/// One catalog item, as indices into the tables above.
#[derive(Debug, Clone, Copy)]
struct Item {
    category: u8,
    brand: u8,
    colour: u8,
    material: u8,
    price_band: u8,
}

impl Item {
    /// The attributes of item `index` (0-based): its own stream, so item `i`
    /// is the same whatever the catalog size.
    fn draw(seed: u64, index: u64) -> Item {
        let mut rng = stream(seed, Purpose::Item, index);
        let category = pick_weighted(&CATEGORIES.map(|c| c.share), &mut rng);
        Item {
            category: category as u8,
            brand: rng.below(CATEGORIES[category].brands.len() as u64) as u8,
            colour: rng.below(COLOURS.len() as u64) as u8,
            material: rng.below(MATERIALS.len() as u64) as u8,
            price_band: pick_weighted(&PRICE_BAND_SHARES, &mut rng) as u8,
        }
    }

    /// The item's product line within its category: brand × material
    /// ("Northpeak merino"), the unit of a user's preference.
    fn line(&self) -> usize {
        usize::from(self.brand) * MATERIALS.len() + usize::from(self.material)
    }

    fn category(&self) -> &'static str {
        CATEGORIES[usize::from(self.category)].name
    }

    fn brand(&self) -> &'static str {
        CATEGORIES[usize::from(self.category)].brands[usize::from(self.brand)]
    }

    fn colour(&self) -> &'static str {
        COLOURS[usize::from(self.colour)]
    }

    fn material(&self) -> &'static str {
        MATERIALS[usize::from(self.material)]
    }

    fn price_band(&self) -> &'static str {
        PRICE_BANDS[usize::from(self.price_band)]
    }

    /// "Northpeak Teal Merino Running Shoes".
    fn title(&self) -> String {
        format!(
            "{} {} {} {}",
            self.brand(),
            title_case(self.colour()),
            title_case(self.material()),
            title_case(self.category())
        )
    }
}

/// "forest green" → "Forest Green".
fn title_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = true;
    for c in text.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c == ' ';
    }
    out
}

/// The items of one category with their Zipf weights, also split by product line.
#[derive(Debug)]
struct CategoryItems {
    /// 0-based item indices.
    items: Vec<u32>,
    weights: Cumulative,
    /// The same items per product line ([`Item::line`]).
    by_line: Vec<(Vec<u32>, Cumulative)>,
    /// The lines' weights: each the sum of its items' Zipf weights.
    lines: Cumulative,
}

/// The catalog and the popularity model.
struct Shop {
    items: Vec<Item>,
    by_category: Vec<CategoryItems>,
    /// The global category distribution: a category's weight is the sum of
    /// its items' Zipf weights.
    categories: Cumulative,
}

impl Shop {
    fn new(seed: u64, items: u64, zipf_exponent: f64) -> Result<Shop> {
        let n = usize::try_from(items).map_err(|_| Error::usage(format!("--items {items} is too large")))?;
        let catalog: Vec<Item> = (0..items).map(|i| Item::draw(seed, i)).collect();

        // The popularity rank of each item: a Fisher–Yates permutation of 1..=items.
        let mut rank: Vec<u32> = (1..=items).map(|r| r as u32).collect();
        let mut rng = stream(seed, Purpose::Ranks, 0);
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            rank.swap(i, j);
        }

        let mut members: Vec<Vec<u32>> = vec![Vec::new(); CATEGORIES.len()];
        for (i, item) in catalog.iter().enumerate() {
            members[usize::from(item.category)].push(i as u32);
        }
        let weight = |i: u32| f64::from(rank[i as usize]).powf(-zipf_exponent);
        let by_category: Vec<CategoryItems> = members
            .into_iter()
            .enumerate()
            .map(|(category, items)| {
                let weights = Cumulative::new(items.iter().map(|&i| weight(i)));
                let by_line: Vec<(Vec<u32>, Cumulative)> = (0..CATEGORIES[category].brands.len() * MATERIALS.len())
                    .map(|line| {
                        let of_line: Vec<u32> =
                            items.iter().copied().filter(|&i| catalog[i as usize].line() == line).collect();
                        let w = Cumulative::new(of_line.iter().map(|&i| weight(i)));
                        (of_line, w)
                    })
                    .collect();
                let lines = Cumulative::new(by_line.iter().map(|(_, w)| w.total()));
                CategoryItems { items, weights, by_line, lines }
            })
            .collect();
        let categories = Cumulative::new(by_category.iter().map(|c| c.weights.total()));
        // The sampler relies on: a category can be drawn only if it has items.
        if categories.total() <= 0.0 || by_category.iter().any(|c| c.items.is_empty() && c.weights.total() > 0.0) {
            return Err(Error::internal("demo-data: inconsistent category weights"));
        }
        Ok(Shop { items: catalog, by_category, categories })
    }

    fn draw_category(&self, rng: &mut SplitMix64) -> u8 {
        self.categories.sample(rng) as u8
    }

    /// A product line of `category` (which has items), drawn by its share of the category's weight.
    fn draw_line(&self, category: u8, rng: &mut SplitMix64) -> u16 {
        self.by_category[usize::from(category)].lines.sample(rng) as u16
    }

    /// An item of `category` (which has items) for a user with `tastes`:
    /// with probability [`P_PREFERRED_LINE`] one of the user's preferred
    /// product line in that category, else any of the category; by Zipf
    /// weight either way.
    fn draw_item(&self, category: u8, tastes: &Tastes, rng: &mut SplitMix64) -> u32 {
        let c = &self.by_category[usize::from(category)];
        if rng.chance(P_PREFERRED_LINE) {
            // The preferred line was drawn by weight, so it has items.
            let (items, weights) = &c.by_line[usize::from(tastes.lines[usize::from(category)])];
            items[weights.sample(rng)]
        } else {
            c.items[c.weights.sample(rng)]
        }
    }
}

fn items_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::Int64, false),
        text("title"),
        text("category"),
        text("brand"),
        text("colour"),
        text("material"),
        text("price_band"),
    ]))
}

async fn write_items(shop: &Shop, location: &Location) -> Result<u64> {
    let schema = items_schema();
    let mut sink = ParquetSink::create(location, schema.clone())?;
    for (chunk_index, chunk) in shop.items.chunks(ITEM_BATCH_ROWS).enumerate() {
        let first_id = (chunk_index * ITEM_BATCH_ROWS) as i64 + 1;
        let text =
            |f: fn(&Item) -> &'static str| -> ArrayRef { Arc::new(StringArray::from_iter_values(chunk.iter().map(f))) };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values((0..chunk.len() as i64).map(|i| first_id + i))),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(Item::title))),
            text(Item::category),
            text(Item::brand),
            text(Item::colour),
            text(Item::material),
            text(Item::price_band),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| Error::internal(format!("demo-data: cannot build an items batch: {e}")))?;
        sink.write(&batch).await?;
    }
    sink.finish().await
}

// ---------------------------------------------------------------------------
// Users: activity and behaviour
// ---------------------------------------------------------------------------

/// σ of the log-normal activity level.
const ACTIVITY_SIGMA: f64 = 1.0;
/// Fixed-point scale of activity levels (integers, so apportionment is exact).
const ACTIVITY_SCALE: f64 = 4096.0;

/// A user's activity level: a log-normal draw as a positive integer below 2^21.
fn activity(seed: u64, user: u64) -> u64 {
    let z = stream(seed, Purpose::Activity, user).normal().clamp(-6.0, 6.0);
    ((ACTIVITY_SIGMA * z).exp() * ACTIVITY_SCALE).round().max(1.0) as u64
}

/// Splits `events` over users: one each, plus the rest in proportion to the
/// activity levels, by cumulative rounding — user `u` gets
/// `1 + ⌊R·C(u)/S⌋ − ⌊R·C(u−1)/S⌋` where `R` = events − users, `C` is the
/// running sum of activity levels and `S` their total. The differences
/// telescope, so the counts sum to exactly `events`, and they are computed
/// in one streaming pass in user order (no per-user table in memory).
struct Apportion {
    seed: u64,
    users: u64,
    extra: u128,
    total: u128,
}

/// Where the apportionment stands: the next user and the running sums.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    next_user: u64,
    running: u128,
    floor: u128,
}

impl Apportion {
    fn new(seed: u64, users: u64, events: u64) -> Apportion {
        let total: u128 = (1..=users).into_par_iter().map(|u| u128::from(activity(seed, u))).sum();
        Apportion { seed, users, extra: u128::from(events - users), total }
    }

    fn start(&self) -> Cursor {
        Cursor { next_user: 1, running: 0, floor: 0 }
    }

    fn done(&self, cursor: &Cursor) -> bool {
        cursor.next_user > self.users
    }

    /// The next user and its event count; advances the cursor.
    fn next(&self, cursor: &mut Cursor) -> Result<(u64, u64)> {
        let user = cursor.next_user;
        cursor.running += u128::from(activity(self.seed, user));
        let floor = self
            .extra
            .checked_mul(cursor.running)
            .map(|x| x / self.total)
            .ok_or_else(|| Error::internal("demo-data: event count apportionment overflowed"))?;
        let count = u64::try_from(floor - cursor.floor)
            .map_err(|_| Error::internal("demo-data: event count apportionment overflowed"))?;
        cursor.floor = floor;
        cursor.next_user += 1;
        Ok((user, count + 1))
    }
}

/// Probability that a session's category (and every change of category) is
/// drawn from the global distribution rather than the user's favourites.
const P_GLOBAL_TASTE: f64 = 0.3;
/// Probability that an item is drawn among the user's preferred product line of its category.
const P_PREFERRED_LINE: f64 = 0.7;
/// Probability that the next viewed item stays in the previous item's category.
const P_SAME_CATEGORY: f64 = 0.8;
/// Probability that a session ends after an event (mean length 7).
const P_SESSION_END: f64 = 1.0 / 7.0;
/// Probability that a view is followed by carting the same item.
const P_CART: f64 = 0.12;
/// Probability that a cart is followed by buying the same item.
const P_PURCHASE: f64 = 0.35;

/// 2024-01-01T00:00:00Z in Unix seconds: early enough that even the heaviest
/// users' histories end in the past (analyze warns about future events).
const EPOCH_2024: i64 = 1_704_067_200;
const MINUTE: f64 = 60.0;
const HOUR: f64 = 3_600.0;
const DAY: f64 = 86_400.0;
/// Users start within the first 90 days of 2024.
const START_WINDOW: u64 = 90 * 86_400;
/// Mean seconds between events of a session, and the cap.
const WITHIN_SESSION_MEAN: f64 = 45.0;
const WITHIN_SESSION_MAX: f64 = 25.0 * MINUTE;
/// Sessions are at least this far apart (so a 30-minute rule separates them).
const MIN_BREAK: f64 = 30.0 * MINUTE;
/// A user's sessions spread over about half a year…
const HISTORY_SPAN: f64 = 180.0 * DAY;
/// …and no user's history spans more than about ten years.
const TIME_BUDGET: f64 = 3_650.0 * DAY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    View,
    Cart,
    Purchase,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::View => "view",
            EventType::Cart => "cart",
            EventType::Purchase => "purchase",
        }
    }

    fn weight(self) -> f64 {
        match self {
            EventType::View => 1.0,
            EventType::Cart => 2.0,
            EventType::Purchase => 3.0,
        }
    }
}

/// A user's tastes: 2–3 favourite categories, drawn with replacement in
/// proportion to the global category distribution, so that the expected
/// taste over users equals the global distribution; and a preferred product
/// line in every category, drawn in proportion to the line's share of the
/// category's weight, so that the expected line choice over users is the
/// line's share.
struct Tastes {
    favourites: [u8; 3],
    count: u8,
    lines: [u16; CATEGORIES.len()],
}

impl Tastes {
    fn draw(shop: &Shop, rng: &mut SplitMix64) -> Tastes {
        let count = 2 + rng.below(2) as u8;
        let mut favourites = [0; 3];
        for f in favourites.iter_mut().take(usize::from(count)) {
            *f = shop.draw_category(rng);
        }
        let mut lines = [0; CATEGORIES.len()];
        for (category, line) in lines.iter_mut().enumerate() {
            if shop.by_category[category].lines.total() > 0.0 {
                *line = shop.draw_line(category as u8, rng);
            }
        }
        Tastes { favourites, count, lines }
    }

    fn draw_category(&self, shop: &Shop, rng: &mut SplitMix64) -> u8 {
        if rng.chance(P_GLOBAL_TASTE) {
            shop.draw_category(rng)
        } else {
            self.favourites[rng.below(u64::from(self.count)) as usize]
        }
    }
}

/// A user's clock: gaps within and between sessions, in seconds.
struct Pace {
    break_mean: f64,
    /// 1 for everyone but users with millions of events, whose clock is
    /// compressed to keep their history within [`TIME_BUDGET`].
    scale: f64,
}

impl Pace {
    fn new(events: u64) -> Pace {
        let sessions = (events as f64 * P_SESSION_END).max(1.0);
        let break_mean = (HISTORY_SPAN / sessions).clamp(HOUR, 7.0 * DAY);
        let natural = events as f64 * WITHIN_SESSION_MEAN + sessions * (MIN_BREAK + break_mean);
        Pace { break_mean, scale: (TIME_BUDGET / natural).min(1.0) }
    }

    fn seconds(&self, gap: f64) -> i64 {
        ((gap * self.scale).round() as i64).max(1)
    }

    fn within_session(&self, rng: &mut SplitMix64) -> i64 {
        self.seconds((1.0 + rng.exponential() * (WITHIN_SESSION_MEAN - 1.0)).min(WITHIN_SESSION_MAX))
    }

    fn between_sessions(&self, rng: &mut SplitMix64) -> i64 {
        self.seconds(MIN_BREAK + rng.exponential() * self.break_mean)
    }
}

/// Event columns of a run of users, in user then time order.
#[derive(Default)]
struct EventColumns {
    user: Vec<i64>,
    item: Vec<i64>,
    ts: Vec<i64>,
    kind: Vec<EventType>,
}

impl EventColumns {
    fn with_capacity(n: usize) -> Self {
        EventColumns {
            user: Vec::with_capacity(n),
            item: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
        }
    }

    fn len(&self) -> usize {
        self.user.len()
    }

    fn append(&mut self, other: EventColumns) {
        self.user.extend(other.user);
        self.item.extend(other.item);
        self.ts.extend(other.ts);
        self.kind.extend(other.kind);
    }

    fn into_batch(self, schema: SchemaRef) -> Result<RecordBatch> {
        let event_type = StringArray::from_iter_values(self.kind.iter().map(|k| k.name()));
        let weight = Float64Array::from_iter_values(self.kind.iter().map(|k| k.weight()));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.user)),
            Arc::new(Int64Array::from(self.item)),
            Arc::new(Int64Array::from(self.ts)),
            Arc::new(event_type),
            Arc::new(weight),
        ];
        RecordBatch::try_new(schema, columns)
            .map_err(|e| Error::internal(format!("demo-data: cannot build an events batch: {e}")))
    }
}

/// Everything needed to generate any chunk of events.
struct Generator {
    seed: u64,
    shop: Shop,
    apportion: Apportion,
    schema: SchemaRef,
}

/// One generated chunk and where the next one starts.
struct Chunk {
    batch: RecordBatch,
    next: Cursor,
}

impl Generator {
    fn new(params: &DemoParams) -> Result<Generator> {
        let shop = Shop::new(params.seed, params.items, params.zipf_exponent)?;
        let apportion = Apportion::new(params.seed, params.users, params.events);
        Ok(Generator { seed: params.seed, shop, apportion, schema: crate::events_schema() })
    }

    /// The events of the users from `cursor` on, about [`CHUNK_EVENTS`] of
    /// them (whole users), generated in parallel and concatenated in order.
    fn chunk(&self, mut cursor: Cursor) -> Result<Chunk> {
        let mut plan: Vec<(u64, u64)> = Vec::new();
        let mut planned = 0u64;
        while !self.apportion.done(&cursor) && planned < CHUNK_EVENTS {
            let (user, count) = self.apportion.next(&mut cursor)?;
            plan.push((user, count));
            planned += count;
        }

        // Contiguous groups of users of about GROUP_EVENTS events each.
        let mut groups: Vec<&[(u64, u64)]> = Vec::new();
        let (mut start, mut in_group) = (0, 0);
        for (i, &(_, count)) in plan.iter().enumerate() {
            in_group += count;
            if in_group >= GROUP_EVENTS {
                groups.push(&plan[start..=i]);
                (start, in_group) = (i + 1, 0);
            }
        }
        if start < plan.len() {
            groups.push(&plan[start..]);
        }

        let parts: Vec<EventColumns> = groups
            .par_iter()
            .map(|group| {
                let n: u64 = group.iter().map(|&(_, count)| count).sum();
                let mut columns = EventColumns::with_capacity(n as usize);
                for &(user, count) in group.iter() {
                    self.user_events(user, count, &mut columns);
                }
                columns
            })
            .collect();
        let mut columns = EventColumns::with_capacity(planned as usize);
        for part in parts {
            columns.append(part);
        }
        if columns.len() as u64 != planned {
            return Err(Error::internal(format!("demo-data: generated {} events, planned {planned}", columns.len())));
        }
        Ok(Chunk { batch: columns.into_batch(self.schema.clone())?, next: cursor })
    }

    /// Appends the `n` events of `user` (see the module documentation).
    fn user_events(&self, user: u64, n: u64, out: &mut EventColumns) {
        let shop = &self.shop;
        let mut rng = stream(self.seed, Purpose::Behaviour, user);
        let tastes = Tastes::draw(shop, &mut rng);
        let pace = Pace::new(n);
        let user_id = user as i64;
        let mut ts = EPOCH_2024 + rng.below(START_WINDOW) as i64;
        // The previous event within the current session, if any.
        let mut previous: Option<(u32, u8, EventType)> = None;
        for i in 0..n {
            let (item, category, kind) = match previous {
                Some((item, category, EventType::View)) if rng.chance(P_CART) => (item, category, EventType::Cart),
                Some((item, category, EventType::Cart)) if rng.chance(P_PURCHASE) => {
                    (item, category, EventType::Purchase)
                }
                Some((_, category, _)) => {
                    let category =
                        if rng.chance(P_SAME_CATEGORY) { category } else { tastes.draw_category(shop, &mut rng) };
                    (shop.draw_item(category, &tastes, &mut rng), category, EventType::View)
                }
                None => {
                    let category = tastes.draw_category(shop, &mut rng);
                    (shop.draw_item(category, &tastes, &mut rng), category, EventType::View)
                }
            };
            out.user.push(user_id);
            out.item.push(i64::from(item) + 1);
            out.ts.push(ts);
            out.kind.push(kind);
            if i + 1 < n {
                if rng.chance(P_SESSION_END) {
                    ts = ts.saturating_add(pace.between_sessions(&mut rng));
                    previous = None;
                } else {
                    ts = ts.saturating_add(pace.within_session(&mut rng));
                    previous = Some((item, category, kind));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Writing events
// ---------------------------------------------------------------------------

/// The events files being written: rotates to a new file every `per_file` rows.
struct EventFiles<'a> {
    out: &'a Location,
    schema: SchemaRef,
    per_file: u64,
    sink: Option<ParquetSink>,
    in_file: u64,
    written: u64,
    total: u64,
    names: Vec<String>,
    started: Instant,
}

impl EventFiles<'_> {
    async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows() as u64;
        let mut offset = 0;
        while offset < rows {
            let sink = match &mut self.sink {
                Some(sink) => sink,
                None => {
                    let name = part_name("events", self.names.len() as u64);
                    let sink = ParquetSink::create(&self.out.join(&name), self.schema.clone())?;
                    self.names.push(name);
                    self.sink.insert(sink)
                }
            };
            let take = (rows - offset).min(self.per_file - self.in_file);
            sink.write(&batch.slice(offset as usize, take as usize)).await?;
            offset += take;
            self.in_file += take;
            self.written += take;
            if self.in_file == self.per_file {
                self.finish_file().await?;
            }
        }
        Ok(())
    }

    async fn finish_file(&mut self) -> Result<()> {
        if let Some(sink) = self.sink.take() {
            let rows = sink.finish().await?;
            let secs = self.started.elapsed().as_secs_f64();
            info!(
                file = %self.names.last().map(|n| self.out.join(n).display()).unwrap_or_default(),
                rows,
                events_written = self.written,
                events_total = self.total,
                events_per_second = (self.written as f64 / secs.max(1e-9)).round(),
                "demo-data: wrote an events file"
            );
        }
        self.in_file = 0;
        Ok(())
    }
}

/// Generates and writes all events; returns the file names and the rows written.
///
/// Chunk `k + 1` is generated on the blocking pool (with rayon) while chunk
/// `k` is encoded and written, so at most two chunks are in memory.
async fn write_events(generator: &Arc<Generator>, per_file: u64, out: &Location) -> Result<(Vec<String>, u64)> {
    let mut files = EventFiles {
        out,
        schema: generator.schema.clone(),
        per_file,
        sink: None,
        in_file: 0,
        written: 0,
        total: generator.apportion.extra as u64 + generator.apportion.users,
        names: Vec::new(),
        started: Instant::now(),
    };
    let spawn = |cursor: Cursor| {
        let generator = Arc::clone(generator);
        tokio::task::spawn_blocking(move || generator.chunk(cursor))
    };
    let mut pending = Some(spawn(generator.apportion.start()));
    while let Some(task) = pending.take() {
        let chunk = task.await.map_err(join_error)??;
        if !generator.apportion.done(&chunk.next) {
            pending = Some(spawn(chunk.next));
        }
        debug!(rows = chunk.batch.num_rows(), next_user = chunk.next.next_user, "demo-data: generated a chunk");
        files.write(&chunk.batch).await?;
    }
    files.finish_file().await?;
    Ok((files.names, files.written))
}

/// Removes `dir/part-NNNNN.parquet` objects that this run did not write.
async fn remove_stale_parts(out: &Location, dir: &str, written: &[String]) -> Result<()> {
    let listing = out.join(&format!("{dir}/")).list_recursive().await?;
    for meta in listing {
        let Some(file) = meta.location.filename() else { continue };
        let name = format!("{dir}/{file}");
        let is_part = file
            .strip_prefix("part-")
            .and_then(|rest| rest.strip_suffix(".parquet"))
            .is_some_and(|digits| digits.len() >= 5 && digits.bytes().all(|b| b.is_ascii_digit()));
        let directly_below = meta.location.as_ref().ends_with(&name);
        if is_part && directly_below && !written.contains(&name) {
            info!(file = %out.join(&name).display(), "demo-data: removing a stale events file of an earlier run");
            out.join(&name).delete_if_exists().await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};
    use tailforge_core::parquet_io::read_parquet;

    use super::*;

    async fn run(params: &DemoParams) -> (tempfile::TempDir, Location, DemoSummary) {
        let dir = tempfile::tempdir().unwrap();
        let out = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let summary = generate(params, &out).await.unwrap();
        (dir, out, summary)
    }

    /// The batches of every file of `summary` under `prefix`, in file order.
    async fn read(out: &Location, summary: &DemoSummary, prefix: &str) -> Vec<Vec<RecordBatch>> {
        let mut files = Vec::new();
        for name in summary.files.iter().filter(|f| f.starts_with(prefix)) {
            files.push(read_parquet(&out.join(name)).await.unwrap());
        }
        files
    }

    fn i64s(batch: &RecordBatch, column: &str) -> Vec<i64> {
        batch.column_by_name(column).unwrap().as_primitive::<Int64Type>().values().to_vec()
    }

    fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
        let array = batch.column_by_name(column).unwrap().as_string::<i32>();
        assert_eq!(array.null_count(), 0);
        array.iter().map(|s| s.unwrap().to_string()).collect()
    }

    /// (user, item, ts, event_type, weight) of all events, in file order.
    async fn events(out: &Location, summary: &DemoSummary) -> Vec<(i64, i64, i64, String, f64)> {
        let mut rows = Vec::new();
        for batch in read(out, summary, "events/").await.into_iter().flatten() {
            let weights = batch.column_by_name("weight").unwrap().as_primitive::<Float64Type>().values().to_vec();
            let (users, items, ts, types) =
                (i64s(&batch, "user_id"), i64s(&batch, "item_id"), i64s(&batch, "ts"), strings(&batch, "event_type"));
            for i in 0..batch.num_rows() {
                rows.push((users[i], items[i], ts[i], types[i].clone(), weights[i]));
            }
        }
        rows
    }

    #[test]
    fn splitmix64_matches_the_reference() {
        // First outputs of Vigna's splitmix64.c seeded with 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn apportionment_is_exact_and_gives_everyone_an_event() {
        for (users, events) in [(1, 1), (1, 1_000), (7, 7), (1_000, 1_001), (5_000, 200_000), (12_345, 1_000_003)] {
            let a = Apportion::new(3, users, events);
            let mut cursor = a.start();
            let (mut sum, mut seen) = (0, 0);
            while !a.done(&cursor) {
                let (user, count) = a.next(&mut cursor).unwrap();
                seen += 1;
                assert_eq!(user, seen);
                assert!(count >= 1);
                sum += count;
            }
            assert_eq!((seen, sum), (users, events));
        }
    }

    #[tokio::test]
    async fn same_seed_same_bytes_other_seed_other_rows() {
        let params =
            DemoParams { users: 300, items: 200, events: 20_000, events_per_file: 7_000, ..Default::default() };
        let (dir_a, out_a, a) = run(&params).await;
        let (dir_b, out_b, b) = run(&params).await;
        assert_eq!(a.files, b.files);
        assert_eq!(read(&out_a, &a, "").await, read(&out_b, &b, "").await);
        for name in a.files.iter().chain([&SUMMARY_FILE.to_string()]) {
            let (bytes_a, bytes_b) = (std::fs::read(dir_a.path().join(name)), std::fs::read(dir_b.path().join(name)));
            assert_eq!(bytes_a.unwrap(), bytes_b.unwrap(), "{name} differs between two runs");
        }

        let (_dir_c, out_c, c) = run(&DemoParams { seed: 43, ..params }).await;
        assert_ne!(events(&out_a, &a).await, events(&out_c, &c).await);
        assert_ne!(read(&out_a, &a, "items/").await, read(&out_c, &c, "items/").await);
    }

    #[tokio::test]
    async fn counts_are_exact_and_files_rotate() {
        let params =
            DemoParams { users: 1_000, items: 500, events: 50_000, events_per_file: 12_000, ..Default::default() };
        let (dir, out, summary) = run(&params).await;
        let names: Vec<&str> = summary.files.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "items/part-00000.parquet",
                "events/part-00000.parquet",
                "events/part-00001.parquet",
                "events/part-00002.parquet",
                "events/part-00003.parquet",
                "events/part-00004.parquet",
            ]
        );
        let per_file: Vec<usize> =
            read(&out, &summary, "events/").await.iter().map(|f| f.iter().map(|b| b.num_rows()).sum()).collect();
        assert_eq!(per_file, [12_000, 12_000, 12_000, 12_000, 2_000]);
        assert_eq!(summary.events, 50_000);

        let items: Vec<RecordBatch> = read(&out, &summary, "items/").await.concat();
        let ids: Vec<i64> = items.iter().flat_map(|b| i64s(b, "item_id")).collect();
        assert_eq!(ids, (1..=500).collect::<Vec<i64>>());

        let rows = events(&out, &summary).await;
        assert_eq!(rows.len(), 50_000);
        let mut per_user: HashMap<i64, u64> = HashMap::new();
        for (user, ..) in &rows {
            *per_user.entry(*user).or_default() += 1;
        }
        assert_eq!(per_user.len(), 1_000);
        assert!(per_user.keys().all(|u| (1..=1_000).contains(u)));
        let three_or_more = per_user.values().filter(|&&n| n >= 3).count();
        assert!(three_or_more >= 900, "only {three_or_more} of 1000 users have ≥ 3 events");
        assert!(rows.windows(2).all(|w| w[0].0 <= w[1].0), "events are sorted by user");

        let mut by_type: HashMap<&str, usize> = HashMap::new();
        for (_, _, _, kind, weight) in &rows {
            let expected = match kind.as_str() {
                "view" => 1.0,
                "cart" => 2.0,
                "purchase" => 3.0,
                other => panic!("unexpected event type {other}"),
            };
            assert_eq!(*weight, expected);
            *by_type.entry(kind).or_default() += 1;
        }
        let (views, carts, purchases) = (by_type["view"], by_type["cart"], by_type["purchase"]);
        assert!(views > 10 * purchases && carts > purchases && purchases > 0, "{by_type:?}");

        let written: DemoSummary =
            serde_json::from_slice(&std::fs::read(dir.path().join(SUMMARY_FILE)).unwrap()).unwrap();
        assert_eq!((written.users, written.items, written.events, written.files), (1_000, 500, 50_000, summary.files));

        // Rewriting into the same place with fewer files leaves no stale parts.
        let again = generate(&DemoParams { events_per_file: 10_000_000, ..params }, &out).await.unwrap();
        assert_eq!(again.files, ["items/part-00000.parquet", "events/part-00000.parquet"]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("events"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["part-00000.parquet"]);
    }

    /// Least-squares slope of ln(count) against ln(rank) over ranks 1..=200.
    fn head_slope(rows: &[(i64, i64, i64, String, f64)]) -> f64 {
        let mut counts: HashMap<i64, f64> = HashMap::new();
        for (_, item, ..) in rows {
            *counts.entry(*item).or_default() += 1.0;
        }
        let mut counts: Vec<f64> = counts.into_values().collect();
        counts.sort_by(|a, b| b.total_cmp(a));
        let points: Vec<(f64, f64)> =
            counts.iter().take(200).enumerate().map(|(i, c)| (((i + 1) as f64).ln(), c.ln())).collect();
        let n = points.len() as f64;
        let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
        let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
        sxy / sxx
    }

    #[tokio::test]
    async fn popularity_follows_the_zipf_exponent() {
        for s in [1.0, 0.8] {
            let params = DemoParams { items: 2_000, events: 300_000, zipf_exponent: s, ..Default::default() };
            let (_dir, out, summary) = run(&params).await;
            let slope = head_slope(&events(&out, &summary).await);
            assert!((slope + s).abs() <= 0.15, "zipf {s}: head slope {slope}");
        }
    }

    #[tokio::test]
    async fn times_items_and_titles_are_consistent() {
        let params = DemoParams { users: 2_000, items: 800, events: 60_000, ..Default::default() };
        let (_dir, out, summary) = run(&params).await;

        let mut category_of: HashMap<i64, String> = HashMap::new();
        for batch in read(&out, &summary, "items/").await.concat() {
            let ids = i64s(&batch, "item_id");
            let columns: Vec<Vec<String>> = ["title", "category", "brand", "colour", "material", "price_band"]
                .iter()
                .map(|c| strings(&batch, c))
                .collect();
            for (i, id) in ids.iter().enumerate() {
                let title = columns[0][i].to_lowercase();
                let (category, brand) = (&columns[1][i], &columns[2][i]);
                assert!(title.contains(&brand.to_lowercase()), "{title:?} lacks brand {brand:?}");
                assert!(title.contains(category.as_str()), "{title:?} lacks category {category:?}");
                assert!(title.contains(&columns[3][i]) && title.contains(&columns[4][i]), "{title:?}");
                assert!(PRICE_BANDS.contains(&columns[5][i].as_str()));
                category_of.insert(*id, category.clone());
            }
        }
        assert_eq!(category_of.len(), 800);
        let categories: HashSet<&String> = category_of.values().collect();
        assert!(categories.len() >= 10, "only {} categories", categories.len());

        let end_2100 = 4_102_444_800; // 2100-01-01T00:00:00Z
        let rows = events(&out, &summary).await;
        let (mut pairs, mut same_category) = (0, 0);
        for (_, item, ts, ..) in &rows {
            assert!((EPOCH_2024..end_2100).contains(ts), "ts {ts}");
            assert!(category_of.contains_key(item), "item {item} is not in the catalog");
        }
        for pair in rows.windows(2) {
            let [(prev_user, prev_item, prev_ts, ..), (user, item, ts, kind, _)] = pair else { continue };
            if prev_user != user {
                continue;
            }
            assert!(ts > prev_ts, "user {user}: ts {ts} after {prev_ts}");
            if kind == "view" && ts - prev_ts < 1_800 {
                pairs += 1;
                same_category += usize::from(category_of[item] == category_of[prev_item]);
            }
        }
        // Within a session, 80 % stay by rule, plus re-draws that land in the same category.
        let share = same_category as f64 / pairs as f64;
        assert!(share > 0.8, "only {share:.3} of in-session views stay in the category");
    }

    /// The planted structure as a property of the data: ranking the catalog
    /// by the words its titles share with a user's history (no interaction
    /// counts at all) puts held-out tail targets in the top 10 far above
    /// chance, and the product-line words (brand, material) carry much of
    /// that: users prefer a line per category.
    #[tokio::test]
    async fn catalog_text_finds_held_out_tail_targets() {
        let params = DemoParams { users: 2_000, items: 800, events: 60_000, ..Default::default() };
        let (_dir, out, summary) = run(&params).await;
        let mut words_of: HashMap<i64, (HashSet<String>, HashSet<String>)> = HashMap::new();
        for batch in read(&out, &summary, "items/").await.concat() {
            let (ids, titles) = (i64s(&batch, "item_id"), strings(&batch, "title"));
            let (brands, materials) = (strings(&batch, "brand"), strings(&batch, "material"));
            for (((id, title), brand), material) in ids.into_iter().zip(titles).zip(brands).zip(materials) {
                let words_in = |text: &str| text.to_lowercase().split_whitespace().map(str::to_string).collect();
                words_of.insert(id, (words_in(&title), words_in(&format!("{brand} {material}"))));
            }
        }
        let rows = events(&out, &summary).await;
        // Tail: the 80% of items with the fewest events (popularity is only used to pick targets).
        let mut count: HashMap<i64, usize> = words_of.keys().map(|&i| (i, 0)).collect();
        for (_, item, ..) in &rows {
            *count.entry(*item).or_default() += 1;
        }
        let mut by_count: Vec<(usize, i64)> = count.iter().map(|(&i, &c)| (c, i)).collect();
        by_count.sort();
        let tail: HashSet<i64> = by_count.iter().take(by_count.len() * 4 / 5).map(|&(_, i)| i).collect();

        let mut histories: Vec<Vec<i64>> = Vec::new();
        for (user, item, ..) in &rows {
            if histories.len() < *user as usize {
                histories.push(Vec::new());
            }
            histories[*user as usize - 1].push(*item);
        }
        // Hit rate at 10 of 800 items (chance: 1.25%), with and without the line's words.
        let (mut targets, mut hits, mut hits_without_line) = (0usize, 0usize, 0usize);
        for history in histories.iter().filter(|h| h.len() >= 3) {
            let (target, past) = history.split_last().expect("non-empty");
            if !tail.contains(target) {
                continue;
            }
            targets += 1;
            for (with_line, hit_count) in [(true, &mut hits), (false, &mut hits_without_line)] {
                let score = |item: i64| -> usize {
                    let (words, line) = &words_of[&item];
                    past.iter()
                        .map(|p| {
                            let (past_words, _) = &words_of[p];
                            words.intersection(past_words).filter(|w| with_line || !line.contains(*w)).count()
                        })
                        .sum()
                };
                let target_score = score(*target);
                // Rank with ties counted against the target.
                let rank = words_of.keys().filter(|&&i| i != *target && score(i) >= target_score).count();
                *hit_count += usize::from(rank < 10);
            }
        }
        let (rate, rate_without_line) = (hits as f64 / targets as f64, hits_without_line as f64 / targets as f64);
        eprintln!("tail targets {targets}: hit@10 {rate:.3} with the line's words, {rate_without_line:.3} without");
        assert!(targets > 300, "only {targets} tail targets");
        assert!(rate > 8.0 * 10.0 / 800.0, "text finds {rate:.3} of tail targets in its top 10 (chance 0.0125)");
        assert!(rate > 2.0 * rate_without_line, "the line's words add little: {rate:.3} vs {rate_without_line:.3}");
    }

    #[tokio::test]
    async fn bad_parameters_are_usage_errors() {
        let good = DemoParams::default();
        let cases = [
            (DemoParams { users: 0, ..good.clone() }, "--users"),
            (DemoParams { items: 0, ..good.clone() }, "--items"),
            (DemoParams { items: MAX_ITEMS + 1, ..good.clone() }, "--items"),
            (DemoParams { events: good.users - 1, ..good.clone() }, "--events"),
            (DemoParams { events: MAX_EVENTS + 1, ..good.clone() }, "--events"),
            (DemoParams { zipf_exponent: 0.0, ..good.clone() }, "--zipf"),
            (DemoParams { zipf_exponent: 5.5, ..good.clone() }, "--zipf"),
            (DemoParams { zipf_exponent: f64::NAN, ..good.clone() }, "--zipf"),
            (DemoParams { events_per_file: 0, ..good.clone() }, "--events-per-file"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let out = Location::parse(dir.path().to_str().unwrap()).unwrap();
        for (params, flag) in cases {
            let e = generate(&params, &out).await.unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().starts_with(flag), "{flag}: {e}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing is written for bad parameters");
    }
}
