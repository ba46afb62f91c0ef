//! Locations: local paths and object store URLs behind one type.
//!
//! Every input and output of tailforge is a [`Location`]: a local path
//! (`data/events`, `/abs/path`), a `file://` URL, or an object store URL
//! (`s3://`, `gs://`, `az://`, `memory://`). Credentials and endpoints come
//! from the environment the way each cloud's own tools read them
//! (`AmazonS3Builder::from_env`: `AWS_ACCESS_KEY_ID`, `AWS_REGION`,
//! `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, …; `GOOGLE_*`; `AZURE_*`).
//!
//! A location may end in a glob over file names (`events/*.parquet`,
//! `s3://b/logs/dt=2026-11-*/part-*.parquet`); the glob is kept apart from
//! the listing prefix so both local and remote inputs support it.
//!
//! Retries and timeouts of the cloud clients come from the `[storage]`
//! section ([`StorageConfig`]); a command installs it once with
//! [`configure`] before it opens locations.
//!
//! Writes are atomic per object: a single `put` is atomic on every store, and
//! multipart uploads ([`Location::put_multipart`]) become visible only on
//! completion (the local store writes a staging file and renames it). A stage
//! writes its `_SUCCESS` marker last, so a reader that checks for it never
//! sees a half-written output.

use std::sync::{Arc, RwLock};

use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use url::Url;

use crate::config::StorageConfig;
use crate::error::{Error, Result};

/// The `[storage]` settings every object store client of this process is
/// built with. A process runs one pipeline, so one setting suffices.
static STORAGE: RwLock<Option<StorageConfig>> = RwLock::new(None);

/// Installs the retry and timeout settings for locations opened from now on.
pub fn configure(config: &StorageConfig) {
    if let Ok(mut current) = STORAGE.write() {
        *current = Some(config.clone());
    }
}

fn storage_config() -> StorageConfig {
    STORAGE.read().ok().and_then(|c| c.clone()).unwrap_or_default()
}

/// Name of the marker a stage writes last, once all its outputs are complete.
pub const SUCCESS_MARKER: &str = "_SUCCESS";

/// `text` with the credentials of a URL in it (`scheme://user:password@host/…`)
/// replaced by `***`, for manifests and logs; any other text unchanged.
pub fn without_credentials(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            // Both setters fail only for URLs that cannot carry credentials,
            // and those have none to hide.
            let _ = url.set_username("***");
            let _ = url.set_password(None);
            url.to_string()
        }
        _ => text.to_string(),
    }
}

/// A local path or object store URL, with the store that serves it.
#[derive(Clone)]
pub struct Location {
    /// The URL up to (not including) any glob; directories end with `/`.
    url: Url,
    /// A glob over the remainder of the path, e.g. `*.parquet`.
    glob: Option<String>,
    store: Arc<dyn ObjectStore>,
    path: Path,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Location({})", self.display())
    }
}

