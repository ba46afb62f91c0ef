//! Optional push of a run's metrics to a Prometheus Pushgateway
//! (`run.pushgateway`), for schedulers whose jobs are gone before a scrape.

use std::time::Duration;

use tracing::{info, warn};

/// PUTs `metrics` (Prometheus text format) to `<base>/metrics/job/<job>`,
/// replacing that group. Best effort: monitoring being down must not fail a
/// finished run, so errors are logged, not returned.
pub(crate) async fn push_metrics(base: &str, job: &str, metrics: String) {
    let url = format!("{}/metrics/job/{job}", base.trim_end_matches('/'));
    let result = async {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        client
            .put(&url)
            .header("Content-Type", "text/plain; version=0.0.4")
            .body(metrics)
            .send()
            .await?
            .error_for_status()
    }
    .await;
    // The URL may carry basic-auth credentials (`http://user:password@host`):
    // log it without them, and the error without its copy of the URL.
    let shown = tailforge_core::storage::without_credentials(&url);
    match result {
        Ok(_) => info!(url = %shown, "pushed metrics to the Pushgateway"),
        Err(e) => {
            let e = e.without_url();
            warn!(url = %shown, error = %e, "could not push metrics to the Pushgateway (the run itself is unaffected)")
        }
    }
}
