//! The `[storage]` section: how object store clients (S3, GCS, Azure) ride
//! out an unreliable network — retries with exponential backoff and timeouts.
//! Local paths ignore it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the object store clients (`s3://`, `gs://`, `az://`) ride out an unreliable network; local
/// paths ignore it.
///
/// A request that cannot connect, or a read or overwrite whose connection drops, is retried until
/// `max_retries` or `retry_timeout_secs` runs out; then the stage fails (exit 1) and rerunning the
/// same run id resumes it (finished stages are skipped, generation keeps its written shards,
/// training its last checkpoint). Each backoff is drawn from
/// `[init_backoff, previous × backoff_base]` (object_store's decorrelated jitter), capped at
/// `max_backoff_secs`, so an outage shorter than `max_retries × init_backoff_ms` is always ridden
/// out — 10 s with the defaults, typically about two minutes. (object_store's own defaults, 0.1 s
/// and base 2, gave up after 1–2 s of refused connections in our fault test.) Conditional writes
/// (the run lock) are not retried after a dropped connection, since their outcome is unknown.
/// Imports and `demo-data` take these from `TAILFORGE_STORAGE__*` variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Most retries of one request; 0 disables retries.
    pub max_retries: usize,
    /// No retry starts later than this many seconds after the first attempt.
    pub retry_timeout_secs: f64,
    /// Shortest backoff before a retry, in milliseconds.
    pub init_backoff_ms: u64,
    /// Growth factor of the backoff range from one retry to the next (> 1).
    pub backoff_base: f64,
    /// Longest backoff between two retries, in seconds.
    pub max_backoff_secs: f64,
    /// Seconds to establish a connection before the attempt counts as failed; unset keeps
    /// `AWS_CONNECT_TIMEOUT` & co. or the client's default.
    ///
    /// Default: client default (5 s)
    pub connect_timeout_secs: Option<f64>,
    /// Seconds one request may take in all (large uploads are split into parts); unset keeps
    /// `AWS_TIMEOUT` & co. or the client's default.
    ///
    /// Default: client default (30 s)
    pub request_timeout_secs: Option<f64>,
}

impl Default for StorageConfig {
    /// 10 retries within 3 minutes, backoffs from 1 s growing up to 30 s.
    fn default() -> Self {
        StorageConfig {
            max_retries: 10,
            retry_timeout_secs: 180.0,
            init_backoff_ms: 1000,
            backoff_base: 3.0,
            max_backoff_secs: 30.0,
            connect_timeout_secs: None,
            request_timeout_secs: None,
        }
    }
}

impl StorageConfig {
    pub(crate) fn validate(&self, source: &str) -> Result<()> {
        for (key, v) in [
            ("storage.retry_timeout_secs", Some(self.retry_timeout_secs)),
            ("storage.max_backoff_secs", Some(self.max_backoff_secs)),
            ("storage.backoff_base", Some(self.backoff_base - 1.0)),
            ("storage.connect_timeout_secs", self.connect_timeout_secs),
            ("storage.request_timeout_secs", self.request_timeout_secs),
        ] {
            let Some(v) = v else { continue };
            if !(v.is_finite() && v > 0.0) {
                let expected = if key.ends_with("base") { "a factor > 1" } else { "seconds > 0" };
                return Err(Error::config(source, key, format!("out of range: expected {expected}")));
            }
        }
        Ok(())
    }

    /// The retry policy of object_store clients.
    pub fn retry(&self) -> object_store::RetryConfig {
        object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(self.init_backoff_ms),
                max_backoff: Duration::from_secs_f64(self.max_backoff_secs),
                base: self.backoff_base,
            },
            max_retries: self.max_retries,
            retry_timeout: Duration::from_secs_f64(self.retry_timeout_secs),
        }
    }

    /// HTTP client settings to put on top of what the environment set.
    pub fn client_settings(&self) -> Vec<(object_store::ClientConfigKey, String)> {
        let millis = |secs: f64| format!("{}ms", (secs * 1000.0).round() as u64);
        let mut settings = Vec::new();
        if let Some(s) = self.connect_timeout_secs {
            settings.push((object_store::ClientConfigKey::ConnectTimeout, millis(s)));
        }
        if let Some(s) = self.request_timeout_secs {
            settings.push((object_store::ClientConfigKey::Timeout, millis(s)));
        }
        settings
    }
}
