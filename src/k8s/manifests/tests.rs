use std::fs;
use std::path::{Path, PathBuf};

use super::documents::{shift_lines, split_yaml, Chunk};
use super::*;

const SERVICE: &str =
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  clusterIP: 10.96.0.10\n  ports:\n  - port: 80\n";

fn load(text: &str) -> Loaded {
    load_str(text, Path::new("m.yaml"))
}

fn messages(loaded: &Loaded) -> Vec<String> {
    loaded.problems.iter().map(ToString::to_string).collect()
}

fn names<T: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>>(
    list: &[Sourced<T>],
) -> Vec<String> {
    list.iter()
        .map(|s| {
            let meta = s.object.metadata();
            let ns = meta.namespace.clone().unwrap_or_default();
            format!("{}#{} {ns}/{}", s.source.file.display(), s.source.document, meta.name.clone().unwrap_or_default())
        })
        .collect()
}

#[test]
fn splits_documents_and_numbers_them() {
    let text = "# leading comment\n---\na: 1\n--- # second\nb: 2\n---\n---\nc: 3\n...\n---\nd: 4\n";
    let chunks = split_yaml(text);
    let numbers: Vec<(usize, usize)> = chunks.iter().map(|c| (c.number, c.first_line)).collect();
    assert_eq!(numbers, vec![(1, 1), (2, 3), (3, 5), (4, 6), (5, 9)]);
    assert_eq!(chunks[0].text, "\na: 1\n");
    assert_eq!(chunks[1].text, " # second\nb: 2\n");
    assert_eq!(chunks[2].text, "\n");
    assert_eq!(split_yaml("a: 1\n"), vec![Chunk { number: 1, first_line: 0, text: "a: 1\n" }]);
    assert!(split_yaml("").is_empty());
    assert_eq!(split_yaml("a: '---'\nb: ---x\n").len(), 1);
}

#[test]
fn shifts_line_numbers_in_messages() {
    let message = "did not find expected key at line 3 column 5, while parsing a block mapping at line 1 column 1";
    assert_eq!(
        shift_lines(message, 10),
        "did not find expected key at line 13 column 5, while parsing a block mapping at line 11 column 1"
    );
    assert_eq!(shift_lines("no lines here", 4), "no lines here");
    assert_eq!(shift_lines("line x", 4), "line x");
}

#[test]
fn skips_other_kinds_and_non_objects_quietly() {
    let text = format!(
        "{SERVICE}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\n\
         # just a comment\n---\nreplicaCount: 3\nimage: nginx\n---\nJust some words.\n---\n\
         apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: knative\n"
    );
    let loaded = load(&text);
    assert_eq!(messages(&loaded), Vec::<String>::new());
    assert_eq!(names(&loaded.objects.services), vec!["m.yaml#1 default/web"]);
    assert_eq!(loaded.objects.len(), 1);
}

#[test]
fn bad_yaml_in_one_document_keeps_the_others() {
    let text = format!("{SERVICE}---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [broken\n---\n{SERVICE}");
    let loaded = load(&text);
    assert_eq!(loaded.objects.services.len(), 2);
    assert_eq!(loaded.problems.len(), 1, "{:?}", messages(&loaded));
    let message = loaded.problems[0].to_string();
    assert!(message.starts_with("m.yaml#2: invalid YAML: "), "{message}");
    assert!(message.contains("line 14"), "line numbers count from the file start: {message}");
}

#[test]
fn wrong_shape_names_the_object_and_the_serde_error() {
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  ports: \"80\"\n";
    let loaded = load(text);
    assert_eq!(messages(&loaded), vec!["m.yaml#1: Service shop/web: invalid type: string \"80\", expected a sequence"]);
    let loaded = load("apiVersion: v1\nkind: Service\nmetadata: 7\n");
    assert_eq!(
        messages(&loaded),
        vec!["m.yaml#1: Service without a readable name: invalid type: integer `7`, expected ObjectMeta"]
    );
}

#[test]
fn namespace_defaults_to_default() {
    let loaded = load(SERVICE);
    assert_eq!(loaded.objects.services[0].object.metadata.namespace.as_deref(), Some("default"));
    let node = load("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-1\n");
    assert_eq!(node.objects.nodes[0].object.metadata.namespace, None);
}

#[test]
fn unpacks_lists_as_kubectl_prints_them() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata:\n    name: a\n\
                - apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n  metadata:\n    name: a-1\n  addressType: IPv4\n  endpoints: []\n\
                - apiVersion: v1\n  kind: List\n  items:\n  - apiVersion: v1\n    kind: Endpoints\n    metadata:\n      name: a\n";
    let loaded = load(text);
    assert_eq!(messages(&loaded), Vec::<String>::new());
    assert_eq!(names(&loaded.objects.services), vec!["m.yaml#1 default/a"]);
    assert_eq!(names(&loaded.objects.endpoint_slices), vec!["m.yaml#1 default/a-1"]);
    assert_eq!(names(&loaded.objects.endpoints), vec!["m.yaml#1 default/a"]);
}

