//! The two text formats `/metrics` speaks, and which one a scraper gets. prometheus-client
//! encodes OpenMetrics only; the Prometheus text format (0.0.4) is derived from it here, one
//! line at a time: no `# EOF` and `# UNIT` lines, counters' `# HELP`/`# TYPE` name the `_total`
//! series, `_created` samples and exemplars dropped, `info` → `gauge`, `unknown` → `untyped`,
//! and `\"` in help texts unescaped (the text format escapes only `\\` and `\n` there).
//! prometheus-client appends a `.` to every help text; the text encoding drops that one `.`
//! again, so help texts read exactly as registered (kube-proxy's).
//! Timestamps are not converted: kubenat's metrics never carry one.

use std::collections::BTreeMap;

use prometheus_client::registry::Registry;

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4, the default (what kube-proxy serves).
    Text,
    /// OpenMetrics 1.0.0 text, only when the scraper's `Accept` asks for it.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format for an `Accept` header, as Prometheus's scrape negotiation expects: the
    /// acceptable media ranges by descending `q` (ties keep header order); the first that is
    /// `application/openmetrics-text` (version absent, 0.0.1 or 1.0.0) picks OpenMetrics, the
    /// first that is `text/plain`, `text/*` or `*/*` picks text; anything else (protobuf, an
    /// empty or unparsable header) falls through to text.
    pub fn negotiate(accept: &str) -> Format {
        let mut ranges: Vec<(f32, Option<Format>)> = accept.split(',').map(media_range).collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranges.into_iter().filter(|(q, _)| *q > 0.0).find_map(|(_, format)| format).unwrap_or(Format::Text)
    }
}

/// One media range of an `Accept` header: its `q` and the format it selects, if any.
fn media_range(range: &str) -> (f32, Option<Format>) {
    let mut parts = range.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default().to_ascii_lowercase();
    let mut q = 1.0;
    let mut version = None;
    for param in parts {
        let Some((key, value)) = param.split_once('=') else { continue };
        let value = value.trim().trim_matches('"');
        match key.trim().to_ascii_lowercase().as_str() {
            "q" => q = value.parse().unwrap_or(0.0),
            "version" => version = Some(value.to_string()),
            _ => {}
        }
    }
    let format = match media.as_str() {
        "application/openmetrics-text" if matches!(version.as_deref(), None | Some("0.0.1" | "1.0.0")) => {
            Some(Format::OpenMetrics)
        }
        "text/plain" | "text/*" | "*/*" => Some(Format::Text),
        _ => None,
    };
    (q, format)
}

/// `registry` encoded in `format`.
pub fn encode(registry: &Registry, format: Format) -> String {
    let mut out = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut out, registry) {
        // Writing into a String cannot fail; keep whatever was written.
        tracing::error!(error = %err, "encoding metrics failed");
    }
    match format {
        Format::OpenMetrics => out,
        Format::Text => to_text(&out),
    }
}

/// OpenMetrics text → Prometheus text format 0.0.4 (see the module docs).
pub fn to_text(openmetrics: &str) -> String {
    let types: BTreeMap<&str, &str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|rest| rest.split_once(' ')).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if let Some(converted) = convert_line(line, &types) {
            out.push_str(&converted);
            out.push('\n');
        }
    }
    out
}

fn convert_line(line: &str, types: &BTreeMap<&str, &str>) -> Option<String> {
    if line == "# EOF" || line.starts_with("# UNIT ") {
        return None;
    }
    if let Some((name, help)) = line.strip_prefix("# HELP ").and_then(|rest| rest.split_once(' ')) {
        let name = text_name(name, types.get(name).copied());
        let help = help.strip_suffix('.').unwrap_or(help);
        return Some(format!("# HELP {name} {}", unescape_quotes(help)));
    }
    if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|rest| rest.split_once(' ')) {
        let text_kind = match kind {
            "info" | "stateset" => "gauge",
            "counter" | "gauge" | "histogram" | "summary" => kind,
            _ => "untyped",
        };
        return Some(format!("# TYPE {} {text_kind}", text_name(name, Some(kind))));
    }
    if line.starts_with('#') || line.is_empty() {
        return Some(line.to_string());
    }
    let sample = without_exemplar(line);
    let series = sample.split(['{', ' ']).next().unwrap_or_default();
    let created = series.strip_suffix("_created").is_some_and(|family| types.get(family) == Some(&"counter"));
    (!created).then(|| sample.to_string())
}

/// The name a family's `# HELP`/`# TYPE` lines carry in the text format: the series name.
fn text_name(name: &str, kind: Option<&str>) -> String {
    match kind {
        Some("counter") => format!("{name}_total"),
        Some("info") => format!("{name}_info"),
        _ => name.to_string(),
    }
}

/// A help text escaped for OpenMetrics (`\\`, `\n`, `\"`) as the text format wants it
/// (`\\`, `\n`, and a bare `"`).
fn unescape_quotes(help: &str) -> String {
    let mut out = String::with_capacity(help.len());
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('"') => out.push('"'),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// A sample line without its OpenMetrics exemplar (` # {…} value`), label values respected.
fn without_exemplar(line: &str) -> &str {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut labels_closed = !line.split(' ').next().unwrap_or_default().contains('{');
    for (i, c) in line.char_indices() {
        if !labels_closed {
            match (c, in_quotes, escaped) {
                (_, true, true) => escaped = false,
                ('\\', true, false) => escaped = true,
                ('"', _, false) => in_quotes = !in_quotes,
                ('}', false, _) => labels_closed = true,
                _ => {}
            }
            continue;
        }
        if line[i..].starts_with(" # ") {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests;
