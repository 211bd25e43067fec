//! Shows untrusted strings in messages: quoted, escaped and shortened, never raw.

/// Longest part of a value shown in a message, in characters.
const SHOWN_CHARS: usize = 64;

/// `"value"` with Rust escaping; values longer than 64 characters are cut and their length
/// given: `"aaaa…" (300 chars)`.
pub(crate) fn quoted(value: &str) -> String {
    let count = value.chars().count();
    if count <= SHOWN_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(SHOWN_CHARS).collect();
    format!("{:?} ({count} chars)", format!("{head}…"))
}

/// The value itself when it is plain (non-empty, printable ASCII without quotes, backslashes
/// or spaces, at most 64 characters), otherwise [`quoted`].
pub(crate) fn shown(value: &str) -> String {
    let plain = !value.is_empty()
        && value.len() <= SHOWN_CHARS
        && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if plain {
        value.to_string()
    } else {
        quoted(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_are_shown_as_is() {
        assert_eq!(shown("web"), "web");
        assert_eq!(shown("kube-system"), "kube-system");
    }

    #[test]
    fn unusual_values_are_quoted_and_escaped() {
        assert_eq!(shown(""), "\"\"");
        assert_eq!(shown("a\"b"), "\"a\\\"b\"");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown("-j ACCEPT"), "\"-j ACCEPT\"");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "a".repeat(300);
        assert_eq!(quoted(&long), format!("\"{}…\" (300 chars)", "a".repeat(64)));
        assert_eq!(shown(&long), quoted(&long));
    }
}
