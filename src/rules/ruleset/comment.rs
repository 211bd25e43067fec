//! The text of `-m comment --comment`: the one place a comment is made safe for the kernel and
//! for a restore line.

/// Longest `--comment` the kernel's comment match stores (256 bytes including the final NUL).
pub const MAX_COMMENT_BYTES: usize = 255;

/// Makes `text` safe as a `--comment` value: control characters (newline, NUL, tab…) become
/// spaces and the text is cut to [`MAX_COMMENT_BYTES`] at a character boundary, so that no
/// comment can end a restore line or be refused by `iptables-restore`. Quoting is left to
/// the writer. Names that reach comments are validated by the converter; this is the
/// last line of defence for every comment the renderer builds.
pub fn comment_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_COMMENT_BYTES));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_COMMENT_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_lose_control_characters_and_fit_the_kernel_limit() {
        assert_eq!(comment_text("ns/web:http cluster IP"), "ns/web:http cluster IP");
        assert_eq!(comment_text("a\nb\0c\td\r"), "a b c d ");
        let long = "é".repeat(200);
        let cut = comment_text(&long);
        assert_eq!(cut.len(), 254, "cut at a character boundary");
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(comment_text(&"x".repeat(300)).len(), MAX_COMMENT_BYTES);
    }
}
