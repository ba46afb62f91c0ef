//! Progress of a generation: an indicatif bar (items, generated tokens/s,
//! ETA) when stderr is a terminal, otherwise a tracing line every
//! `progress_interval_s` seconds, so logs of a scheduled job show progress too.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counters the engine updates while it decodes.
#[derive(Debug, Default)]
pub struct Live {
    pub generated_tokens: AtomicU64,
    pub prompt_tokens: AtomicU64,
}

pub struct Progress {
    total: u64,
    done: u64,
    accepted: u64,
    rejected: u64,
    started: Instant,
    live: Arc<Live>,
    bar: Option<ProgressBar>,
    interval: Duration,
    last_log: Instant,
}

impl Progress {
    /// `total`: items to generate for (reused and resumed ones excluded).
    pub fn new(total: u64, interval_s: u64, live: Arc<Live>) -> Progress {
        let bar = (std::io::stderr().is_terminal() && total > 0).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "generate {bar:30.cyan/blue} {pos}/{len} items · {msg} · ETA {eta} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        let now = Instant::now();
        Progress {
            total,
            done: 0,
            accepted: 0,
            rejected: 0,
            started: now,
            live,
            bar,
            interval: Duration::from_secs(interval_s.max(1)),
            last_log: now,
        }
    }

    /// How often [`Progress::tick`] should be called.
    pub fn tick_every(&self) -> Duration {
        if self.bar.is_some() { Duration::from_secs(1) } else { self.interval }
    }

    fn tok_s(&self) -> f64 {
        let s = self.started.elapsed().as_secs_f64();
        if s > 0.0 { self.live.generated_tokens.load(Ordering::Relaxed) as f64 / s } else { 0.0 }
    }

    /// One item finished.
    pub fn item(&mut self, accepted: bool) {
        self.done += 1;
        if accepted {
            self.accepted += 1;
        } else {
            self.rejected += 1;
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
            bar.set_message(format!("{:.1} gen tok/s · {} rejected", self.tok_s(), self.rejected));
        }
    }

    /// Refreshes the bar, or logs a line if the interval has passed.
    pub fn tick(&mut self) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{:.1} gen tok/s · {} rejected", self.tok_s(), self.rejected));
            return;
        }
        if self.last_log.elapsed() + Duration::from_millis(50) < self.interval {
            return;
        }
        self.last_log = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        // No ETA before the first item is done ("unknown" in the log, not NaN).
        let eta_s = if self.done > 0 {
            format!("{:.0}", elapsed / self.done as f64 * self.total.saturating_sub(self.done) as f64)
        } else {
            "unknown".to_string()
        };
        tracing::info!(
            done = self.done,
            total = self.total,
            accepted = self.accepted,
            rejected = self.rejected,
            generated_tok_s = format!("{:.1}", self.tok_s()),
            eta_s = %eta_s,
            "generate progress"
        );
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
