//! Sorts parsed documents into the kinds kubenat uses: unpacks `List`s, decodes Services,
//! EndpointSlices, Endpoints and Nodes into their typed objects, reports objects that look
//! meant for kubenat but cannot be read, and skips everything else. Works on any [`Document`]:
//! JSON documents split into raw fields (`json`) and YAML documents as JSON values.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use tracing::debug;

use super::{object_label, quoted, Loaded, Problem, Source, Sourced};

/// How deeply `List`s may nest inside `List`s.
const MAX_LIST_DEPTH: usize = 8;

/// The `items` of a document.
#[derive(Debug)]
pub(super) enum Items<D> {
    /// A list of documents.
    List(Vec<D>),
    /// `null` or no `items` field.
    Null,
    /// Something else: its type, as `a number`.
    Not(&'static str),
}

/// A parsed document (or list item) whose top-level fields can be looked at before it is
/// decoded into a typed object.
pub(super) trait Document: Sized {
    /// Whether the document is a mapping (anything else is skipped quietly).
    fn is_mapping(&self) -> bool;
    /// A top-level field as a string: `None` when absent, `Some(None)` when not a string.
    fn string(&self, key: &str) -> Option<Option<String>>;
    /// Whether the top-level field `key` is present.
    fn has(&self, key: &str) -> bool;
    /// Takes the `items` field out.
    fn take_items(&mut self) -> Items<Self>;
    /// `metadata.<key>` if it is a string.
    fn metadata_string(&self, key: &str) -> Option<String>;
    /// Decodes every top-level field except `apiVersion` and `kind` (already checked) into
    /// `T`, consuming the document.
    fn decode<T: DeserializeOwned>(self) -> Result<T, Undecoded>;
}

/// Why a document could not be decoded, and the names it gives itself.
pub(super) struct Undecoded {
    /// serde's message, without a position.
    pub reason: String,
    /// `metadata.name`, if it is a string.
    pub name: Option<String>,
    /// `metadata.namespace`, if it is a string.
    pub namespace: Option<String>,
}

/// A serde_json error message without the ` at line L column C` suffix: positions inside a
/// decoded value mean nothing to the reader (the document is named instead).
pub(super) fn message(err: &serde_json::Error) -> String {
    let text = err.to_string();
    if err.line() == 0 {
        return text;
    }
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&suffix) {
        Some(bare) => bare.to_string(),
        None => text,
    }
}

/// What a list lends the items that do not name their own `apiVersion` or `kind`
/// (`ServiceList` items are Services).
#[derive(Clone, Copy)]
struct Lent<'a> {
    api_version: &'a str,
    kind: &'a str,
}

/// Sorts one document into `loaded`: a kind we use, a list to unpack, or something to skip.
pub(super) fn classify<D: Document>(document: D, source: &Source, loaded: &mut Loaded) {
    classify_item(document, source, "", 0, None, loaded);
}

/// `path` names the list item (`items[3]: `) for messages.
fn classify_item<D: Document>(
    mut document: D,
    source: &Source,
    path: &str,
    depth: usize,
    lent: Option<Lent<'_>>,
    loaded: &mut Loaded,
) {
    if !document.is_mapping() {
        debug!(%source, path, "document is not a mapping, skipping");
        return;
    }
    let field = |key: &str, lent: Option<&str>| match document.string(key) {
        Some(value) => value,
        None => lent.map(str::to_owned),
    };
    let api_version = field("apiVersion", lent.map(|l| l.api_version));
    let kind = field("kind", lent.map(|l| l.kind));
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        debug!(%source, path, "document has no apiVersion or kind, skipping");
        return;
    };
    let is_list = kind == "List" || (kind.ends_with("List") && document.has("items"));
    if is_list {
        let items = document.take_items();
        return unpack_list(items, &api_version, &kind, source, path, depth, loaded);
    }
    let objects = &mut loaded.objects;
    let problems = &mut loaded.problems;
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Service") => read(document, &kind, true, source, path, problems, &mut objects.services),
        ("v1", "Endpoints") => read(document, &kind, true, source, path, problems, &mut objects.endpoints),
        ("v1", "Node") => read(document, &kind, false, source, path, problems, &mut objects.nodes),
        // v1beta1 is read as v1: `decode` leaves the apiVersion out.
        ("discovery.k8s.io/v1" | "discovery.k8s.io/v1beta1", "EndpointSlice") => {
            read(document, &kind, true, source, path, problems, &mut objects.endpoint_slices);
        }
        _ => match unreadable_kind(&api_version, &kind) {
            Some(reason) => {
                let name = document.metadata_string("name").unwrap_or_default();
                let label = object_label(&kind, document.metadata_string("namespace").as_deref(), &name);
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

fn unpack_list<D: Document>(
    items: Items<D>,
    api_version: &str,
    kind: &str,
    source: &Source,
    path: &str,
    depth: usize,
    loaded: &mut Loaded,
) {
    let items = match items {
        Items::List(items) => items,
        Items::Null => return,
        Items::Not(what) => {
            let reason = format!("{path}{kind}: items is not a list but {what}");
            return loaded.problems.push(Problem::new(reason).at(Some(source)));
        }
    };
    if depth >= MAX_LIST_DEPTH {
        let reason = format!("{path}{kind}: lists nested more than {MAX_LIST_DEPTH} deep");
        return loaded.problems.push(Problem::new(reason).at(Some(source)));
    }
    let lent = kind.strip_suffix("List").filter(|k| !k.is_empty()).map(|kind| Lent { api_version, kind });
    for (index, item) in items.into_iter().enumerate() {
        let item_path = format!("{path}items[{index}]: ");
        classify_item(item, source, &item_path, depth + 1, lent, loaded);
    }
}

/// Decodes one object of a known kind; a namespaced object without a namespace gets
/// `default`. A wrong shape becomes a problem naming the object if its name is readable.
fn read<D, T>(
    document: D,
    kind: &str,
    namespaced: bool,
    source: &Source,
    path: &str,
    problems: &mut Vec<Problem>,
    out: &mut Vec<Sourced<T>>,
) where
    D: Document,
    T: DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    match document.decode::<T>() {
        Ok(mut object) => {
            if namespaced && object.metadata().namespace.as_deref().is_none_or(str::is_empty) {
                object.metadata_mut().namespace = Some("default".to_string());
            }
            out.push(Sourced { source: source.clone(), object });
        }
        Err(Undecoded { reason, name, namespace }) => {
            let namespace = namespace.filter(|ns| !ns.is_empty());
            let problem = match name {
                Some(name) => {
                    let ns = namespaced.then(|| namespace.unwrap_or_else(|| "default".into()));
                    let label = object_label(kind, ns.as_deref(), &name);
                    Problem { source: None, object: Some(label), reason }
                }
                None => Problem::new(format!("{path}{kind} without a readable name: {reason}")),
            };
            problems.push(problem.at(Some(source)));
        }
    }
}
