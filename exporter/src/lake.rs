//! The lake's object store and the uploader that moves complete Parquet
//! files from the spool to it.
//!
//! `lake_url`: empty (`<data_dir>/lake`), a path or `file:///path` (a local
//! directory), or `az://container/prefix` (Azure Blob Storage). Azure
//! credentials come from `AZURE_STORAGE_CONNECTION_STRING` (also Azurite's
//! `BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;…` form), else
//! `AZURE_STORAGE_ACCOUNT_NAME` + `AZURE_STORAGE_ACCOUNT_KEY` (or a SAS),
//! else a workload identity (`AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`,
//! `AZURE_TENANT_ID`) or the VM's managed identity.
//!
//! Uploads are idempotent (a file's object name is its spool name), so a
//! crash between upload and removal from the spool uploads it again to the
//! same name: never twice. A file becomes visible only when complete: the
//! local store writes a temporary file and renames it; Azure commits the
//! block list at the end of a multipart upload.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use object_store::{
    ObjectStore,
    azure::{AzureConfigKey, MicrosoftAzureBuilder},
    buffered::BufWriter,
    local::LocalFileSystem,
    path::Path as ObjectPath,
};
use tally_core::{lake::Spool, metric_names};

use crate::delivery::{Backoff, CallError};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Reads an environment variable (credentials).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// An opened lake: the store, the prefix inside it, and a description
/// without secrets for logs.
#[derive(Clone)]
pub struct Lake {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    pub description: String,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

/// The variables passed on to the Azure client when set, by object_store's
/// names for them (lowercase).
const AZURE_VARS: [&str; 9] = [
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_SAS_KEY",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_MSI_ENDPOINT",
];

/// Opens the lake named by `url` (see the module docs).
pub fn open_lake(url: &str, data_dir: &Path, env: EnvLookup<'_>) -> Result<Lake, String> {
    let local = |dir: PathBuf| -> Result<Lake, String> {
        std::fs::create_dir_all(&dir).map_err(|e| format!("lake_url: cannot create {}: {e}", dir.display()))?;
        let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| format!("lake_url: {}: {e}", dir.display()))?;
        Ok(Lake {
            store: Arc::new(fs),
            prefix: ObjectPath::default(),
            description: format!("file://{}", dir.display()),
        })
    };
    if url.is_empty() {
        return local(data_dir.join("lake"));
    }
    if let Some(path) = url.strip_prefix("file://") {
        return local(PathBuf::from(path));
    }
    let Some(rest) = url.strip_prefix("az://").or_else(|| url.strip_prefix("azure://")) else {
        if url.contains("://") {
            return Err(format!("lake_url: {url:?}: expected a path, file:///path or az://container/prefix"));
        }
        return local(PathBuf::from(url));
    };
    let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if container.is_empty() {
        return Err("lake_url: az://<container>/<prefix> needs a container".into());
    }
    let mut b = MicrosoftAzureBuilder::new().with_container_name(container);
    for var in AZURE_VARS {
        if let Some(v) = env(var).filter(|v| !v.is_empty())
            && let Ok(key) = AzureConfigKey::from_str(&var.to_ascii_lowercase())
        {
            b = b.with_config(key, v);
        }
    }
    let mut endpoint = "the account's default endpoint".to_owned();
    if let Some(cs) = env("AZURE_STORAGE_CONNECTION_STRING").filter(|v| !v.is_empty()) {
        let parsed = ConnectionString::parse(&cs)?;
        if let Some(a) = parsed.account {
            b = b.with_account(a);
        }
        if let Some(k) = parsed.key {
            b = b.with_access_key(k);
        }
        if let Some(sas) = parsed.sas {
            b = b.with_config(AzureConfigKey::SasKey, sas);
        }
        if let Some(e) = parsed.blob_endpoint {
            b = b.with_allow_http(e.starts_with("http://"));
            endpoint = e.clone();
            b = b.with_endpoint(e);
        } else if parsed.development {
            b = b.with_use_emulator(true);
            endpoint = "Azurite at 127.0.0.1:10000".into();
        }
    }
    let store = b.build().map_err(|e| format!("lake_url: {url}: {e}"))?;
    let prefix = ObjectPath::parse(prefix.trim_matches('/')).map_err(|e| format!("lake_url: prefix: {e}"))?;
    let description = format!("az://{container}/{prefix} ({endpoint})");
    Ok(Lake { store: Arc::new(store), prefix, description })
}

