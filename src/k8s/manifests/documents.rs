//! Splits manifest text into documents, unpacks `List`s and deserializes the kinds kubenat
//! uses; everything else is skipped.

use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::debug;

use super::{object_label, quoted, Loaded, Problem, Source, Sourced};

/// How deeply `List`s may nest inside `List`s.
const MAX_LIST_DEPTH: usize = 8;

/// One YAML document: its 1-based number, the 0-based file line it starts on, and its text.
#[derive(Debug, PartialEq)]
pub(super) struct Chunk<'a> {
    pub number: usize,
    pub first_line: usize,
    pub text: &'a str,
}

/// Reads every document of `text` into `loaded`.
pub(super) fn load_text(text: &str, file: &Path, loaded: &mut Loaded) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let is_json_file = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let starts_like_json = matches!(text.trim_start().chars().next(), Some('{' | '['));
    if is_json_file || starts_like_json {
        let (values, error) = json_stream(text);
        if error.is_none() || is_json_file {
            for (index, value) in values.into_iter().enumerate() {
                classify(value, &source(file, index + 1), "", 0, loaded);
            }
            if let Some((number, err)) = error {
                let problem = Problem::new(format!("invalid JSON: {err}"));
                loaded.problems.push(problem.at(Some(&source(file, number))));
            }
            return;
        }
    }
    for chunk in split_yaml(text) {
        load_yaml_document(&chunk, &source(file, chunk.number), loaded);
    }
}

fn source(file: &Path, document: usize) -> Source {
    Source { file: file.to_path_buf(), document }
}

/// Parses a stream of JSON values; on error returns the values before it and the error with
/// the number of the document it hit.
fn json_stream(text: &str) -> (Vec<Value>, Option<(usize, serde_json::Error)>) {
    let mut values = Vec::new();
    for result in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match result {
            Ok(value) => values.push(value),
            Err(err) => {
                let number = values.len() + 1;
                return (values, Some((number, err)));
            }
        }
    }
    (values, None)
}

/// Splits YAML text at `---` document markers (and `...` end markers). Blank text before the
/// first marker is not a document; an explicit `---` always starts one, even an empty one.
pub(super) fn split_yaml(text: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let (mut start, mut start_line, mut explicit) = (0, 0, false);
    let (mut pos, mut line_no) = (0, 0);
    for line in text.split_inclusive('\n') {
        let document_start = is_marker(line, "---");
        if document_start || is_marker(line, "...") {
            push_chunk(&mut chunks, &text[start..pos], start_line, explicit);
            if document_start {
                (start, start_line) = (pos + 3, line_no);
            } else {
                (start, start_line) = (pos + line.len(), line_no + 1);
            }
            explicit = document_start;
        }
        pos += line.len();
        line_no += 1;
    }
    push_chunk(&mut chunks, &text[start..], start_line, explicit);
    chunks
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker).is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

fn push_chunk<'a>(chunks: &mut Vec<Chunk<'a>>, text: &'a str, first_line: usize, explicit: bool) {
    let blank = text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line.starts_with('%')
    });
    if explicit || !blank {
        chunks.push(Chunk { number: chunks.len() + 1, first_line, text });
    }
}

fn load_yaml_document(chunk: &Chunk<'_>, source: &Source, loaded: &mut Loaded) {
    let fail = |loaded: &mut Loaded, reason: String| {
        loaded.problems.push(Problem::new(reason).at(Some(source)));
    };
    if super::guard::too_deep(chunk.text) {
        let depth = super::guard::MAX_FLOW_DEPTH;
        return fail(loaded, format!("invalid YAML: flow collections nested more than {depth} deep"));
    }
    let mut value: serde_yaml::Value = match serde_yaml::from_str(chunk.text) {
        Ok(value) => value,
        Err(err) => {
            let message = shift_lines(&err.to_string(), chunk.first_line);
            return fail(loaded, format!("invalid YAML: {message}"));
        }
    };
    let api_version = value.get("apiVersion").and_then(serde_yaml::Value::as_str);
    if api_version.is_none() || value.get("kind").and_then(serde_yaml::Value::as_str).is_none() {
        debug!(%source, "document is not a Kubernetes object, skipping");
        return;
    }
    if let Err(err) = value.apply_merge() {
        return fail(loaded, format!("invalid YAML merge key: {err}"));
    }
    match serde_json::to_value(&value) {
        Ok(json) => classify(json, source, "", 0, loaded),
        Err(err) => fail(loaded, format!("document cannot be read as a Kubernetes object: {err}")),
    }
}

