//! Label and field selectors as the apiserver parses and applies them to list and watch
//! requests. Pure: no store, no HTTP.

use serde_json::Value;

use super::status::{ApiError, Result};

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    /// `key`
    Exists(String),
    /// `!key`
    DoesNotExist(String),
    /// `key=value`, `key==value`
    Equals(String, String),
    /// `key!=value` (also matches objects without the label)
    NotEquals(String, String),
    /// `key in (a,b)`
    In(String, Vec<String>),
    /// `key notin (a,b)` (also matches objects without the label)
    NotIn(String, Vec<String>),
}

/// A parsed `labelSelector`: all requirements must hold (comma = AND). Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Parses `!a,b=c,d!=e,f in (g,h),i notin (j),k`.
    pub fn parse(text: &str) -> Result<LabelSelector> {
        let requirements = split_top_level(text)
            .into_iter()
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(parse_requirement)
            .collect::<Result<_>>()?;
        Ok(LabelSelector { requirements })
    }

    /// Whether `object`'s `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.requirements.iter().all(|req| match req {
            LabelRequirement::Exists(key) => label(key).is_some(),
            LabelRequirement::DoesNotExist(key) => label(key).is_none(),
            LabelRequirement::Equals(key, value) => label(key) == Some(value.as_str()),
            LabelRequirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
            LabelRequirement::In(key, set) => label(key).is_some_and(|v| set.iter().any(|s| s == v)),
            LabelRequirement::NotIn(key, set) => label(key).is_none_or(|v| set.iter().all(|s| s != v)),
        })
    }
}

/// Splits on commas outside parentheses (`a in (x,y),b` → `a in (x,y)`, `b`).
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<LabelRequirement> {
    let invalid = || ApiError::bad_request(format!("unable to parse requirement: invalid label selector: {part:?}"));
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelRequirement::DoesNotExist(valid_key(key.trim()).ok_or_else(invalid)?));
    }
    for (op, negated) in [(" notin ", true), (" in ", false)] {
        if let Some((key, set)) = part.split_once(op) {
            let key = valid_key(key.trim()).ok_or_else(invalid)?;
            let set = set.trim().strip_prefix('(').and_then(|s| s.strip_suffix(')')).ok_or_else(invalid)?;
            let values = set.split(',').map(|v| v.trim().to_string()).collect();
            return Ok(if negated { LabelRequirement::NotIn(key, values) } else { LabelRequirement::In(key, values) });
        }
    }
    if let Some((key, value)) = part.split_once("!=") {
        let key = valid_key(key.trim()).ok_or_else(invalid)?;
        return Ok(LabelRequirement::NotEquals(key, valid_value(value.trim()).ok_or_else(invalid)?));
    }
    if let Some((key, value)) = part.split_once('=') {
        let key = valid_key(key.trim()).ok_or_else(invalid)?;
        let value = value.strip_prefix('=').unwrap_or(value).trim();
        return Ok(LabelRequirement::Equals(key, valid_value(value).ok_or_else(invalid)?));
    }
    Ok(LabelRequirement::Exists(valid_key(part).ok_or_else(invalid)?))
}

fn valid_key(key: &str) -> Option<String> {
    let ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    ok.then(|| key.to_string())
}

fn valid_value(value: &str) -> Option<String> {
    value.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)).then(|| value.to_string())
}

/// A field the apiserver lets every resource be selected by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

/// A parsed `fieldSelector` over `metadata.name` / `metadata.namespace` (`=`, `==`, `!=`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<(Field, bool, String)>,
}

impl FieldSelector {
    /// Parses `metadata.name=node-1,metadata.namespace!=kube-system`.
    pub fn parse(text: &str) -> Result<FieldSelector> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v.strip_prefix('=').unwrap_or(v))
            } else {
                return Err(ApiError::bad_request(format!("invalid selector: '{part}'; can't understand '{part}'")));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => return Err(ApiError::bad_request(format!("field label not supported: {other}"))),
            };
            requirements.push((field, equal, value.trim().to_string()));
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether `object` satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, equal, value)| {
            let key = match field {
                Field::Name => "name",
                Field::Namespace => "namespace",
            };
            let actual = object["metadata"][key].as_str().unwrap_or("");
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({ "metadata": { "name": "a", "namespace": "ns", "labels": labels } })
    }

    #[test]
    fn label_selector_operators() {
        let obj = labelled(json!({ "app": "web", "tier": "front" }));
        let yes = ["", "app", "!other", "app=web", "app==web", "app!=db", "other!=x", "app in (web,db)", "x notin (a)"];
        let no = ["other", "!app", "app=db", "app!=web", "app in (db)", "app notin (web, db)", "app,other"];
        for text in yes {
            assert!(LabelSelector::parse(text).unwrap().matches(&obj), "{text} should match");
        }
        for text in no {
            assert!(!LabelSelector::parse(text).unwrap().matches(&obj), "{text} should not match");
        }
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("a in x").is_err());
    }

    #[test]
    fn field_selector() {
        let obj = labelled(json!({}));
        assert!(FieldSelector::parse("metadata.name=a,metadata.namespace==ns").unwrap().matches(&obj));
        assert!(!FieldSelector::parse("metadata.name!=a").unwrap().matches(&obj));
        assert_eq!(FieldSelector::parse("spec.x=1").unwrap_err().code, 400);
    }
}