/// The parts of an Azure Storage connection string tally uses.
#[derive(Debug, Default, PartialEq)]
pub struct ConnectionString {
    pub account: Option<String>,
    pub key: Option<String>,
    pub sas: Option<String>,
    pub blob_endpoint: Option<String>,
    pub development: bool,
}

impl ConnectionString {
    pub fn parse(s: &str) -> Result<ConnectionString, String> {
        let mut c = ConnectionString::default();
        let (mut protocol, mut suffix) = ("https".to_owned(), None::<String>);
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or("AZURE_STORAGE_CONNECTION_STRING: expected Key=Value pairs separated by ;")?;
            match k {
                "AccountName" => c.account = Some(v.to_owned()),
                "AccountKey" => c.key = Some(v.to_owned()),
                "SharedAccessSignature" => c.sas = Some(v.to_owned()),
                "BlobEndpoint" => c.blob_endpoint = Some(v.trim_end_matches('/').to_owned()),
                "DefaultEndpointsProtocol" => protocol = v.to_owned(),
                "EndpointSuffix" => suffix = Some(v.to_owned()),
                "UseDevelopmentStorage" => c.development = v.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        if c.blob_endpoint.is_none()
            && let (Some(a), Some(sfx)) = (&c.account, &suffix)
        {
            c.blob_endpoint = Some(format!("{protocol}://{a}.blob.{sfx}"));
        }
        if c.account.is_none() && !c.development {
            return Err("AZURE_STORAGE_CONNECTION_STRING: no AccountName".into());
        }
        Ok(c)
    }
}

/// Moves complete files from the spool to the lake.
pub struct Uploader {
    pub lake: Lake,
    pub spool: Arc<Spool>,
    pub max_backoff: Duration,
}

impl Uploader {
    /// Uploads until `writer_done` is cancelled (the writer has closed its
    /// last files), then until the spool is empty or `stop` is cancelled
    /// (the shutdown deadline). Files left over are uploaded after restart.
    pub async fn run(self, writer_done: CancellationToken, stop: CancellationToken) {
        let backoff = Backoff::exponential(Duration::from_millis(200), self.max_backoff);
        let mut failures = 0u32;
        loop {
            let finishing = writer_done.is_cancelled();
            let wait = match self.pass().await {
                Ok(0) if finishing => return,
                Ok(_) => {
                    failures = 0;
                    Duration::from_millis(500)
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff.wait(failures, e.retry_after()).unwrap_or(self.max_backoff);
                    metrics::counter!(metric_names::LAKE_UPLOAD_ERRORS).increment(1);
                    if e.halts() {
                        tracing::error!(lake = %self.lake.description, error = %e, retry_in = ?wait, "the object store refuses tally's credentials; files stay in the spool");
                    } else {
                        tracing::warn!(lake = %self.lake.description, error = %e, retry_in = ?wait, "lake upload failed; the file stays in the spool");
                    }
                    wait
                }
            };
            tokio::select! {
                _ = stop.cancelled() => {
                    let left = self.scan().await.len();
                    if left > 0 {
                        tracing::warn!(files = left, spool = %self.spool.dir().display(), "lake files not uploaded before exit; they are uploaded after restart");
                    }
                    return;
                }
                _ = tokio::time::sleep(wait) => {}
                _ = writer_done.cancelled(), if !finishing => {}
            }
        }
    }