impl Location {
    /// Parses a local path or URL. Local relative paths are made absolute
    /// against the current directory. Fails with a usage error for an
    /// unsupported scheme or a store that cannot be configured.
    pub fn parse(text: &str) -> Result<Location> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::usage("empty location: expected a local path or a URL such as s3://bucket/prefix"));
        }
        let (base, glob) = split_glob(text);
        let url = if base.contains("://") {
            Url::parse(base).map_err(|e| Error::usage(format!("{text}: not a valid URL: {e}")))?
        } else {
            local_url(base)?
        };
        Self::from_url(url, glob.map(str::to_string), text)
    }

    fn from_url(url: Url, glob: Option<String>, text: &str) -> Result<Location> {
        let settings = storage_config();
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => Arc::new(LocalFileSystem::new()),
            "s3" | "s3a" => {
                let builder = AmazonS3Builder::from_env().with_url(url.as_str()).with_retry(settings.retry());
                if !has_s3_credentials(&builder) && metadata_disabled() {
                    // object_store would fall back to the instance-metadata
                    // service, which AWS_EC2_METADATA_DISABLED rules out.
                    return Err(Error::usage(format!(
                        "{text}: no AWS credentials (AWS_EC2_METADATA_DISABLED rules out an instance role). {S3_CREDENTIALS_HELP}"
                    )));
                }
                let builder = settings
                    .client_settings()
                    .into_iter()
                    .fold(builder, |b, (key, value)| b.with_config(AmazonS3ConfigKey::Client(key), value));
                Arc::new(
                    builder.build().map_err(|e| {
                        Error::usage(format!("{text}: cannot configure S3 (check AWS_* variables): {e}"))
                    })?,
                )
            }
            "gs" => {
                let builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str()).with_retry(settings.retry());
                let builder = settings
                    .client_settings()
                    .into_iter()
                    .fold(builder, |b, (key, value)| b.with_config(GoogleConfigKey::Client(key), value));
                Arc::new(builder.build().map_err(|e| {
                    Error::usage(format!("{text}: cannot configure GCS (check GOOGLE_* variables): {e}"))
                })?)
            }
            "az" | "azure" | "abfs" | "abfss" | "adl" => {
                let builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str()).with_retry(settings.retry());
                let builder = settings
                    .client_settings()
                    .into_iter()
                    .fold(builder, |b, (key, value)| b.with_config(AzureConfigKey::Client(key), value));
                Arc::new(builder.build().map_err(|e| {
                    Error::usage(format!("{text}: cannot configure Azure (check AZURE_* variables): {e}"))
                })?)
            }
            "memory" => memory_store(),
            other => {
                return Err(Error::usage(format!(
                    "{text}: unsupported scheme {other:?}: use a local path, file://, s3://, gs://, az:// or memory://"
                )));
            }
        };
        let path =
            Path::from_url_path(url.path()).map_err(|e| Error::usage(format!("{text}: invalid path in URL: {e}")))?;
        Ok(Location { url, glob, store, path })
    }

    /// The URL up to any glob, e.g. `s3://bucket/events/` or `file:///data/events/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The glob over file names below [`Location::url`], if any.
    pub fn glob(&self) -> Option<&str> {
        self.glob.as_deref()
    }

    /// The scheme-and-authority URL under which the store is registered with
    /// DataFusion, e.g. `s3://bucket/` or `file:///`.
    pub fn store_url(&self) -> Url {
        let mut u = self.url.clone();
        u.set_path("/");
        u.set_query(None);
        u.set_fragment(None);
        u
    }

    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// The object path within the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A human-readable form: the local path for `file://`, else the URL (with glob).
    pub fn display(&self) -> String {
        let base = if self.url.scheme() == "file" {
            self.url.to_file_path().map(|p| p.display().to_string()).unwrap_or_else(|_| self.url.to_string())
        } else {
            self.url.to_string()
        };
        match &self.glob {
            Some(g) => format!("{}{}{g}", base, if base.ends_with('/') { "" } else { "/" }),
            None => base,
        }
    }

    /// The location of `name` below this one (which is treated as a directory).
    pub fn join(&self, name: &str) -> Location {
        let mut url = self.url.clone();
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let url = url.join(name).unwrap_or_else(|_| self.url.clone());
        let path = Path::from_url_path(url.path()).unwrap_or_else(|_| self.path.clone().join(name));
        Location { url, glob: None, store: Arc::clone(&self.store), path }
    }

    /// The same location seen as a directory (URL ending in `/`), as DataFusion wants for listing.
    pub fn as_dir(&self) -> Location {
        let mut l = self.clone();
        if !l.url.path().ends_with('/') {
            let p = format!("{}/", l.url.path());
            l.url.set_path(&p);
        }
        l
    }

    /// Refuses an output directory that exists as a local file (a usage
    /// error naming `flag`, before any work is done). Object stores have no
    /// such conflict.
    pub fn check_output_dir(&self, flag: &str) -> Result<()> {
        if self.url.scheme() != "file" {
            return Ok(());
        }
        match self.url.to_file_path() {
            Ok(path) if path.is_file() => Err(Error::usage(format!(
                "{}: is a file, not a directory: an output is a directory; remove the file or pass another {flag}",
                path.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Writes `bytes` atomically, replacing any existing object.
    pub async fn put(&self, bytes: impl Into<PutPayload>) -> Result<()> {
        self.store.put(&self.path, bytes.into()).await.map_err(|e| Error::storage(self.display(), e))?;
        Ok(())
    }

    /// Writes `bytes` only if nothing exists here yet; returns false if something does.
    pub async fn put_if_absent(&self, bytes: impl Into<PutPayload>) -> Result<bool> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&self.path, bytes.into(), opts).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(Error::storage(self.display(), e)),
        }
    }

    /// Reads the whole object.
    pub async fn get(&self) -> Result<bytes::Bytes> {
        let r = self.store.get(&self.path).await.map_err(|e| Error::storage(self.display(), e))?;
        r.bytes().await.map_err(|e| Error::storage(self.display(), e))
    }

    /// Whether an object exists exactly here.
    pub async fn exists(&self) -> Result<bool> {
        match self.store.head(&self.path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::storage(self.display(), e)),
        }
    }

    /// Deletes the object here; missing is fine.
    pub async fn delete_if_exists(&self) -> Result<()> {
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::storage(self.display(), e)),
        }
    }

    /// Lists every object at or below this location (recursively), sorted by path.
    pub async fn list_recursive(&self) -> Result<Vec<ObjectMeta>> {
        let prefix = if self.path.as_ref().is_empty() { None } else { Some(&self.path) };
        let mut v: Vec<ObjectMeta> =
            self.store.list(prefix).try_collect().await.map_err(|e| Error::storage(self.display(), e))?;
        v.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(v)
    }

    /// A multipart writer that makes the object visible only when finished.
    pub fn buf_writer(&self) -> object_store::buffered::BufWriter {
        object_store::buffered::BufWriter::new(self.store(), self.path.clone())
    }

    /// The URL of an object in this location's store, for messages.
    pub fn object_display(&self, object: &Path) -> String {
        if self.url.scheme() == "file" {
            format!("/{object}")
        } else {
            let mut u = self.store_url();
            u.set_path(&format!("/{object}"));
            u.to_string()
        }
    }
}