/// Adds `offset` to every `line N` in a parser message so lines count from the file's start.
pub(super) fn shift_lines(message: &str, offset: usize) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("line ") {
        let (before, after) = rest.split_at(at + "line ".len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(line) => out.push_str(&line.saturating_add(offset).to_string()),
            Err(_) => out.push_str(&after[..digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Sorts one JSON value into `loaded`: a kind we use, a list to unpack, or something to skip.
/// `path` names the list item (`items[3]`) for messages.
fn classify(mut value: Value, source: &Source, path: &str, depth: usize, loaded: &mut Loaded) {
    let Some(object) = value.as_object_mut() else {
        debug!(%source, path, "document is not a mapping, skipping");
        return;
    };
    let api_version = object.get("apiVersion").and_then(Value::as_str).map(str::to_owned);
    let kind = object.get("kind").and_then(Value::as_str).map(str::to_owned);
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        debug!(%source, path, "document has no apiVersion or kind, skipping");
        return;
    };
    let is_list = kind == "List" || (kind.ends_with("List") && object.contains_key("items"));
    if is_list {
        let items = object.remove("items").unwrap_or(Value::Null);
        return unpack_list(items, &api_version, &kind, source, path, depth, loaded);
    }
    let objects = &mut loaded.objects;
    let problems = &mut loaded.problems;
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => read(value, &kind, true, source, path, problems, &mut objects.services),
        ("v1", "Endpoints") => read(value, &kind, true, source, path, problems, &mut objects.endpoints),
        ("v1", "Node") => read(value, &kind, false, source, path, problems, &mut objects.nodes),
        ("discovery.k8s.io/v1" | "discovery.k8s.io/v1beta1", "EndpointSlice") => {
            object.insert("apiVersion".into(), Value::from("discovery.k8s.io/v1"));
            let slices = &mut objects.endpoint_slices;
            read(value, &kind, true, source, path, problems, slices);
        }
        _ => match unreadable_kind(&api_version, &kind) {
            Some(reason) => {
                let meta = object.get("metadata");
                let field = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
                let name = field("name").unwrap_or_default();
                let label = object_label(&kind, field("namespace"), name);
                let problem = Problem { source: None, object: Some(label), reason };
                problems.push(problem.at(Some(source)));
            }
            None => debug!(%source, path, api_version, kind, "kind not used by kubenat, skipping"),
        },
    }
}

/// The kinds kubenat reads, with the apiVersions it reads them in.
const READ_KINDS: [(&str, &str); 4] =
    [("Service", "v1"), ("Endpoints", "v1"), ("Node", "v1"), ("EndpointSlice", "discovery.k8s.io/v1")];

/// Why an object that looks meant for kubenat cannot be read: one of its kinds in another
/// apiVersion, or a kind one or two typos away from one (`Sevrice`). Other kinds (Deployments,
/// ConfigMaps, custom resources) are `None`: they are skipped quietly by design.
fn unreadable_kind(api_version: &str, kind: &str) -> Option<String> {
    let group = |version: &str| version.rsplit_once('/').map_or("", |(group, _)| group).to_string();
    if let Some((known, version)) = READ_KINDS.iter().find(|(known, _)| *known == kind) {
        // Same kind in another API group (a Knative Service) is not ours: quiet.
        return (group(api_version) == group(version)).then(|| {
            format!("unsupported apiVersion {} for {known} (expected {version}); skipped", quoted(api_version))
        });
    }
    let (known, _) = READ_KINDS.iter().find(|(known, _)| kind.len() >= 4 && edit_distance(kind, known) <= 2)?;
    Some(format!("unknown kind {}; did you mean {known}? skipped", quoted(kind)))
}

/// Levenshtein distance over ASCII-case-folded characters; only used on short kind names.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.to_lowercase().chars().collect(), b.to_lowercase().chars().collect());
    if a.len().abs_diff(b.len()) > 2 || a.len() > 64 {
        return 3;
    }
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

fn unpack_list(
    items: Value,
    api_version: &str,
    kind: &str,
    source: &Source,
    path: &str,
    depth: usize,
    loaded: &mut Loaded,
) {
    let items = match items {
        Value::Array(items) => items,
        Value::Null => return,
        other => {
            let reason = format!("{path}{kind}: items is not a list but {}", json_type(&other));
            return loaded.problems.push(Problem::new(reason).at(Some(source)));
        }
    };
    if depth >= MAX_LIST_DEPTH {
        let reason = format!("{path}{kind}: lists nested more than {MAX_LIST_DEPTH} deep");
        return loaded.problems.push(Problem::new(reason).at(Some(source)));
    }
    let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
    for (index, mut item) in items.into_iter().enumerate() {
        if let (Some(item_kind), Some(object)) = (item_kind, item.as_object_mut()) {
            object.entry("apiVersion").or_insert_with(|| Value::from(api_version));
            object.entry("kind").or_insert_with(|| Value::from(item_kind));
        }
        let item_path = format!("{path}items[{index}]: ");
        classify(item, source, &item_path, depth + 1, loaded);
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Deserializes one object of a known kind; a namespaced object without a namespace gets
/// `default`. A wrong shape becomes a problem naming the object if its name is readable.
fn read<T>(
    value: Value,
    kind: &str,
    namespaced: bool,
    source: &Source,
    path: &str,
    problems: &mut Vec<Problem>,
    out: &mut Vec<Sourced<T>>,
) where
    T: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let meta = value.get("metadata");
    let field = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str).map(str::to_owned);
    let (name, namespace) = (field("name"), field("namespace").filter(|ns| !ns.is_empty()));
    match serde_json::from_value::<T>(value) {
        Ok(mut object) => {
            if namespaced && object.metadata().namespace.as_deref().is_none_or(str::is_empty) {
                object.metadata_mut().namespace = Some("default".to_string());
            }
            out.push(Sourced { source: source.clone(), object });
        }
        Err(err) => {
            let problem = match name {
                Some(name) => {
                    let ns = namespaced.then(|| namespace.unwrap_or_else(|| "default".into()));
                    let label = object_label(kind, ns.as_deref(), &name);
                    Problem { source: None, object: Some(label), reason: err.to_string() }
                }
                None => Problem::new(format!("{path}{kind} without a readable name: {err}")),
            };
            problems.push(problem.at(Some(source)));
        }
    }
}
