//! The `[archive]` section: where verified raw parts are kept for `cdrsync replay`.
//!
//! `url` is a folder (relative to the config file's folder, or `file:///abs`), or an
//! object-store URL (`s3://bucket/prefix`, `az://container/prefix`, `abfss://…`,
//! `gs://bucket/prefix`) with the object sinks' keys (endpoint, region, credentials),
//! checked and opened exactly as an object sink is.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[archive]` as written: `url`, and for an object-store URL the object sinks' own keys
/// (endpoint, region, credentials as secret references…), which mean the same here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchiveConfig {
    pub url: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub account: Option<String>,
    pub account_key: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub tenant_id: Option<String>,
    pub service_account_key: Option<String>,
    #[serde(default)]
    pub use_emulator: bool,
    #[serde(default)]
    pub allow_http: bool,
}

impl RawArchiveConfig {
    /// The section's keys, for the unknown-key check and `CDRSYNC_ARCHIVE_<KEY>`.
    pub const KEYS: &'static [(&'static str, crate::config::KeyKind)] =
        crate::config::with_object_store_keys!("url": Str);

    /// The object-store keys given (for a folder archive, where none applies).
    fn object_keys_given(&self) -> Option<&'static str> {
        let given = [
            ("region", self.region.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("access_key_id", self.access_key_id.is_some()),
            ("secret_access_key", self.secret_access_key.is_some()),
            ("session_token", self.session_token.is_some()),
            ("account", self.account.is_some()),
            ("account_key", self.account_key.is_some()),
            ("client_id", self.client_id.is_some()),
            ("client_secret", self.client_secret.is_some()),
            ("tenant_id", self.tenant_id.is_some()),
            ("service_account_key", self.service_account_key.is_some()),
            ("use_emulator", self.use_emulator),
            ("allow_http", self.allow_http),
        ];
        given.iter().find(|(_, set)| *set).map(|(key, _)| *key)
    }
}

/// A validated `[archive]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveConfig {
    /// A local folder, absolute.
    Dir { path: PathBuf },
    /// A bucket or container below a prefix (`s3://`, `az://`, `abfss://`, `gs://`),
    /// configured and opened as an object sink is.
    #[cfg(feature = "object-store")]
    Object(Box<crate::sink::object::ObjectSinkConfig>),
}

/// Object-store schemes the archive accepts, as the object sinks do.
const OBJECT_SCHEMES: [&str; 4] = ["s3", "az", "abfss", "gs"];

impl RawArchiveConfig {
    /// Checks `url`; the error is the rest of a sentence about `archive.url`.
    pub fn validate(self, base_dir: &Path) -> Result<ArchiveConfig, String> {
        let url = self.url.clone().unwrap_or_default();
        let url = url.trim();
        if url.is_empty() {
            return Err(
                "is required in an [archive] section: a folder like \"./raw\" or an s3://… URL"
                    .into(),
            );
        }
        let folder = match url.split_once("://") {
            None => absolute(base_dir, Path::new(url)),
            Some(("file", path)) if path.starts_with('/') => PathBuf::from(path),
            Some(("file", _)) => {
                return Err(format!(
                    "is `{url}`; a file:// URL must be absolute (file:///srv/raw), or write a plain folder like \"./raw\""
                ));
            }
            Some((scheme, _)) if OBJECT_SCHEMES.contains(&scheme) => {
                return self.object(scheme, url, base_dir);
            }
            Some((scheme, _)) => {
                return Err(format!(
                    "uses `{scheme}://`; expected a folder, or one of s3://, az://, abfss://, gs://"
                ));
            }
        };
        if let Some(key) = self.object_keys_given() {
            return Err(format!(
                "is the folder `{url}`, where `archive.{key}` does not apply (it is for an s3://, az:// or gs:// archive)"
            ));
        }
        Ok(ArchiveConfig::Dir { path: folder })
    }

    /// An object-store archive: the object sinks' checks, with the kind from the scheme.
    #[cfg(feature = "object-store")]
    fn object(self, scheme: &str, url: &str, base_dir: &Path) -> Result<ArchiveConfig, String> {
        let kind = match scheme {
            "s3" => "s3",
            "gs" => "gcs",
            _ => "azure",
        };
        let raw = crate::sink::object::RawObjectSinkConfig {
            kind: kind.into(),
            name: Some(format!("archive {url}")),
            url: url.into(),
            region: self.region,
            endpoint: self.endpoint,
            access_key_id: self.access_key_id,
            secret_access_key: self.secret_access_key,
            session_token: self.session_token,
            account: self.account,
            account_key: self.account_key,
            client_id: self.client_id,
            client_secret: self.client_secret,
            tenant_id: self.tenant_id,
            service_account_key: self.service_account_key,
            use_emulator: self.use_emulator,
            allow_http: self.allow_http,
            file_format: None,
            // The object sinks' retry defaults.
            max_retries: None,
            retry_timeout: None,
        };
        raw.validate(base_dir)
            .map(|c| ArchiveConfig::Object(Box::new(c)))
            .map_err(|e| format!("is `{url}`: {e}"))
    }