#[test]
fn typed_lists_lend_their_kind_to_items() {
    let text = r#"{"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "9"},
                   "items": [{"metadata": {"name": "a", "namespace": "x"}}, {"metadata": {"name": "b", "namespace": "x"}, "spec": {"ports": 5}}]}"#;
    let loaded = load_str(text, Path::new("list.json"));
    assert_eq!(names(&loaded.objects.services), vec!["list.json#1 x/a"]);
    assert_eq!(messages(&loaded), vec!["list.json#1: Service x/b: invalid type: integer `5`, expected a sequence"]);
    let loaded = load("apiVersion: v1\nkind: ServiceList\nitems: 5\n");
    assert_eq!(messages(&loaded), vec!["m.yaml#1: ServiceList: items is not a list but a number"]);
}

#[test]
fn unnamed_list_items_are_located() {
    let loaded = load("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  spec: 1\n");
    assert_eq!(
        messages(&loaded),
        vec!["m.yaml#1: items[0]: Service without a readable name: invalid type: integer `1`, expected ServiceSpec"]
    );
}

#[test]
fn reads_json_and_json_streams() {
    let one = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"a"}}"#;
    let loaded = load_str(&format!("{one}\n{one}"), Path::new("s.json"));
    assert_eq!(names(&loaded.objects.services), vec!["s.json#1 default/a", "s.json#2 default/a"]);
    let loaded = load_str(&format!("{one}\n{{\"apiVersion\": "), Path::new("s.json"));
    assert_eq!(loaded.objects.services.len(), 1);
    assert_eq!(messages(&loaded), vec!["s.json#2: invalid JSON: EOF while parsing a value at line 2 column 15"]);
    // A YAML file that merely starts with `{` falls back to YAML.
    let loaded = load("{apiVersion: v1, kind: Service, metadata: {name: flow}}\n");
    assert_eq!(names(&loaded.objects.services), vec!["m.yaml#1 default/flow"]);
}

#[test]
fn endpoint_slice_v1beta1_is_read_as_v1() {
    let text = "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata:\n  name: s\naddressType: IPv4\nendpoints: null\n";
    let loaded = load(text);
    assert_eq!(messages(&loaded), Vec::<String>::new());
    assert_eq!(loaded.objects.endpoint_slices.len(), 1);
}

#[test]
fn yaml_merge_keys_and_byte_order_mark() {
    let text = "\u{feff}apiVersion: v1\nkind: Service\nmetadata:\n  name: m\nspec:\n  <<: {clusterIP: 10.96.0.1}\n  type: ClusterIP\n";
    let loaded = load(text);
    assert_eq!(messages(&loaded), Vec::<String>::new());
    let spec = loaded.objects.services[0].object.spec.clone().unwrap_or_default();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.1"));
}

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, text).expect("write");
}

#[test]
fn walks_directories_sorted_and_filtered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let svc = |name: &str| SERVICE.replace("name: web", &format!("name: {name}"));
    write(&root.join("b.yaml"), &svc("b"));
    write(&root.join("a/z.yml"), &svc("az"));
    write(&root.join("a/c.json"), r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"ac"}}"#);
    write(&root.join("README.md"), "# not yaml: [\n");
    write(&root.join("notes.txt"), &svc("txt"));
    write(&root.join(".git/x.yaml"), &svc("hidden"));
    write(&root.join("..data/x.yaml"), &svc("configmap-data"));
    let loaded = load_paths(&[root.to_path_buf(), root.join("notes.txt")]);
    assert_eq!(messages(&loaded), Vec::<String>::new());
    let got: Vec<String> =
        loaded.objects.services.iter().map(|s| s.object.metadata.name.clone().unwrap_or_default()).collect();
    assert_eq!(got, vec!["ac", "az", "b", "txt"]);
}

#[test]
fn unreadable_paths_are_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.yaml");
    let binary = dir.path().join("bin.yaml");
    fs::write(&binary, [0xff, 0xfe, 0x00]).expect("write");
    let loaded = load_paths(&[missing.clone(), binary.clone()]);
    let got = messages(&loaded);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].starts_with(&format!("{}: cannot read: ", missing.display())), "{}", got[0]);
    assert_eq!(got[1], format!("{}: not UTF-8 text: invalid utf-8 sequence of 1 bytes from index 0", binary.display()));
}

#[test]
fn source_and_problem_display() {
    let source = Source { file: PathBuf::from("f.yaml"), document: 3 };
    assert_eq!(source.to_string(), "f.yaml#3");
    assert_eq!(Source { file: PathBuf::from("f.yaml"), document: 0 }.to_string(), "f.yaml");
    let problem = Problem::about("Service", Some("default"), "web", "port \"http\": bad").at(Some(&source));
    assert_eq!(problem.to_string(), "f.yaml#3: Service default/web: port \"http\": bad");
    assert_eq!(Problem::new("x").to_string(), "x");
    assert_eq!(object_label("Node", None, "we\"b"), "Node \"we\\\"b\"");
}

