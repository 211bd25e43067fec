//! Splits manifest text into documents (a JSON stream, or YAML documents) and hands each to
//! `classify`; JSON goes through `json` (one pass, no value tree), YAML through a value.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::debug;

use super::classify::{classify, message, Document, Items, Undecoded};
use super::json::json_stream;
use super::{Loaded, Problem, Source};

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
                classify(value, &source(file, index + 1), loaded);
            }
            if let Some((number, reason)) = error {
                let problem = Problem::new(format!("invalid JSON: {reason}"));
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
        Ok(json) => classify(json, source, loaded),
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

/// A YAML document, as the JSON value it converts to.
impl Document for Value {
    fn is_mapping(&self) -> bool {
        self.is_object()
    }

    fn string(&self, key: &str) -> Option<Option<String>> {
        self.get(key).map(|v| v.as_str().map(str::to_owned))
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn take_items(&mut self) -> Items<Self> {
        match self.as_object_mut().and_then(|object| object.remove("items")) {
            Some(Value::Array(items)) => Items::List(items),
            None | Some(Value::Null) => Items::Null,
            Some(other) => Items::Not(json_type(&other)),
        }
    }

    fn metadata_string(&self, key: &str) -> Option<String> {
        self.get("metadata")?.get(key)?.as_str().map(str::to_owned)
    }

    fn decode<T: DeserializeOwned>(mut self) -> Result<T, Undecoded> {
        // Taken first: decoding moves the value's strings into the object.
        let (name, namespace) = (self.metadata_string("name"), self.metadata_string("namespace"));
        if let Some(object) = self.as_object_mut() {
            object.remove("apiVersion");
            object.remove("kind");
        }
        serde_json::from_value(self).map_err(|err| Undecoded { reason: message(&err), name, namespace })
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