    #[cfg(not(feature = "object-store"))]
    fn object(self, _scheme: &str, url: &str, _base_dir: &Path) -> Result<ArchiveConfig, String> {
        Err(format!(
            "is `{url}`: an object-store archive needs a cdrsync built with the `object-store` feature"
        ))
    }
}

/// `base_dir.join(p)` for a relative `p`, without `.` components.
fn absolute(base_dir: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    };
    joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(url: Option<&str>) -> Result<ArchiveConfig, String> {
        RawArchiveConfig {
            url: url.map(str::to_string),
            ..Default::default()
        }
        .validate(Path::new("/etc/cdrsync"))
    }

    #[test]
    fn a_relative_folder_is_resolved_against_the_config_folder() {
        assert_eq!(
            validate(Some("./raw")).unwrap(),
            ArchiveConfig::Dir {
                path: "/etc/cdrsync/raw".into()
            }
        );
        assert_eq!(
            validate(Some("/srv/raw")).unwrap(),
            ArchiveConfig::Dir {
                path: "/srv/raw".into()
            }
        );
        assert_eq!(
            validate(Some("file:///srv/raw")).unwrap(),
            ArchiveConfig::Dir {
                path: "/srv/raw".into()
            }
        );
    }

    #[test]
    fn object_store_urls_are_configured_like_an_object_sink() {
        let c = validate(Some("s3://bucket/raw")).unwrap();
        let ArchiveConfig::Object(o) = c else {
            panic!("an object archive")
        };
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("bucket", "raw"));
        let e = RawArchiveConfig {
            url: Some("s3://bucket/raw".into()),
            access_key_id: Some("AKID".into()),
            ..Default::default()
        }
        .validate(Path::new("/etc/cdrsync"))
        .unwrap_err();
        assert!(e.contains("secret_access_key"), "{e}");
        let e = RawArchiveConfig {
            url: Some("./raw".into()),
            region: Some("eu-west-1".into()),
            ..Default::default()
        }
        .validate(Path::new("/etc/cdrsync"))
        .unwrap_err();
        assert!(e.contains("`archive.region` does not apply"), "{e}");
    }

    const BASE: &str = "[cxone]\nbase_url = \"https://api.example.com\"\nclient_id = \"cid\"\nclient_secret = \"env:S\"\nrefresh_token = \"file:t\"\n";

    fn load(text: &str, env: &[(&str, &str)]) -> Result<crate::config::Config, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        crate::config::Config::from_toml_str(text, Path::new("/etc/cdrsync"), &lookup)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_section_is_optional_checked_and_overridable() {
        assert_eq!(load(BASE, &[]).unwrap().archive, None);
        let c = load(&format!("{BASE}[archive]\nurl = \"./raw\"\n"), &[]).unwrap();
        assert_eq!(
            c.archive,
            Some(ArchiveConfig::Dir {
                path: "/etc/cdrsync/raw".into()
            })
        );
        let c = load(BASE, &[("CDRSYNC_ARCHIVE_URL", "/srv/raw")]).unwrap();
        assert_eq!(
            c.archive,
            Some(ArchiveConfig::Dir {
                path: "/srv/raw".into()
            })
        );
        let e = load(&format!("{BASE}[archive]\npath = \"./raw\"\n"), &[]).unwrap_err();
        assert!(e.contains("unknown key `archive.path`"), "{e}");
        let e = load(&format!("{BASE}[archive]\nurl = \"ftp://x/raw\"\n"), &[]).unwrap_err();
        assert!(e.contains("`archive.url` uses `ftp://`"), "{e}");
    }

    #[test]
    fn bad_urls_say_what_to_write() {
        assert!(validate(None).unwrap_err().contains("is required"));
        assert!(validate(Some("")).unwrap_err().contains("is required"));
        assert!(
            validate(Some("http://x/raw"))
                .unwrap_err()
                .contains("`http://`")
        );
        assert!(
            validate(Some("s3:///raw"))
                .unwrap_err()
                .starts_with("is `s3:///raw`: ")
        );
        assert!(
            validate(Some("file://raw"))
                .unwrap_err()
                .contains("must be absolute")
        );
    }
}