#[test]
fn hostile_documents_fail_cleanly() {
    let deep_yaml = format!("apiVersion: v1\nkind: Service\nspec: {}", "[".repeat(100_000));
    let started = std::time::Instant::now();
    let loaded = load(&deep_yaml);
    assert_eq!(messages(&loaded), vec!["m.yaml#1: invalid YAML: flow collections nested more than 1000 deep"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
    let deep_ok = format!("apiVersion: v1\nkind: Service\nspec: {}", "[".repeat(900));
    assert_eq!(
        messages(&load(&deep_ok)),
        vec!["m.yaml#1: invalid YAML: recursion limit exceeded at line 3 column 134"]
    );
    let deep_json = format!("{{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"spec\": {}", "[".repeat(100_000));
    let loaded = load_str(&deep_json, Path::new("deep.json"));
    assert_eq!(messages(&loaded), vec!["deep.json#1: invalid JSON: recursion limit exceeded at line 1 column 175"]);
    let laughs = "apiVersion: v1\nkind: Service\na: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
                  g: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    let loaded = load(laughs);
    assert_eq!(messages(&loaded), vec!["m.yaml#1: invalid YAML: repetition limit exceeded"]);
    let mut nested = String::from("apiVersion: v1\nkind: Service\nmetadata: {name: deep}\n");
    for _ in 0..10 {
        nested = format!("apiVersion: v1\nkind: List\nitems:\n- {}", nested.replace('\n', "\n  "));
    }
    let loaded = load(&nested);
    assert_eq!(
        messages(&loaded),
        vec!["m.yaml#1: items[0]: items[0]: items[0]: items[0]: items[0]: items[0]: items[0]: items[0]: List: lists nested more than 8 deep"]
    );
}

#[test]
fn json_fields_in_any_order_and_repeated_keys() {
    // kubectl sorts keys: `items` before `kind`, `endpoints` before `kind`; the last of a
    // repeated key wins; escaped keys are keys like any other.
    let text = r#"{"apiVersion": "v1", "items": [
        {"addressType": "IPv4", "apiVersion": "discovery.k8s.io/v1", "endpoints": [{"addresses": ["10.0.0.1"]}],
         "kind": "EndpointSlice", "metadata": {"name": "a-1", "namespace": "x"}},
        {"metadata": {"name": "old"}, "spec": 5, "kind": "Service", "apiVersion": "v1",
         "metadata": {"name": "a", "namespace": "x"}, "spec": {"clusterIP": "10.96.0.1"}},
        {"apiVersion": "v1", "kind": "Service", "metad\u0061ta": {"name": "b"}}
    ], "kind": "List"}"#;
    let loaded = load_str(text, Path::new("l.json"));
    assert_eq!(messages(&loaded), Vec::<String>::new());
    assert_eq!(names(&loaded.objects.endpoint_slices), vec!["l.json#1 x/a-1"]);
    assert_eq!(names(&loaded.objects.services), vec!["l.json#1 x/a", "l.json#1 default/b"]);
    assert_eq!(loaded.objects.endpoint_slices[0].object.endpoints[0].addresses, vec!["10.0.0.1".to_string()]);
    let spec = loaded.objects.services[0].object.spec.clone().unwrap_or_default();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.1"));
}

#[test]
fn json_list_items_of_every_shape() {
    let text = r#"{"kind": "ServiceList", "apiVersion": "v1", "items": [1, "x", null, [2],
        {"metadata": {"name": "a"}, "kind": 7}, {"metadata": {"name": "b"}}]}
        {"apiVersion": "v1", "kind": "List", "items": {"a": [1]}}
        {"apiVersion": "v1", "kind": "List", "items": null}
        {"apiVersion": "v1", "kind": "NodeList", "items": [{"metadata": {"name": "n", "namespace": "x"}}]}
        [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "in-array"}}]
        {"apiVersion": "v2", "kind": "Service", "metadata": {"name": "v2", "namespace": "y"}}"#;
    let loaded = load_str(text, Path::new("l.json"));
    assert_eq!(
        messages(&loaded),
        vec![
            "l.json#2: List: items is not a list but a mapping",
            "l.json#6: Service y/v2: unsupported apiVersion \"v2\" for Service (expected v1); skipped",
        ]
    );
    assert_eq!(names(&loaded.objects.services), vec!["l.json#1 default/b"]);
    assert_eq!(names(&loaded.objects.nodes), vec!["l.json#4 x/n"]);
}

#[test]
fn json_errors_are_reported_where_a_full_parse_finds_them() {
    let good = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}"#;
    for bad in [
        "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"cut\nx\"}}",
        r#"{"apiVersion": "v1", "kind": "Service", "spec": {"a": tru}}"#,
        r#"{"apiVersion": "v1", "kind": "Service", "spec": {"a": "\q"}}"#,
        r#"{"apiVersion": "v1", "kind": "Service", "spec": [1,]}"#,
    ] {
        let text = format!("{good}\n{bad}\n{good}");
        let loaded = load_str(&text, Path::new("e.json"));
        let err = serde_json::Deserializer::from_str(&text)
            .into_iter::<serde_json::Value>()
            .find_map(Result::err)
            .expect("invalid");
        assert_eq!(messages(&loaded), vec![format!("e.json#2: invalid JSON: {err}")], "{bad}");
        assert_eq!(loaded.objects.services.len(), 1);
    }
}
