//! Rejects YAML whose flow collections (`[`, `{`) nest absurdly deep before the parser sees
//! it: libyaml's scanner does work proportional to the nesting depth for every token, so
//! 100,000 `[` take seconds to reject. The estimate errs high, never low, inside flow context.
//! For JSON, finds where serde_json's recursion limit would stop a full parse (the loader only
//! scans most fields, which has no limit), so deep JSON fails as it always did.

/// Deepest flow nesting parsed; real manifests rarely exceed 10, the parser itself stops at 128.
pub(super) const MAX_FLOW_DEPTH: usize = 1000;

/// Whether `text` nests flow collections deeper than [`MAX_FLOW_DEPTH`] (estimated: brackets
/// outside quoted scalars and comments, with the parser's quoting and comment rules).
pub(super) fn too_deep(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (mut depth, mut index, mut previous) = (0usize, 0usize, b'\n');
    while let Some(&byte) = bytes.get(index) {
        let starts_token = matches!(previous, b' ' | b'\t' | b'\r' | b'\n' | b'[' | b'{' | b',' | b':' | b'-' | b'?');
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' | b'\'' if starts_token => index = skip_quoted(bytes, index),
            b'#' if starts_token => index = skip_line(bytes, index),
            _ => {}
        }
        previous = bytes.get(index).copied().unwrap_or(byte);
        index += 1;
    }
    false
}

/// Index of the closing quote of the scalar opened at `start` (or the last byte).
fn skip_quoted(bytes: &[u8], start: usize) -> usize {
    let quote = bytes.get(start).copied().unwrap_or(b'"');
    let mut index = start + 1;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'\\' if quote == b'"' => index += 1,
            b'\'' if quote == b'\'' && bytes.get(index + 1) == Some(&b'\'') => index += 1,
            _ if byte == quote => return index,
            _ => {}
        }
        index += 1;
    }
    bytes.len().saturating_sub(1)
}

/// Index of the newline ending the line at `start` (or the last byte).
fn skip_line(bytes: &[u8], start: usize) -> usize {
    bytes.iter().skip(start).position(|&b| b == b'\n').map_or(bytes.len().saturating_sub(1), |n| start + n)
}

/// serde_json's recursion limit: the 128th nested `[`/`{` of a document is refused.
const JSON_MAX_DEPTH: usize = 128;

/// The byte index of the first bracket of `text` (a stream of JSON documents) that serde_json
/// would refuse as nested too deep, if any. Raw fields are only scanned, which has no limit;
/// this keeps deep input an error of the document, at the same place, as a full parse makes it.
pub(super) fn json_too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut index) = (0usize, 0usize);
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth >= JSON_MAX_DEPTH {
                    return Some(index);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' => index = skip_json_string(bytes, index),
            _ => {}
        }
        index += 1;
    }
    None
}

/// Index of the quote closing the JSON string opened at `start` (or the last byte).
fn skip_json_string(bytes: &[u8], start: usize) -> usize {
    let mut index = start + 1;
    while let Some(&byte) = bytes.get(index) {
        match byte {
            b'\\' => index += 1,
            b'"' => return index,
            _ => {}
        }
        index += 1;
    }
    bytes.len().saturating_sub(1)
}

/// serde_json's message for the bracket at byte `at` (1-based line and column).
pub(super) fn recursion_message(text: &str, at: usize) -> String {
    let before = &text.as_bytes()[..at.min(text.len())];
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |n| n + 1);
    let line = 1 + before[..line_start].iter().filter(|&&b| b == b'\n').count();
    format!("recursion limit exceeded at line {line} column {}", at + 1 - line_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_pass() {
        assert!(!too_deep("a: [1, {b: [2]}]\nc: \"[[[[\"\nd: '{{'' [[['\n# [[[[[[\n"));
        assert!(!too_deep(&"- [x]\n".repeat(100_000)));
        assert!(!too_deep(&format!("a: \"{}\"\n", "[".repeat(5000))));
        assert!(!too_deep(&format!("a: '{}'\n", "[".repeat(5000))));
        assert!(!too_deep(&format!("a: 1 # {}\n", "{".repeat(5000))));
    }

    #[test]
    fn deep_nesting_is_caught() {
        assert!(too_deep(&"[".repeat(MAX_FLOW_DEPTH + 1)));
        assert!(!too_deep(&"[".repeat(MAX_FLOW_DEPTH)));
        assert!(too_deep(&"{a: ".repeat(MAX_FLOW_DEPTH + 1)));
    }

    #[test]
    fn json_depth_matches_serde_json() {
        for text in [
            format!("{{\"a\": {}", "[".repeat(200)),
            format!("[1]\n{{\"s\": \"[[[\\\"\",\n \"b\": {}{}", "{\"x\": ".repeat(130), "1}".repeat(130)),
        ] {
            let at = json_too_deep(&text).expect("too deep");
            let err = serde_json::Deserializer::from_str(&text)
                .into_iter::<serde_json::Value>()
                .find_map(Result::err)
                .expect("serde_json refuses it");
            assert_eq!(recursion_message(&text, at), err.to_string());
        }
        let fine = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert_eq!(json_too_deep(&fine), None);
        assert!(serde_json::from_str::<serde_json::Value>(&fine).is_ok());
        assert_eq!(json_too_deep(&format!("\"{}\"", "[".repeat(500))), None);
    }

    #[test]
    fn quotes_and_comments_cannot_hide_openers() {
        // A closer inside a quoted scalar does not count, so this is still deep.
        assert!(too_deep(&"[\"]\", ".repeat(MAX_FLOW_DEPTH + 1)));
        assert!(too_deep(&"['a'']', ".repeat(MAX_FLOW_DEPTH + 1)));
        assert!(too_deep(&"[\"\\\"]\", ".repeat(MAX_FLOW_DEPTH + 1)));
        // A quote inside a plain scalar does not start a quoted scalar.
        assert!(too_deep(&format!("a: it's {}", "[".repeat(MAX_FLOW_DEPTH + 1))));
        assert!(too_deep(&"[a#b, ".repeat(MAX_FLOW_DEPTH + 1)));
    }
}
