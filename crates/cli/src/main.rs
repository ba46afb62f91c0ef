//! `tailforge`: the thin binary. It parses arguments, loads the pipeline
//! configuration, calls the stage crates and reports errors once, with the
//! exit code of their kind (0 ok, 2 usage/config, 65 bad input data, 1 internal).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tailforge_core::error::{EXIT_INTERNAL, EXIT_USAGE};
use tailforge_core::layout::StageDirs;
use tailforge_core::schema::{outputs, train_outputs};
use tailforge_core::storage::SUCCESS_MARKER;
use tailforge_core::{Error, Location, PipelineConfig, Result};

#[derive(Parser)]
#[command(name = "tailforge", version, about = "Fix the long tail of a recommender with LLM data augmentation", long_about = None)]
struct Cli {
    /// Log format on stderr: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// More log detail (-v debug, -vv trace). TAILFORGE_LOG=<filter> overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a public dataset into the events/items Parquet contract.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Write the deterministic synthetic shop (the embedded default dataset).
    DemoData(DemoDataArgs),
    /// Item popularity, the long tail, sequences and the eval-v1 split.
    Analyze(AnalyzeArgs),
    /// Write descriptions and keywords for the tail items with a local LLM (llama.cpp).
    Generate(GenerateArgs),
    /// Train the sequential recommender (SASRec; id, text or fused items) and evaluate it under eval-v1.
    Train(TrainArgs),
    /// Score a baseline under protocol eval-v1 (head vs tail, full and sampled).
    Evaluate(EvaluateArgs),
    /// Run the pipeline as one job: runs/<run_id>/<stage>/, manifest, lock, latest pointer.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Pipeline file (TOML).
    pipeline: PathBuf,
    /// Logical date (YYYY-MM-DD) substituted for {date} in inputs. Default: today (UTC).
    #[arg(long)]
    date: Option<String>,
    /// Run id. Default: the date, so a retry of the same night resumes it.
    #[arg(long)]
    run_id: Option<String>,
    /// Override a setting, e.g. --set output=/tmp/x (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Recompute stages that already succeeded.
    #[arg(long)]
    force: bool,
    /// Take over a run lock older than this many seconds.
    #[arg(long, default_value_t = 6 * 3600)]
    stale_lock_after: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Baseline {
    /// Most popular items first (training popularity, ties by item id): eval-v1's check.
    Mostpop,
    /// Cosine co-occurrence of items in training sequences, summed over the user's last 5 items.
    ItemKnn,
    /// Cosine of MiniLM item-text embeddings with the mean of the user's last 5 items (train.encoder).
    TextKnn,
    /// EVAL.md's blend: 0.2 × item-knn (scaled to max 1 per user) + 0.8 × (text-knn cosine + 1) / 2.
    KnnBlend,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output directory of `tailforge analyze` (reads its tail_items.parquet), or a tail_items Parquet file.
    /// Default: <output>/analyze/ from the pipeline.
    #[arg(long)]
    input: Option<String>,
    /// Output location: generated/ and rejects/ shards, summary.json, _SUCCESS. Re-running resumes.
    /// Default: <output>/generate/ from the pipeline.
    #[arg(long)]
    out: Option<String>,
    /// Generate for at most this many tail items (in rank order).
    #[arg(long)]
    limit: Option<usize>,
    /// Sequences decoded together in one batch.
    #[arg(long)]
    parallel: Option<u32>,
    /// GGUF model file. Default: models/SmolLM2-135M-Instruct.Q4_1.gguf (installed by `make setup`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// llama.cpp threads; 0 = all cores. On a machine shared with other work, fewer threads
    /// than cores is much faster (llama.cpp threads busy-wait for each other).
    #[arg(long)]
    threads: Option<u32>,
    /// Run seed; each item's seed derives from it and the item id.
    #[arg(long)]
    seed: Option<u64>,
    /// This worker's part K/N of a sharded generation (K from 0 to N-1): its items go to
    /// <out>/shard-K-of-N/. Same as `generate.shard`; see docs/scaling.md.
    #[arg(long, value_name = "K/N", conflicts_with = "merge")]
    shard: Option<tailforge_core::config::Shard>,
    /// Join the finished parts <out>/shard-K-of-N/ of a sharded generation into one output at <out>.
    #[arg(long)]
    merge: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum VariantArg {
    Id,
    Text,
    Fused,
    Dual,
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output directory of `tailforge analyze`. Default: <output>/analyze/ of the pipeline.
    #[arg(long)]
    input: Option<String>,
    /// Output directory of `tailforge generate`: tail items' descriptions and keywords join their text.
    /// Default: <output>/generate/ of the pipeline, when it exists.
    #[arg(long)]
    augment: Option<String>,
    /// Item representation. Overrides train.variant.
    #[arg(long, value_enum)]
    variant: Option<VariantArg>,
    /// Where to write metrics, checkpoints, embeddings and recommendations. Re-running resumes.
    /// Default: <output>/train/<variant>/.
    #[arg(long)]
    out: Option<String>,
    /// Most epochs. Overrides train.epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// CPU threads; 0 = all cores. Overrides train.threads.
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct EvaluateArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Output directory of `tailforge analyze` (sequences, split, item_stats).
    #[arg(long)]
    input: String,
    /// The model to evaluate.
    #[arg(long, value_enum, default_value_t = Baseline::Mostpop)]
    model: Baseline,
    /// Where to write metrics.json and metrics.md (optional).
    #[arg(long)]
    out: Option<String>,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// MovieLens-100k (u.data, u.item) or MovieLens latest (ratings.csv, movies.csv, tags.csv).
    Movielens {
        /// Directory holding the MovieLens files.
        #[arg(long)]
        src: PathBuf,
        /// Output location; writes <out>/events/ and <out>/items/.
        #[arg(long)]
        out: String,
    },
}

#[derive(Args)]
struct DemoDataArgs {
    /// Number of users.
    #[arg(long, default_value_t = 5_000)]
    users: u64,
    /// Number of catalog items.
    #[arg(long, default_value_t = 2_000)]
    items: u64,
    /// Number of events (exact).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Seed: the same seed gives identical rows.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Zipf exponent of item popularity (slope of log count vs log rank).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Events per Parquet file.
    #[arg(long, default_value_t = 10_000_000)]
    events_per_file: u64,
    /// Output location; writes <out>/events/, <out>/items/ and demo.json.
    #[arg(long)]
    out: String,
}

/// Pipeline configuration options shared by stage commands.
#[derive(Args)]
struct ConfigArgs {
    /// Pipeline file (TOML). Without it, defaults plus the flags below.
    #[arg(long, short = 'p')]
    pipeline: Option<PathBuf>,
    /// Override a setting, e.g. --set analyze.long_tail.rule=pareto (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Args)]
struct AnalyzeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Events input (file, directory, glob or Hive prefix; local or URL). Overrides inputs.events.
    #[arg(long)]
    events: Option<String>,
    /// Items (catalog) input. Overrides inputs.items.
    #[arg(long)]
    items: Option<String>,
    /// Output directory. Default: <output>/analyze from the pipeline.
    #[arg(long)]
    out: Option<String>,
}

/// Keeps freed large buffers in the process instead of returning them to the
/// kernel. Training allocates and frees tensors of tens of MB every step
/// (attention weights are 128 × 200 × 200 floats); with glibc's defaults each
/// is a fresh `mmap`, so every step pays page faults and zeroing for memory
/// it just gave back — about 9% of a training epoch (BENCHMARKS.md). Values
/// are glibc's maximum mmap threshold (32 MiB on 64-bit) and a trim
/// threshold far above any working set here. The cost is memory the process
/// keeps after freeing it, so it is applied to training only: `train`, and
/// `run` unless `analyze.memory_limit` is set (a limited run keeps glibc's
/// defaults, whose footprint BENCHMARKS.md's memory figures were measured with).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters (under the
    // allocator's own lock); a rejected value (return 0) leaves the default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

/// Dies quietly when stdout's reader goes away (`tailforge evaluate … | head`),
/// as Unix tools do: Rust ignores SIGPIPE, and `println!` then panics on the
/// broken pipe.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn quiet_on_broken_pipe() {
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn quiet_on_broken_pipe() {}

fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE as u8 } else { 0 });
        }
    };
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_INTERNAL as u8);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    // llama.cpp logs every tensor and buffer at info level: keep them to
    // warnings unless asked for (-vv, or TAILFORGE_LOG=llama-cpp-2=info).
    let default = if cli.verbose >= 2 { default.to_string() } else { format!("{default},llama-cpp-2=warn") };
    let filter = std::env::var("TAILFORGE_LOG").unwrap_or_else(|_| default.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// The location a flag names, else its default under the pipeline's output
/// root ([`StageDirs`]), else a usage error saying how to give one.
fn flag_or_default(flag: Option<String>, default: Option<Location>, what: &str, name: &str) -> Result<Location> {
    match (flag, default) {
        (Some(given), _) => Location::parse(&given),
        (None, Some(default)) => Ok(default),
        (None, None) => Err(Error::usage(format!(
            "no {what}: pass {name}, or --pipeline with output = \"…\" to default under it (see docs/config.md)"
        ))),
    }
}

/// Loads the layered configuration and installs its `[storage]` settings
/// for every location opened afterwards.
fn load_config(pipeline: Option<&std::path::Path>, sets: &[String]) -> Result<PipelineConfig> {
    let config = PipelineConfig::load(pipeline, std::env::vars(), sets)?;
    tailforge_core::storage::configure(&config.storage);
    Ok(config)
}

async fn run(cli: Cli) -> Result<()> {
    if matches!(cli.command, Command::Import(_) | Command::DemoData(_) | Command::Evaluate(_)) {
        // No pipeline file here, but `TAILFORGE_STORAGE__*` still sets the retries.
        load_config(None, &[])?;
    }
    match cli.command {
        Command::Import(cmd) => import_command(cmd).await,
        Command::DemoData(a) => demo_data_command(a).await,
        Command::Analyze(a) => analyze_command(a).await,
        Command::Generate(a) => generate_command(a).await,
        Command::Train(a) => train_command(a).await,
        Command::Evaluate(a) => evaluate_command(a).await,
        Command::Run(a) => run_command(a).await,
    }
}

/// `tailforge import`: a public dataset into the events/items Parquet contract.
async fn import_command(cmd: ImportCommand) -> Result<()> {
    let ImportCommand::Movielens { src, out } = cmd;
    let out = Location::parse(&out)?;
    let s = tailforge_ingest::movielens::import(&src, &out).await?;
    println!("imported {} ({} events, {} items)", s.format, s.events, s.items);
    println!("  events: {}", s.events_url);
    println!("  items:  {}", s.items_url);
    Ok(())
}

/// `tailforge demo-data`: the synthetic shop.
async fn demo_data_command(a: DemoDataArgs) -> Result<()> {
    let out = Location::parse(&a.out)?;
    let params = tailforge_ingest::demo::DemoParams {
        users: a.users,
        items: a.items,
        events: a.events,
        seed: a.seed,
        zipf_exponent: a.zipf,
        events_per_file: a.events_per_file,
    };
    let s = tailforge_ingest::demo::generate(&params, &out).await?;
    println!("wrote demo data: {} users, {} items, {} events in {} files", s.users, s.items, s.events, s.files.len());
    println!("  events: {}", out.as_dir().join("events/").display());
    println!("  items:  {}", out.as_dir().join("items/").display());
    Ok(())
}

/// `tailforge analyze`: the SQL stage, its outputs under `--out` or `<output>/analyze/`.
async fn analyze_command(a: AnalyzeArgs) -> Result<()> {
    let mut config = load_config(a.config.pipeline.as_deref(), &a.config.sets)?;
    if a.events.is_some() || a.items.is_some() {
        // Inputs on the command line replace the pipeline's, a MovieLens directory included.
        config.inputs.movielens = None;
    }
    if let Some(e) = a.events {
        config.inputs.events = Some(e);
    }
    if let Some(i) = a.items {
        config.inputs.items = Some(i);
    }
    if a.config.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    tailforge_ingest::import_pipeline_inputs(&mut config).await?;
    let missing =
        |what: &str, flag: &str| Error::usage(format!("no {what}: pass {flag} or set it in the pipeline file"));
    let events =
        Location::parse(config.inputs.events.as_deref().ok_or_else(|| missing("events input", "--events URL"))?)?;
    let items = Location::parse(config.inputs.items.as_deref().ok_or_else(|| missing("items input", "--items URL"))?)?;
    let dirs = StageDirs::of_output(&config)?;
    let out = flag_or_default(a.out, dirs.as_ref().map(StageDirs::analyze), "output", "--out URL")?;
    out.check_output_dir("--out")?;
    let request = tailforge_analyze::AnalyzeRequest { events, items, out: out.clone(), config };
    let s = tailforge_analyze::analyze(&request).await?;
    println!(
        "analyzed {} events of {} users over {} catalog items ({} rule)",
        s.events, s.users, s.catalog_items, s.long_tail_rule
    );
    println!(
        "  head {} items hold {:.1}% of interactions; tail {} items; {} never interacted with; gini {:.3}",
        s.head_items,
        s.head_share * 100.0,
        s.tail_items,
        s.cold_items,
        s.gini
    );
    println!("  outputs: {}", out.as_dir().display());
    Ok(())
}

/// `tailforge train`: one variant, its outputs under `--out` or `<output>/train/<variant>/`.
async fn train_command(a: TrainArgs) -> Result<()> {
    use tailforge_core::config::Variant;
    keep_freed_memory();
    let mut config = load_config(a.config.pipeline.as_deref(), &a.config.sets)?;
    if let Some(v) = a.variant {
        config.train.variant = match v {
            VariantArg::Id => Variant::Id,
            VariantArg::Text => Variant::Text,
            VariantArg::Fused => Variant::Fused,
            VariantArg::Dual => Variant::Dual,
        };
    }
    if let Some(e) = a.epochs {
        config.train.epochs = e;
    }
    if let Some(t) = a.threads {
        config.train.threads = t;
    }
    config.validate(a.config.pipeline.as_ref().map(|p| p.display().to_string()).as_deref().unwrap_or("(flags)"))?;
    if a.config.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let variant = config.train.variant;
    let dirs = StageDirs::of_output(&config)?;
    let analyze_out =
        flag_or_default(a.input, dirs.as_ref().map(StageDirs::analyze), "input", "--input ANALYZE_OUT")?.as_dir();
    let generate_out = match (a.augment, &dirs) {
        (Some(g), _) => Some(Location::parse(&g)?.as_dir()),
        (None, Some(d)) if d.generate().join(SUCCESS_MARKER).exists().await? => Some(d.generate()),
        (None, _) => None,
    };
    let out = flag_or_default(a.out, dirs.as_ref().map(|d| d.train(variant)), "output", "--out URL")?.as_dir();
    out.check_output_dir("--out")?;
    let embedding_cache = config.train.embedding_cache_under(dirs.as_ref().map_or(&out, StageDirs::root))?;
    let request = tailforge_train::TrainRequest {
        analyze_out,
        generate_out,
        out: out.clone(),
        config: config.train.clone(),
        variant,
        seed: config.seed,
        embedding_cache,
    };
    let m = tailforge_train::train(&request).await?;
    print!("{}", m.to_markdown());
    println!("outputs: {}", out.display());
    Ok(())
}

/// `tailforge evaluate`: a reference scorer under eval-v1.
async fn evaluate_command(a: EvaluateArgs) -> Result<()> {
    let config = load_config(a.config.pipeline.as_deref(), &a.config.sets)?;
    config.validate("command line")?;
    if a.config.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let input = Location::parse(&a.input)?.as_dir();
    let baseline = match a.model {
        Baseline::Mostpop => tailforge_train::Baseline::MostPop,
        Baseline::ItemKnn => tailforge_train::Baseline::ItemKnn,
        Baseline::TextKnn => tailforge_train::Baseline::TextKnn,
        Baseline::KnnBlend => tailforge_train::Baseline::KnnBlend,
    };
    // The cache of the pipeline's output root; without one, of the analyze output's parent.
    let root = StageDirs::of_output(&config)?.map_or_else(|| input.join("../"), |d| d.root().clone());
    let cache = config.train.embedding_cache_under(&root)?;
    let metrics = tailforge_train::evaluate_baseline(baseline, &input, &config.train, &cache).await?;
    print!("{}", metrics.to_markdown());
    if let Some(out) = a.out {
        let out = Location::parse(&out)?;
        out.check_output_dir("--out")?;
        let out = out.as_dir();
        tailforge_train::write_baseline_metrics(&out, &metrics).await?;
        println!("metrics: {}", out.join(train_outputs::METRICS).display());
    }
    Ok(())
}

/// `tailforge run`: the pipeline as one job, then a summary of what it did.
async fn run_command(a: RunArgs) -> Result<()> {
    let config = load_config(Some(&a.pipeline), &a.sets)?;
    if config.analyze.memory_limit.bytes() == 0 {
        keep_freed_memory();
    }
    let request = tailforge_run::RunRequest {
        config,
        date: a.date.unwrap_or_else(tailforge_run::today_utc),
        run_id: a.run_id,
        force: a.force,
        stale_lock_after_s: a.stale_lock_after,
    };
    let m = tailforge_run::run(&request).await?;
    println!("run {} {}", m.run_id, m.status);
    for s in &m.stages {
        println!("  {:<12} {:<9} {:>7.2}s", s.name, s.status, s.seconds);
    }
    // Test NDCG@10 (eval-v1, full ranking) per model: the baseline, then each trained variant.
    let ndcg =
        |prefix: &str, group: &str| m.metrics.get(&tailforge_core::records::test_ndcg_key(prefix, group)).copied();
    let variants = m.trained_variants().into_iter().map(|v| (v.as_str(), v.as_str()));
    for (label, prefix) in std::iter::once(("MostPop", "mostpop")).chain(variants) {
        if let (Some(all), Some(head), Some(tail)) =
            (ndcg(prefix, "overall"), ndcg(prefix, "head"), ndcg(prefix, "tail"))
        {
            let cold = ndcg(prefix, "cold").unwrap_or(0.0);
            println!("  {label:<9} test NDCG@10 overall {all:.4}  head {head:.4}  tail {tail:.4}  cold {cold:.4}");
        }
    }
    if let Some(dirs) = StageDirs::of_output(&request.config)? {
        println!("  report: {}", dirs.run(&m.run_id).root().join("report.md").display());
    }
    Ok(())
}

/// `tailforge generate`: input and output from the flags or the pipeline's
/// output root; the cache at `generate.cache` or `<output>/cache/generate`.
async fn generate_command(a: GenerateArgs) -> Result<()> {
    let mut config = load_config(a.config.pipeline.as_deref(), &a.config.sets)?;
    let g = &mut config.generate;
    g.limit = a.limit.or(g.limit);
    g.parallel = a.parallel.unwrap_or(g.parallel);
    g.model = a.model.unwrap_or(g.model.clone());
    g.n_threads = a.threads.unwrap_or(g.n_threads);
    g.seed = a.seed.unwrap_or(g.seed);
    g.shard = a.shard.or(g.shard);
    config.validate("command line")?;
    if a.config.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let (input, out, merge) = (a.input, a.out, a.merge);
    let dirs = StageDirs::of_output(&config)?;
    let out = flag_or_default(out, dirs.as_ref().map(StageDirs::generate), "output", "--out URL")?;
    out.check_output_dir("--out")?;
    if merge {
        let s = tailforge_generate::merge(&out).await?;
        println!("merged {} shards:", s.merged_shards);
        print_generate_summary(&s, &out);
        return Ok(());
    }
    let tail_items = format!("{}.parquet", outputs::TAIL_ITEMS);
    let input = match input {
        Some(i) if i.ends_with(".parquet") => Location::parse(&i)?,
        i => flag_or_default(i, dirs.as_ref().map(StageDirs::analyze), "input", "--input ANALYZE_OUT")?
            .as_dir()
            .join(&tail_items),
    };
    let mut cfg = config.generate.clone();
    cfg.cache = cfg.cache_location(config.output.as_deref());
    let s = tailforge_generate::generate(&input, &out, &cfg).await?;
    if let Some(shard) = s.shard {
        println!("shard {shard}:");
    }
    print_generate_summary(&s, &out);
    Ok(())
}

/// The terminal summary of a generation (or a merge).
fn print_generate_summary(s: &tailforge_generate::GenerateSummary, out: &Location) {
    println!(
        "generated for {} items ({} skipped as done before, {} reused from cache): {} accepted, {} rejected",
        s.items,
        s.skipped,
        s.reused_from_cache,
        s.accepted,
        s.rejected_total()
    );
    for (reason, n) in &s.rejected {
        println!("  rejected {reason}: {n}");
    }
    if !s.filtered_attempts.is_empty() {
        let f: Vec<String> = s.filtered_attempts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  filtered attempts (retries included): {}", f.join(", "));
    }
    println!(
        "  {:.1} generated tok/s, {:.1} prompt tok/s, {:.1} s",
        s.generated_tokens_per_s, s.prompt_tokens_per_s, s.seconds
    );
    let g = &s.grounding;
    if g.rows > 0 {
        println!(
            "  grounding of {} rows: {:.1}% of keywords in the item's text or its neighbours' titles \
             ({:.1}% of rows fully); description words found there: median {:.2}, p10 {:.2}",
            g.rows,
            100.0 * g.keywords_grounded,
            100.0 * g.rows_fully_grounded,
            g.description_share.p50,
            g.description_share.p10
        );
    }
    if s.free_keyword_items > 0 {
        println!("  {} items had too little text for extractive keywords (free keywords used)", s.free_keyword_items);
    }
    if let Some(c) = &s.cache {
        println!("  cache: {c}");
    }
    let out = match s.shard {
        Some(shard) => out.as_dir().join(&shard.dir_name()),
        None => out.clone(),
    };
    println!("  outputs: {}", out.as_dir().display());
}