/// What to set when S3 has no credentials.
const S3_CREDENTIALS_HELP: &str = "Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for \
     temporary keys), or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or run with an instance or task role; \
     AWS_PROFILE and ~/.aws are not read: export a profile's keys with \
     `eval \"$(aws configure export-credentials --profile NAME --format env)\"`";

/// Whether the environment gives S3 a credential source other than the
/// instance-metadata service (or asks for unsigned requests).
fn has_s3_credentials(builder: &AmazonS3Builder) -> bool {
    let set = |key: AmazonS3ConfigKey| builder.get_config_value(&key).is_some_and(|v| !v.trim().is_empty());
    set(AmazonS3ConfigKey::AccessKeyId)
        || set(AmazonS3ConfigKey::SecretAccessKey)
        || set(AmazonS3ConfigKey::WebIdentityTokenFile)
        || set(AmazonS3ConfigKey::ContainerCredentialsRelativeUri)
        || set(AmazonS3ConfigKey::ContainerCredentialsFullUri)
        || builder.get_config_value(&AmazonS3ConfigKey::SkipSignature).is_some_and(|v| v.trim() == "true")
}

/// `AWS_EC2_METADATA_DISABLED=true`, as the AWS SDKs and CLI read it.
fn metadata_disabled() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The S3 endpoint in use, for messages: scheme, host and port only.
fn s3_endpoint() -> String {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .iter()
        .find_map(|k| std::env::var(k).ok())
        .and_then(|e| Url::parse(&e).ok())
        .map(|u| {
            format!(
                "{}://{}",
                u.scheme(),
                u.host_str()
                    .map(|h| format!("{h}{}", u.port().map(|p| format!(":{p}")).unwrap_or_default()))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "AWS's default endpoint".to_string())
}

/// Turns an object store failure whose cause is the setup, not the moment,
/// into a usage error saying what to set; adds a hint to one that may be
/// either. `None`: report the failure as it is.
pub(crate) fn explain_store_failure(url: &str, message: &str) -> Option<Error> {
    let s3 = url.starts_with("s3://") || url.starts_with("s3a://");
    if !s3 {
        return None;
    }
    if message.contains("/latest/api/token") || message.contains("/latest/meta-data/") {
        return Some(Error::usage(format!(
            "{url}: no AWS credentials: the instance-metadata service gave none ({}). {S3_CREDENTIALS_HELP}",
            first_line(message)
        )));
    }
    if message.contains("NoSuchBucket") {
        let bucket = Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        return Some(Error::usage(format!(
            "{url}: bucket {bucket:?} does not exist at {}: check the bucket name, AWS_ENDPOINT and AWS_REGION",
            s3_endpoint()
        )));
    }
    let m = message.to_ascii_lowercase();
    if m.contains("error sending request") || m.contains("connection refused") || m.contains("dns error") {
        return Some(Error::Storage {
            url: url.to_string(),
            message: format!(
                "{message}; cannot reach the S3 endpoint {}: check AWS_ENDPOINT (or AWS_ENDPOINT_URL) and the network; \
                 a rerun retries ([storage] in docs/config.md)",
                s3_endpoint()
            ),
        });
    }
    None
}

fn first_line(message: &str) -> &str {
    let line = message.lines().next().unwrap_or_default();
    line.char_indices().nth(300).map(|(i, _)| &line[..i]).unwrap_or(line)
}

/// One in-memory store per process, so `memory://` locations written by one
/// stage can be read by the next (used by tests and dry runs).
fn memory_store() -> Arc<dyn ObjectStore> {
    static STORE: std::sync::OnceLock<Arc<InMemory>> = std::sync::OnceLock::new();
    STORE.get_or_init(|| Arc::new(InMemory::new())).clone()
}

/// Splits `text` at the first path segment holding a glob character.
fn split_glob(text: &str) -> (&str, Option<&str>) {
    let glob_start = text.find(['*', '?', '[']);
    match glob_start {
        Some(i) => {
            let seg_start = text[..i].rfind('/').map(|p| p + 1).unwrap_or(0);
            (&text[..seg_start], Some(&text[seg_start..]))
        }
        None => (text, None),
    }
}

fn local_url(path: &str) -> Result<Url> {
    let p = if path.is_empty() { std::path::Path::new(".") } else { std::path::Path::new(path) };
    let abs = std::path::absolute(p).map_err(|e| Error::io(path, e))?;
    // A URL path cannot hold `..` segments (object_store refuses them), so
    // `../shared/data/events.parquet` is resolved here, lexically, as a shell does.
    let mut resolved = std::path::PathBuf::new();
    for part in abs.components() {
        match part {
            std::path::Component::ParentDir => {
                resolved.pop();
            }
            std::path::Component::CurDir => {}
            other => resolved.push(other),
        }
    }
    let abs = resolved;
    let is_dir = path.ends_with('/') || path.is_empty() || abs.is_dir();
    let url = if is_dir { Url::from_directory_path(&abs) } else { Url::from_file_path(&abs) };
    url.map_err(|_| Error::usage(format!("{path}: cannot turn this path into a file URL")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_hidden_and_other_text_kept() {
        assert_eq!(without_credentials("http://ops:pw@gw:9091/metrics/job/x"), "http://***@gw:9091/metrics/job/x");
        assert_eq!(without_credentials("https://token@host/a"), "https://***@host/a");
        assert_eq!(without_credentials("s3://bucket/logs/"), "s3://bucket/logs/");
        assert_eq!(without_credentials("../shared/data"), "../shared/data");
        assert_eq!(without_credentials("sentences"), "sentences");
    }

    #[test]
    fn globs_are_split_off_at_the_segment() {
        assert_eq!(split_glob("s3://b/logs/dt=*/part-*.parquet"), ("s3://b/logs/", Some("dt=*/part-*.parquet")));
        assert_eq!(split_glob("data/events"), ("data/events", None));
        assert_eq!(split_glob("*.parquet"), ("", Some("*.parquet")));
    }

    #[test]
    fn relative_paths_with_parent_segments_resolve() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo")).unwrap();
        std::fs::write(dir.path().join("events.parquet"), b"x").unwrap();
        let text = format!("{}/repo/../events.parquet", dir.path().display());
        let l = Location::parse(&text).unwrap();
        assert_eq!(l.display(), dir.path().join("events.parquet").display().to_string());
        let l = Location::parse(&format!("{}/./repo/./", dir.path().display())).unwrap();
        assert!(l.url().path().ends_with("/repo/"), "{}", l.url());
    }

    #[test]
    fn local_paths_become_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let l = Location::parse(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(l.url().scheme(), "file");
        assert!(l.url().path().ends_with('/'), "an existing directory is a collection");
        assert_eq!(l.join("a.parquet").display(), dir.path().join("a.parquet").display().to_string());
    }

    #[test]
    fn unknown_scheme_is_a_usage_error() {
        let e = Location::parse("ftp://x/y").unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        assert!(e.to_string().contains("unsupported scheme"), "{e}");
    }

    #[tokio::test]
    async fn put_is_atomic_and_put_if_absent_refuses_twice() {
        let dir = tempfile::tempdir().unwrap();
        let l = Location::parse(dir.path().to_str().unwrap()).unwrap().join("sub/x.json");
        assert!(!l.exists().await.unwrap());
        l.put(b"1".to_vec()).await.unwrap();
        assert_eq!(&l.get().await.unwrap()[..], b"1");
        assert!(!l.put_if_absent(b"2".to_vec()).await.unwrap());
        l.delete_if_exists().await.unwrap();
        assert!(l.put_if_absent(b"3".to_vec()).await.unwrap());
        l.delete_if_exists().await.unwrap();
        l.delete_if_exists().await.unwrap();
    }
}
