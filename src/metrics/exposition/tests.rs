use super::*;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::CounterWithExemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Unit;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Trace {
    id: String,
}

/// A registry with one metric of every type kubenat uses or might.
fn registry() -> Registry {
    let mut r = Registry::default();
    let counter: Counter = Counter::default();
    counter.inc_by(3);
    r.register("jobs", "Jobs done", counter);
    let gauge: Gauge = Gauge::default();
    gauge.set(-2);
    r.register("queue", "Queue length", gauge);
    let histogram = Histogram::new([0.5, 1.0]);
    histogram.observe(0.7);
    r.register_with_unit("wait", "Wait time", Unit::Seconds, histogram);
    let family = Family::<Vec<(&'static str, String)>, Counter>::default();
    family.get_or_create(&vec![("code", "200".to_string()), ("path", "a\"b\\c\nd".to_string())]).inc();
    r.register("requests", r#"Say \"hi\" \\ two\nlines"#, family);
    r.register("build", "Build facts", Info::new(vec![("version", "1.2".to_string())]));
    let traced = CounterWithExemplar::<Trace>::default();
    traced.inc_by(2, Some(Trace { id: "x # {y}".to_string() }), None);
    r.register("traced", "Traced", traced);
    r
}

#[test]
fn text_format_of_every_metric_type() {
    let text = encode(&registry(), Format::Text);
    let expected = [
        "# HELP jobs_total Jobs done",
        "# TYPE jobs_total counter",
        "jobs_total 3",
        "# HELP queue Queue length",
        "# TYPE queue gauge",
        "queue -2",
        "# HELP wait_seconds Wait time",
        "# TYPE wait_seconds histogram",
        "wait_seconds_sum 0.7",
        "wait_seconds_count 1",
        r#"wait_seconds_bucket{le="0.5"} 0"#,
        r#"wait_seconds_bucket{le="1.0"} 1"#,
        r#"wait_seconds_bucket{le="+Inf"} 1"#,
        r#"# HELP requests_total Say "hi" \\ two\nlines"#,
        "# TYPE requests_total counter",
        r#"requests_total{code="200",path="a\"b\\c\nd"} 1"#,
        "# HELP build_info Build facts",
        "# TYPE build_info gauge",
        r#"build_info{version="1.2"} 1"#,
        "# TYPE traced_total counter",
        "traced_total 2",
    ];
    for line in expected {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    for absent in ["# EOF", "# UNIT", "_created", " # {", "\\\"hi"] {
        assert!(!text.contains(absent), "{absent:?} in:\n{text}");
    }
    assert!(text.ends_with('\n'));
}

#[test]
fn openmetrics_is_prometheus_clients_own_output() {
    let text = encode(&registry(), Format::OpenMetrics);
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(text.contains("# TYPE jobs counter\n"), "{text}");
    assert!(text.contains("# UNIT wait_seconds seconds\n"), "{text}");
}

#[test]
fn exemplar_detection_respects_label_values() {
    assert_eq!(without_exemplar(r#"a{x="1 # {2}"} 3 # {t="u"} 1.0"#), r#"a{x="1 # {2}"} 3"#);
    assert_eq!(without_exemplar(r#"a{x="\"} # "} 3"#), r#"a{x="\"} # "} 3"#);
    assert_eq!(without_exemplar("a 1 # {t=\"u\"} 1"), "a 1");
    assert_eq!(without_exemplar("a 1"), "a 1");
}

#[test]
fn help_unescaping_keeps_backslashes_and_newlines_escaped() {
    assert_eq!(unescape_quotes(r#"a \"b\" \\ c\n \\"#), r#"a "b" \\ c\n \\"#);
    assert_eq!(unescape_quotes(r#"\\\""#), r#"\\""#, "escaped backslash, then an escaped quote");
}

#[test]
fn negotiation_follows_prometheus_accept_headers() {
    let cases = [
        ("", Format::Text),
        ("*/*", Format::Text),
        ("text/plain", Format::Text),
        ("application/openmetrics-text", Format::OpenMetrics),
        // Prometheus 2.x.
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
             text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            Format::OpenMetrics,
        ),
        // Prometheus 3.x.
        (
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
             application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,\
             text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
            Format::OpenMetrics,
        ),
        // scrape_protocols without OpenMetrics, or preferring text.
        ("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5", Format::Text),
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", Format::Text),
        ("application/openmetrics-text;q=0", Format::Text),
        ("application/openmetrics-text;version=2.0.0", Format::Text),
        ("Application/OpenMetrics-Text; Version=\"1.0.0\"", Format::OpenMetrics),
        ("garbage;;;=,", Format::Text),
    ];
    for (accept, want) in cases {
        assert_eq!(Format::negotiate(accept), want, "{accept:?}");
    }
    assert_eq!(Format::Text.content_type(), "text/plain; version=0.0.4; charset=utf-8");
}
