//! Splits one restore/save line into tokens and groups a rule's tokens into `Arg`s; knows
//! nothing about tables, chains or line numbers.

use crate::rules::ruleset::Arg;

/// One whitespace-separated word of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    /// The word with quotes removed and escapes resolved.
    pub text: String,
    /// Whether any part of the word was double-quoted (a quoted word is always a value).
    pub quoted: bool,
}

impl Token {
    /// Whether this word starts a new `[!] flag value…` group.
    pub fn is_flag(&self) -> bool {
        !self.quoted && self.text.len() > 1 && self.text.starts_with('-')
    }

    /// Whether this is a bare `!`.
    fn is_bang(&self) -> bool {
        !self.quoted && self.text == "!"
    }
}

/// A line that cannot be split into words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UnterminatedQuote;

/// Whitespace as iptables-restore sees it (C `isspace`).
fn is_space(c: char) -> bool {
    c.is_ascii_whitespace() || c == '\x0b'
}

/// Splits `line` into words. Double quotes group words; inside quotes a backslash escapes the
/// next character (`\"`, `\\`), which mirrors `write::write_value`.
pub(super) fn tokenize(line: &str) -> Result<Vec<Token>, UnterminatedQuote> {
    let mut tokens = Vec::new();
    let mut current: Option<Token> = None;
    let mut chars = line.chars();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        if in_quote {
            let token = current.get_or_insert_with(empty_quoted);
            match c {
                '"' => in_quote = false,
                '\\' => match chars.next() {
                    Some(escaped) => token.text.push(escaped),
                    None => return Err(UnterminatedQuote),
                },
                c => token.text.push(c),
            }
        } else if c == '"' {
            in_quote = true;
            current.get_or_insert_with(empty_quoted).quoted = true;
        } else if is_space(c) {
            tokens.extend(current.take());
        } else {
            current.get_or_insert_with(|| Token { text: String::new(), quoted: false }).text.push(c);
        }
    }
    if in_quote {
        return Err(UnterminatedQuote);
    }
    tokens.extend(current);
    Ok(tokens)
}

fn empty_quoted() -> Token {
    Token { text: String::new(), quoted: true }
}

/// Why a rule's words do not form argument groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum GroupError {
    /// A value before any flag.
    ValueWithoutFlag(String),
    /// A `!` with nothing after it.
    DanglingNegation,
    /// A `!` that neither precedes a flag nor sits between a flag and its first value.
    MisplacedNegation,
}

/// Groups words into `[!] flag value…` arguments, in order. `! --flag v` and the old
/// `--flag ! v` form both give a negated group.
pub(super) fn group(tokens: &[Token]) -> Result<Vec<Arg>, GroupError> {
    let mut args: Vec<Arg> = Vec::new();
    let mut negate_next = false;
    for (i, token) in tokens.iter().enumerate() {
        if token.is_bang() {
            match tokens.get(i + 1) {
                None => return Err(GroupError::DanglingNegation),
                Some(next) if next.is_flag() => {
                    if negate_next {
                        return Err(GroupError::MisplacedNegation);
                    }
                    negate_next = true;
                }
                Some(_) => match args.last_mut() {
                    Some(arg) if arg.values.is_empty() && !arg.negated && !negate_next => {
                        arg.negated = true;
                    }
                    _ => return Err(GroupError::MisplacedNegation),
                },
            }
        } else if token.is_flag() {
            args.push(Arg {
                negated: std::mem::take(&mut negate_next),
                flag: token.text.clone().into(),
                values: Vec::new(),
            });
        } else {
            match args.last_mut() {
                Some(arg) => arg.values.push(token.text.clone()),
                None => return Err(GroupError::ValueWithoutFlag(token.text.clone())),
            }
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<(String, bool)> {
        tokenize(line).unwrap().into_iter().map(|t| (t.text, t.quoted)).collect()
    }

    #[test]
    fn tokenizes_quotes_and_escapes() {
        let cases: &[(&str, &[(&str, bool)])] = &[
            ("-A X  -j\tY", &[("-A", false), ("X", false), ("-j", false), ("Y", false)]),
            (r#"--comment "a b""#, &[("--comment", false), ("a b", true)]),
            (r#""say \"hi\" \\o/""#, &[(r#"say "hi" \o/"#, true)]),
            (r#""""#, &[("", true)]),
            (r#"ab"c d"e"#, &[("abc de", true)]),
            (r#"a\b"#, &[(r"a\b", false)]),
            ("", &[]),
        ];
        for (line, want) in cases {
            let want: Vec<(String, bool)> = want.iter().map(|(t, q)| (t.to_string(), *q)).collect();
            assert_eq!(words(line), want, "{line}");
        }
        assert_eq!(tokenize(r#"--comment "open"#), Err(UnterminatedQuote));
        assert_eq!(tokenize(r#""trailing\"#), Err(UnterminatedQuote));
    }

    fn grouped(line: &str) -> Result<Vec<String>, GroupError> {
        let args = group(&tokenize(line).unwrap())?;
        Ok(args.iter().map(|a| a.to_string()).collect())
    }

    #[test]
    fn groups_flags_values_and_negation() {
        let ok: &[(&str, &[&str])] = &[
            ("-m mark ! --mark 0x4000/0x4000 -j RETURN", &["-m mark", "! --mark 0x4000/0x4000", "-j RETURN"]),
            ("-s ! 10.0.0.0/8", &["! -s 10.0.0.0/8"]),
            ("--ctstate ! NEW,RELATED", &["! --ctstate NEW,RELATED"]),
            ("-m recent --set --name X", &["-m recent", "--set", "--name X"]),
            (r#"--comment "-j ACCEPT" -j X"#, &["--comment \"-j ACCEPT\"", "-j X"]),
            (r#"--comment "!""#, &["--comment \"!\""]),
            ("--to-ports - x", &["--to-ports \"-\" x"]),
        ];
        for (line, want) in ok {
            assert_eq!(grouped(line).unwrap(), *want, "{line}");
        }
        let bad: &[(&str, GroupError)] = &[
            ("value -j X", GroupError::ValueWithoutFlag("value".into())),
            ("-j X !", GroupError::DanglingNegation),
            ("-s 1.2.3.4 ! 5", GroupError::MisplacedNegation),
            ("! ! -s 1.2.3.4", GroupError::MisplacedNegation),
            ("! x", GroupError::MisplacedNegation),
        ];
        for (line, want) in bad {
            assert_eq!(grouped(line), Err(want.clone()), "{line}");
        }
    }
}
