//! The `[storage]` section: how object store clients (S3, GCS, Azure) ride
//! out an unreliable network — retries with exponential backoff and timeouts.
//! Local paths ignore it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Retry and timeout settings of the object store clients, applied to every
/// `s3://`, `gs://` and `az://` location the process opens.
///
/// A request that fails to connect, or a safe/idempotent one whose connection
/// drops, is retried until `max_retries` or `retry_timeout_secs` is reached;
/// then the stage fails and a rerun of the same run id resumes. Backoffs are
/// object_store's "decorrelated jitter": each is drawn from
/// `[init_backoff, previous × backoff_base]`, capped at `max_backoff_secs`,
/// so an outage shorter than `max_retries × init_backoff` is always ridden
/// out. object_store's own defaults (0.1 s, base 2) give up after as little
/// as 1–2 s of refused connections, too little for a nightly job; the
/// defaults here ride out at least 10 s and typically about two minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Most retries of one request; 0 disables retries.
    pub max_retries: usize,
    /// No retry starts later than this many seconds after the first attempt.
    pub retry_timeout_secs: f64,
    /// Shortest backoff before a retry, in milliseconds.
    pub init_backoff_ms: u64,
    /// Growth factor of the backoff range from one retry to the next.
    pub backoff_base: f64,
    /// Longest backoff between two retries, in seconds.
    pub max_backoff_secs: f64,
    /// Seconds to establish a connection before the attempt counts as failed.
    /// Unset: the client's default (5 s) or `AWS_CONNECT_TIMEOUT` & co.
    pub connect_timeout_secs: Option<f64>,
    /// Seconds one request may take in all (large uploads are split into parts).
    /// Unset: the client's default (30 s) or `AWS_TIMEOUT` & co.
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
