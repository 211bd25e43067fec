//! Reading a `KubeProxyConfiguration` file as kube-proxy does: `apiVersion` and `kind` must name
//! the type; a field of the wrong type is an error naming the field; an unknown field is not an
//! error (kube-proxy decodes strictly, and when that fails only on unknown or duplicate fields
//! it decodes again leniently and logs a warning) — it is returned for the caller to warn about,
//! and so is a duplicate key (the last one wins, as in kube-proxy's lenient pass). `null` is the
//! same as an absent field, as in Go.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::options::DuplicateKeyPolicy;

use super::types::{KubeProxyConfiguration, API_VERSION, KIND};
use super::Error;

/// The versions of the type kubenat reads.
pub const API_VERSIONS: [&str; 1] = [API_VERSION];

/// A decoded file and what kube-proxy's lenient pass would have warned about.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The configuration as written (not defaulted).
    pub config: KubeProxyConfiguration,
    /// Dotted paths of fields the type does not have (e.g. `iptables.syncPeriodd`), and keys
    /// given twice (`duplicate key: mode`).
    pub unknown_fields: Vec<String>,
}

/// The document as JSON: strictly, or (when only a duplicate key stops that) with the last of
/// the duplicates winning; the duplicate is returned for a warning.
fn read_document(text: &str) -> Result<(Value, Option<String>), String> {
    let strict = serde_saphyr::options! { duplicate_keys: DuplicateKeyPolicy::Error };
    let err = match serde_saphyr::from_str_with_options::<Value>(text, strict) {
        Ok(value) => return Ok((value, None)),
        Err(err) => err,
    };
    let serde_saphyr::Error::DuplicateMappingKey { key, .. } = err.without_snippet() else {
        return Err(one_line(&err.without_snippet()));
    };
    let key = key.clone().unwrap_or_else(|| "(complex)".into());
    let lenient = serde_saphyr::options! { duplicate_keys: DuplicateKeyPolicy::LastWins };
    let value =
        serde_saphyr::from_str_with_options::<Value>(text, lenient).map_err(|e| one_line(&e.without_snippet()))?;
    Ok((value, Some(format!("duplicate key {key}"))))
}

/// A parser error's first line (its message and position; the source snippet is left out).
fn one_line(err: &impl std::fmt::Display) -> String {
    let text = err.to_string();
    let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("not YAML");
    first.trim_start_matches("error: ").to_string()
}

/// Parses a `KubeProxyConfiguration` from YAML or JSON text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Decoded, Error> {
    let file_error = |reason: String| Error::File { path: path.to_string(), reason };
    let (mut value, duplicate) = read_document(text).map_err(file_error)?;
    if !value.is_object() {
        return Err(file_error("not a YAML or JSON object".into()));
    }
    strip_nulls(&mut value);
    check_type_meta(&value).map_err(file_error)?;
    let mut unknown_fields: Vec<String> = duplicate.into_iter().collect();
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(value, &mut track);
    let config = serde_ignored::deserialize(tracked, |ignored| unknown_fields.push(ignored.to_string()))
        .map_err(|e| file_error(format!("{}: {e}", field_path(&track.path().to_string()))))?;
    Ok(Decoded { config, unknown_fields })
}

/// Reads and parses `--config`.
pub fn load_file(path: &Path) -> Result<Decoded, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::File { path: shown.clone(), reason: e.to_string() })?;
    parse(&text, &shown)
}

/// `serde_path_to_error`'s path, or a word for the top level.
fn field_path(path: &str) -> String {
    if path.is_empty() || path == "." {
        "the document".to_string()
    } else {
        path.to_string()
    }
}