    /// Uploads every complete file in the spool, oldest first; stops at the
    /// first failure. Returns how many files it found.
    pub async fn pass(&self) -> Result<usize, CallError> {
        // The scan also re-counts the spool's bytes, so a file removed behind
        // its back cannot leave the count (and the back-pressure it drives)
        // wrong for longer than a pass.
        let files = self.scan().await;
        let n = files.len();
        for (path, size) in files {
            let rel = path.strip_prefix(self.spool.dir()).map_err(|e| CallError::refused(e.to_string()))?;
            let rel = rel
                .to_str()
                .ok_or_else(|| CallError::refused("spool file name is not UTF-8"))?
                .replace(std::path::MAIN_SEPARATOR, "/");
            let location = if self.lake.prefix.as_ref().is_empty() {
                ObjectPath::parse(&rel)
            } else {
                ObjectPath::parse(format!("{}/{rel}", self.lake.prefix))
            }
            .map_err(|e| CallError::refused(format!("{rel}: {e}")))?;
            self.upload(&path, &location)
                .await
                .map_err(|e| CallError { message: format!("{rel}: {}", e.message), ..e })?;
            if let Err(e) = tokio::fs::remove_file(&path).await {
                return Err(CallError::retriable(format!("{rel}: uploaded, but cannot remove it from the spool: {e}")));
            }
            self.spool.removed(size);
            metrics::counter!(metric_names::LAKE_FILES_UPLOADED).increment(1);
            metrics::counter!(metric_names::LAKE_BYTES_UPLOADED).increment(size);
        }
        Ok(n)
    }

    /// The spool's complete files, walked off the async runtime (a spool
    /// can hold thousands of files).
    async fn scan(&self) -> Vec<(PathBuf, u64)> {
        let spool = self.spool.clone();
        tokio::task::spawn_blocking(move || spool.complete_files()).await.unwrap_or_default()
    }

    async fn upload(&self, path: &Path, location: &ObjectPath) -> Result<(), CallError> {
        let mut file = tokio::fs::File::open(path).await.map_err(|e| CallError::retriable(e.to_string()))?;
        // Multipart above 8 MiB (Azure: blocks, committed at the end).
        let mut w = BufWriter::with_capacity(self.lake.store.clone(), location.clone(), 8 << 20);
        if let Err(e) = tokio::io::copy(&mut file, &mut w).await {
            let _ = w.abort().await;
            return Err(io_error(e));
        }
        w.shutdown().await.map_err(io_error)
    }
}

/// What an object-store failure means. object_store retries transient
/// HTTP errors itself; what reaches here has run out of those retries
/// (still worth another pass later) unless the store refuses tally's
/// credentials.
fn io_error(e: std::io::Error) -> CallError {
    let refused = matches!(
        e.get_ref().and_then(|inner| inner.downcast_ref::<object_store::Error>()),
        Some(object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. })
    ) || e.kind() == std::io::ErrorKind::PermissionDenied;
    if refused { CallError::halt(e.to_string()) } else { CallError::retriable(e.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_of_azure_and_azurite() {
        let azurite = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;";
        let c = ConnectionString::parse(azurite).unwrap();
        assert_eq!(c.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(c.blob_endpoint.as_deref(), Some("http://127.0.0.1:10000/devstoreaccount1"));
        assert!(c.key.unwrap().ends_with("GMGw=="));
        let azure = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net";
        assert_eq!(
            ConnectionString::parse(azure).unwrap().blob_endpoint.as_deref(),
            Some("https://acct.blob.core.windows.net")
        );
        assert!(ConnectionString::parse("UseDevelopmentStorage=true").unwrap().development);
        assert!(ConnectionString::parse("garbage").is_err());
    }

    #[test]
    fn urls_name_local_dirs_or_azure() {
        let dir = tempfile_dir();
        let none = |_: &str| None;
        let l = open_lake("", &dir, &none).unwrap();
        assert!(l.description.ends_with("/lake"));
        assert!(open_lake("s3://bucket/x", &dir, &none).unwrap_err().contains("expected a path"));
        let env = |k: &str| {
            (k == "AZURE_STORAGE_CONNECTION_STRING")
                .then(|| "AccountName=a;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/a".to_owned())
        };
        let az = open_lake("az://telemetry/prod/eu", &dir, &env).unwrap();
        assert_eq!(az.prefix.as_ref(), "prod/eu");
        assert!(az.description.starts_with("az://telemetry/prod/eu"));
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("tally-lake-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
