//! Cloud object stores for the warehouse and the artifact store: `s3://bucket/prefix`,
//! `gs://bucket/prefix`, `az://container/prefix` (and the other URL forms object_store
//! recognizes), each behind its cargo feature (`s3`, `gcs`, `azure`). Credentials, region
//! and endpoint come from the environment, as object_store's `from_env` builders read it
//! (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`,
//! `AZURE_STORAGE_ACCOUNT_NAME`, ...): never from kiln.toml, which is committed.
//!
//! Kiln's commit protocol needs only atomic whole-object puts (a manifest, then the
//! pointer), which all three provide.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreScheme};

/// A cloud store opened from a URL.
#[derive(Debug)]
pub struct Remote {
    pub store: Arc<dyn ObjectStore>,
    /// The URL of the store's root, as DataFusion resolves it (`s3://bucket`).
    pub base_url: String,
    /// The location's path inside the store.
    pub prefix: Path,
}

/// Why a cloud location cannot be opened (the user's location or environment).
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("`{location}`: the `{scheme}://` store needs kiln built with the `{feature}` cargo feature")]
    NotCompiled { location: String, scheme: String, feature: &'static str },
    #[error("`{location}`: {source}")]
    Store {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("`{location}`: {source}")]
    Path {
        location: String,
        #[source]
        source: object_store::path::Error,
    },
}

/// Opens `location` if it is a cloud URL (`Ok(None)` otherwise). A cloud scheme whose
/// feature is not compiled in is an error that names the feature.
pub fn open_remote(location: &str) -> Result<Option<Remote>, RemoteError> {
    let Ok(url) = url::Url::parse(location) else { return Ok(None) };
    let Ok((scheme, path)) = ObjectStoreScheme::parse(&url) else { return Ok(None) };
    let feature = match scheme {
        ObjectStoreScheme::AmazonS3 => "s3",
        ObjectStoreScheme::GoogleCloudStorage => "gcs",
        ObjectStoreScheme::MicrosoftAzure => "azure",
        _ => return Ok(None),
    };
    let store = build(&scheme, location)?.ok_or_else(|| RemoteError::NotCompiled {
        location: location.to_owned(),
        scheme: url.scheme().to_owned(),
        feature,
    })?;
    let prefix = Path::parse(path).map_err(|source| RemoteError::Path { location: location.to_owned(), source })?;
    let base_url = url[..url::Position::BeforePath].to_owned();
    Ok(Some(Remote { store, base_url, prefix }))
}

/// The store for `location`, if its scheme's feature is compiled in.
#[allow(unused_variables)]
fn build(scheme: &ObjectStoreScheme, location: &str) -> Result<Option<Arc<dyn ObjectStore>>, RemoteError> {
    let fail = |source: object_store::Error| RemoteError::Store { location: location.to_owned(), source };
    Ok(match scheme {
        #[cfg(feature = "s3")]
        ObjectStoreScheme::AmazonS3 => {
            Some(Arc::new(object_store::aws::AmazonS3Builder::from_env().with_url(location).build().map_err(fail)?))
        }
        #[cfg(feature = "gcs")]
        ObjectStoreScheme::GoogleCloudStorage => Some(Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env().with_url(location).build().map_err(fail)?,
        )),
        #[cfg(feature = "azure")]
        ObjectStoreScheme::MicrosoftAzure => Some(Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env().with_url(location).build().map_err(fail)?,
        )),
        _ => None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn local_urls_are_not_remote_and_missing_features_are_named() {
        assert!(open_remote("file:///tmp/x").unwrap().is_none());
        assert!(open_remote("memory://").unwrap().is_none());
        assert!(open_remote("warehouse").unwrap().is_none());
        if !cfg!(feature = "gcs") {
            let e = open_remote("gs://bucket/wh").unwrap_err();
            assert_eq!(
                e.to_string(),
                "`gs://bucket/wh`: the `gs://` store needs kiln built with the `gcs` cargo feature"
            );
        }
    }
}
