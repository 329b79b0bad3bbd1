//! The `[archive]` section: where verified raw parts are kept for `cdrsync replay`.
//!
//! `url` is a folder (relative to the config file's folder, or `file:///abs`), or an
//! object-store URL (`s3://bucket/prefix`, `az://container/prefix`, `abfss://…`,
//! `gs://bucket/prefix`) opened by the same URL → store builder as the object sinks.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[archive]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchiveConfig {
    pub url: Option<String>,
}

impl RawArchiveConfig {
    /// The section's keys, for the unknown-key check and `CDRSYNC_ARCHIVE_URL`.
    pub const KEYS: &'static [(&'static str, crate::config::KeyKind)] =
        &[("url", crate::config::KeyKind::Str)];
}

/// A validated `[archive]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveConfig {
    /// A local folder, absolute.
    Dir { path: PathBuf },
    /// An object-store URL (`s3://`, `az://`, `abfss://`, `gs://`), opened by the object
    /// sinks' builder.
    Object { url: url::Url },
}

/// Object-store schemes the archive accepts, as the object sinks do.
const OBJECT_SCHEMES: [&str; 4] = ["s3", "az", "abfss", "gs"];

impl RawArchiveConfig {
    /// Checks `url`; the error is the rest of a sentence about `archive.url`.
    pub fn validate(self, base_dir: &Path) -> Result<ArchiveConfig, String> {
        let url = self.url.unwrap_or_default();
        let url = url.trim();
        if url.is_empty() {
            return Err(
                "is required in an [archive] section: a folder like \"./raw\" or an s3://… URL"
                    .into(),
            );
        }
        match url.split_once("://") {
            None => Ok(ArchiveConfig::Dir {
                path: absolute(base_dir, Path::new(url)),
            }),
            Some(("file", path)) if path.starts_with('/') => Ok(ArchiveConfig::Dir {
                path: PathBuf::from(path),
            }),
            Some(("file", _)) => Err(format!(
                "is `{url}`; a file:// URL must be absolute (file:///srv/raw), or write a plain folder like \"./raw\""
            )),
            Some((scheme, rest)) if OBJECT_SCHEMES.contains(&scheme) => {
                let parsed =
                    url::Url::parse(url).map_err(|e| format!("is not a valid URL: {e}"))?;
                if rest.split('/').next().unwrap_or("").is_empty() {
                    return Err(format!(
                        "is `{url}`, which names no bucket or container: write {scheme}://NAME/prefix"
                    ));
                }
                Ok(ArchiveConfig::Object { url: parsed })
            }
            Some((scheme, _)) => Err(format!(
                "uses `{scheme}://`; expected a folder, or one of s3://, az://, abfss://, gs://"
            )),
        }
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
    fn object_store_urls_are_kept_for_the_builder() {
        let c = validate(Some("s3://bucket/raw")).unwrap();
        assert!(matches!(c, ArchiveConfig::Object { url } if url.as_str() == "s3://bucket/raw"));
        assert!(validate(Some("az://container/raw")).is_ok());
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
                .contains("names no bucket")
        );
        assert!(
            validate(Some("file://raw"))
                .unwrap_err()
                .contains("must be absolute")
        );
    }
}
