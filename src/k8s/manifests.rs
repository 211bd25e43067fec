//! Loads Services, EndpointSlices, Endpoints and Nodes from YAML/JSON files and directories
//! (multi-document, `List`s); it reports what it cannot read and does not interpret objects.

mod classify;
mod documents;
mod guard;
mod json;
#[cfg(test)]
mod tests;
mod text;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tracing::debug;

pub(crate) use text::{quoted, shown};

/// Files larger than this are reported instead of read (no manifest set is this big).
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Where an object came from: a file and the 1-based number of the document in it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// The file the object was read from.
    pub file: PathBuf,
    /// 1-based document number in a multi-document file; 0 means the file as a whole.
    pub document: usize,
}

impl fmt::Display for Source {
    /// `file.yaml#3`, or just `file.yaml` for document 0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.document != 0 {
            write!(f, "#{}", self.document)?;
        }
        Ok(())
    }
}

/// Something wrong with the input: the object (or value) it concerns was skipped, the rest kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file and document, when the input came from a file.
    pub source: Option<Source>,
    /// The object, as `Service default/web`, when it is known.
    pub object: Option<String>,
    /// What is wrong, naming the bad value.
    pub reason: String,
}

impl Problem {
    /// A problem with no source and no object yet.
    pub fn new(reason: impl Into<String>) -> Self {
        Problem { source: None, object: None, reason: reason.into() }
    }

    /// A problem about the object `kind namespace/name` (or `kind name` when cluster-scoped).
    pub fn about(kind: &str, namespace: Option<&str>, name: &str, reason: impl Into<String>) -> Self {
        Problem { source: None, object: Some(object_label(kind, namespace, name)), reason: reason.into() }
    }

    /// Sets the source if none is set yet.
    pub fn at(mut self, source: Option<&Source>) -> Self {
        if self.source.is_none() {
            self.source = source.cloned();
        }
        self
    }
}

impl fmt::Display for Problem {
    /// `file.yaml#2: Service default/web: <reason>`; missing parts are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(source) = &self.source {
            write!(f, "{source}: ")?;
        }
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Problem {}

/// `Service default/web`, `Node node-1`; names that are not plain are quoted and shortened.
pub fn object_label(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind} {}/{}", shown(ns), shown(name)),
        None => format!("{kind} {}", shown(name)),
    }
}

/// An object together with the file and document it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced<T> {
    /// Where the object came from.
    pub source: Source,
    /// The object; namespaced objects always have `metadata.namespace` set (default `default`).
    pub object: T,
}

/// Every object of a kind kubenat uses, in the order they were read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objects {
    /// core/v1 Services.
    pub services: Vec<Sourced<Service>>,
    /// discovery.k8s.io/v1 EndpointSlices (v1beta1 is read as v1).
    pub endpoint_slices: Vec<Sourced<EndpointSlice>>,
    /// core/v1 Endpoints.
    pub endpoints: Vec<Sourced<Endpoints>>,
    /// core/v1 Nodes.
    pub nodes: Vec<Sourced<Node>>,
}

impl Objects {
    /// Total number of objects of all kinds.
    pub fn len(&self) -> usize {
        self.services.len() + self.endpoint_slices.len() + self.endpoints.len() + self.nodes.len()
    }

    /// Whether no object was read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends everything from `other`.
    pub fn extend(&mut self, other: Objects) {
        append(&mut self.services, other.services);
        append(&mut self.endpoint_slices, other.endpoint_slices);
        append(&mut self.endpoints, other.endpoints);
        append(&mut self.nodes, other.nodes);
    }
}

/// Appends `more` to `list`, taking it over when `list` is empty (one file holding 20,000
/// objects is not copied again).
fn append<T>(list: &mut Vec<T>, mut more: Vec<T>) {
    if list.is_empty() {
        std::mem::swap(list, &mut more);
    } else {
        list.append(&mut more);
    }
}

/// The result of loading: every object that could be read, and what could not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// Objects read.
    pub objects: Objects,
    /// Files, documents and objects that could not be read.
    pub problems: Vec<Problem>,
}

impl Loaded {
    fn extend(&mut self, other: Loaded) {
        self.objects.extend(other.objects);
        append(&mut self.problems, other.problems);
    }
}

/// Loads every file in `paths`. Directories are walked recursively in sorted order, reading
/// only `.yaml`, `.yml` and `.json` files and skipping hidden entries (`.git`, ConfigMap
/// `..data` links); a file named explicitly is always read.
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    let mut loaded = Loaded::default();
    for path in paths {
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let mut files = Vec::new();
                let mut visited = Vec::new();
                walk(path, &mut files, &mut visited, &mut loaded.problems);
                for file in files {
                    loaded.extend(load_file(&file));
                }
            }
            Ok(_) => loaded.extend(load_file(path)),
            Err(err) => loaded.problems.push(file_problem(path, format!("cannot read: {err}"))),
        }
    }
    loaded
}

/// Loads objects from `text` as if it were the content of `file` (YAML, JSON or a stream of
/// JSON values).
pub fn load_str(text: &str, file: &Path) -> Loaded {
    let mut loaded = Loaded::default();
    documents::load_text(text, file, &mut loaded);
    loaded
}

fn file_problem(path: &Path, reason: String) -> Problem {
    Problem { source: Some(Source { file: path.to_path_buf(), document: 0 }), object: None, reason }
}

fn load_file(path: &Path) -> Loaded {
    let fail = |reason: String| Loaded { problems: vec![file_problem(path, reason)], ..Loaded::default() };
    match fs::metadata(path) {
        Ok(meta) if meta.len() > MAX_FILE_BYTES => {
            return fail(format!("file is {} bytes, more than the {MAX_FILE_BYTES} read", meta.len()));
        }
        Ok(_) => {}
        Err(err) => return fail(format!("cannot read: {err}")),
    }
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => return fail(format!("cannot read: {err}")),
    };
    match String::from_utf8(bytes) {
        Ok(text) => load_str(&text, path),
        Err(err) => fail(format!("not UTF-8 text: {}", err.utf8_error())),
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref(),
        Some("yaml" | "yml" | "json")
    )
}

/// Collects manifest files below `dir`, sorted, following symlinks but never a directory twice.
fn walk(dir: &Path, files: &mut Vec<PathBuf>, visited: &mut Vec<PathBuf>, problems: &mut Vec<Problem>) {
    let canonical = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if visited.contains(&canonical) {
        debug!(dir = %dir.display(), "directory already walked, skipping");
        return;
    }
    visited.push(canonical);
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            problems.push(file_problem(dir, format!("cannot read directory: {err}")));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.')))
        .collect();
    paths.sort();
    for path in paths {
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => walk(&path, files, visited, problems),
            Ok(_) if is_manifest(&path) => files.push(path),
            Ok(_) => debug!(file = %path.display(), "not a manifest file, skipping"),
            Err(err) => problems.push(file_problem(&path, format!("cannot read: {err}"))),
        }
    }
}