/// `apiVersion` and `kind` as kube-proxy's decoder requires them.
fn check_type_meta(value: &Value) -> Result<(), String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct TypeMeta {
        api_version: Option<Value>,
        kind: Option<Value>,
    }
    let meta = TypeMeta::deserialize(value).map_err(|e| e.to_string())?;
    match meta.kind.as_ref().map(Value::as_str) {
        Some(Some(KIND)) => {}
        None => return Err(format!("kind is missing: expected {KIND}")),
        Some(other) => return Err(format!("kind is {}, expected {KIND}", shown(other, meta.kind.as_ref()))),
    }
    match meta.api_version.as_ref().map(Value::as_str) {
        Some(Some(version)) if API_VERSIONS.contains(&version) => Ok(()),
        None => Err(format!("apiVersion is missing: expected {API_VERSION}")),
        Some(other) => {
            Err(format!("apiVersion {} is not {}", shown(other, meta.api_version.as_ref()), API_VERSIONS.join(" or ")))
        }
    }
}

fn shown(text: Option<&str>, value: Option<&Value>) -> String {
    match text {
        Some(text) => format!("{text:?}"),
        None => value.map(Value::to_string).unwrap_or_default(),
    }
}

/// Removes `key: null` entries at every depth (Go decodes them as "not set").
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::duration::GoDuration;

    const HEAD: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

    #[test]
    fn reads_fields_nulls_and_unknown_fields() {
        let text = format!(
            "{HEAD}clusterCIDR: 10.244.0.0/16\niptables:\n  masqueradeBit: null\n  syncPeriod: 0s\n  \
             syncPeriodd: 10s\nconntrack: {{maxPerCore: 0, min: null}}\nmode: \"\"\nfancy: 1\n"
        );
        let d = parse(&text, "config.conf").unwrap();
        assert_eq!(d.config.cluster_cidr, "10.244.0.0/16");
        assert_eq!(d.config.iptables.masquerade_bit, None);
        assert_eq!(d.config.iptables.sync_period, GoDuration::ZERO);
        assert_eq!(d.config.conntrack.max_per_core, Some(0));
        assert_eq!(d.config.conntrack.min, None);
        assert_eq!(d.unknown_fields, ["fancy", "iptables.syncPeriodd"]);
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = |text: &str| parse(text, "x.yaml").unwrap_err().to_string();
        let e = err(&format!("{HEAD}iptables:\n  syncPeriod: 30\n"));
        assert!(e.contains("x.yaml") && e.contains("iptables.syncPeriod"), "{e}");
        let e = err(&format!("{HEAD}iptables:\n  syncPeriod: soon\n"));
        assert!(e.contains("iptables.syncPeriod") && e.contains("soon"), "{e}");
        let e = err(&format!("{HEAD}conntrack:\n  maxPerCore: many\n"));
        assert!(e.contains("conntrack.maxPerCore"), "{e}");
        let e = err("kind: KubeletConfiguration\napiVersion: kubeproxy.config.k8s.io/v1alpha1\n");
        assert!(e.contains("KubeletConfiguration"), "{e}");
        let e = err("apiVersion: v1\nkind: KubeProxyConfiguration\n");
        assert!(e.contains("apiVersion \"v1\""), "{e}");
        assert!(err("kind: KubeProxyConfiguration\n").contains("apiVersion is missing"));
        assert!(err("- a\n").contains("not a YAML or JSON object"));
        assert!(err("{").contains("x.yaml"));
    }

    #[test]
    fn duplicate_keys_last_wins_with_a_warning() {
        let d = parse(&format!("{HEAD}mode: userspace\nmode: iptables\n"), "c.yaml").unwrap();
        assert_eq!(d.config.mode, "iptables");
        assert_eq!(d.unknown_fields, ["duplicate key mode"]);
    }

    #[test]
    fn json_is_yaml() {
        let d = parse(
            r#"{"apiVersion":"kubeproxy.config.k8s.io/v1alpha1","kind":"KubeProxyConfiguration","mode":"iptables"}"#,
            "c.json",
        )
        .unwrap();
        assert_eq!(d.config.mode, "iptables");
    }
}
