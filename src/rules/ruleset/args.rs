//! A rule's argument groups in one allocation.
//!
//! A 10,000-service ruleset has ≈320,000 rules of ≈7 groups each; as `Vec<Arg>` (a `String`
//! per value, a `Vec` per group) that is ≈480 bytes and a dozen allocations per rule, ≈150 MB
//! for the ruleset alone, and the daemon holds two of them (last applied and next). Encoded
//! into one byte buffer a rule costs about its text length. Reading decodes in place
//! ([`ArgRef`] borrows from the buffer); equality and hashing compare the bytes.
//!
//! Encoding, per group: a flags byte (bit 0: negated), the flag, the number of values, then
//! each value; every string is a LEB128 length followed by its UTF-8 bytes. Only this module
//! writes the buffer, so it is always well formed.

use std::borrow::Cow;
use std::fmt;

use super::Arg;

/// Argument groups of one rule, in order. Build with [`Args::push`] or `collect()`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Args {
    buf: Vec<u8>,
    len: u16,
}

impl Args {
    /// No groups.
    pub const fn new() -> Self {
        Args { buf: Vec::new(), len: 0 }
    }

    /// No groups, with room for `bytes` of encoding.
    pub fn with_capacity(bytes: usize) -> Self {
        Args { buf: Vec::with_capacity(bytes), len: 0 }
    }

    /// Appends a group.
    pub fn push(&mut self, arg: &Arg) {
        self.push_parts(arg.negated, &arg.flag, arg.values.iter().map(String::as_str));
    }

    /// Appends a group from its parts.
    pub fn push_parts<'v>(&mut self, negated: bool, flag: &str, values: impl ExactSizeIterator<Item = &'v str>) {
        self.buf.push(u8::from(negated));
        put_str(&mut self.buf, flag);
        put_len(&mut self.buf, values.len());
        for value in values {
            put_str(&mut self.buf, value);
        }
        self.len = self.len.saturating_add(1);
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The groups, borrowed.
    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.buf }
    }

    /// The groups as owned values.
    pub fn to_vec(&self) -> Vec<Arg> {
        self.iter().map(|a| a.to_arg()).collect()
    }

    /// Releases spare capacity (the builder grows the buffer as groups are added).
    pub fn shrink_to_fit(&mut self) {
        self.buf.shrink_to_fit();
    }

    /// Bytes of the encoding (for memory accounting).
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }
}

impl fmt::Debug for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<Arg>> for Args {
    fn from(args: Vec<Arg>) -> Self {
        args.iter().collect()
    }
}

impl<'a> FromIterator<&'a Arg> for Args {
    fn from_iter<I: IntoIterator<Item = &'a Arg>>(iter: I) -> Self {
        let mut out = Args::new();
        for arg in iter {
            out.push(arg);
        }
        out.shrink_to_fit();
        out
    }
}

impl FromIterator<Arg> for Args {
    fn from_iter<I: IntoIterator<Item = Arg>>(iter: I) -> Self {
        let mut out = Args::new();
        for arg in iter {
            out.push(&arg);
        }
        out.shrink_to_fit();
        out
    }
}

impl<'a> IntoIterator for &'a Args {
    type Item = ArgRef<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// One group, borrowed from its rule.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ArgRef<'a> {
    /// Whether the group is preceded by `!`.
    pub negated: bool,
    /// The flag, with its dashes.
    pub flag: &'a str,
    /// The values (unquoted).
    pub values: Values<'a>,
}

impl<'a> ArgRef<'a> {
    /// The first value, if any.
    pub fn value(&self) -> Option<&'a str> {
        self.values.iter().next()
    }

    /// An owned copy.
    pub fn to_arg(&self) -> Arg {
        Arg {
            negated: self.negated,
            flag: Cow::Owned(self.flag.to_string()),
            values: self.values.iter().map(str::to_string).collect(),
        }
    }
}

impl fmt::Debug for ArgRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arg")
            .field("negated", &self.negated)
            .field("flag", &self.flag)
            .field("values", &self.values)
            .finish()
    }
}

/// The values of one group.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Values<'a> {
    count: usize,
    bytes: &'a [u8],
}

impl<'a> Values<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the group has no value.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The values in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut rest = self.bytes;
        (0..self.count).map(move |_| take_str(&mut rest))
    }

    /// The i-th value.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        self.iter().nth(i)
    }

    /// Owned copies of the values.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

impl fmt::Debug for Values<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over the groups of an [`Args`].
#[derive(Clone)]
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = ArgRef<'a>;

    fn next(&mut self) -> Option<ArgRef<'a>> {
        let (&head, rest) = self.rest.split_first()?;
        self.rest = rest;
        let flag = take_str(&mut self.rest);
        let count = take_len(&mut self.rest);
        let start = self.rest;
        for _ in 0..count {
            take_str(&mut self.rest);
        }
        let used = start.len() - self.rest.len();
        Some(ArgRef { negated: head & 1 == 1, flag, values: Values { count, bytes: &start[..used] } })
    }
}

fn put_len(buf: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf.push(byte);
            return;
        }
        buf.push(byte | 0x80);
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_len(buf, s.len());
    buf.extend_from_slice(s.as_bytes());
}

/// Reads a length written by [`put_len`]. The buffer is only ever written by this module, so
/// it is well formed; a short read ends the value instead of panicking.
fn take_len(rest: &mut &[u8]) -> usize {
    let mut n = 0usize;
    let mut shift = 0u32;
    while let Some((&byte, tail)) = rest.split_first() {
        *rest = tail;
        if shift < usize::BITS {
            n |= usize::from(byte & 0x7f) << shift;
        }
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    n
}

fn take_str<'a>(rest: &mut &'a [u8]) -> &'a str {
    let len = take_len(rest).min(rest.len());
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    // Written from `&str` by `put_str`, so always UTF-8 on a char boundary.
    std::str::from_utf8(head).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arg(negated: bool, flag: &str, values: &[&str]) -> Arg {
        Arg { negated, flag: Cow::Owned(flag.to_string()), values: values.iter().map(|v| v.to_string()).collect() }
    }

    #[test]
    fn round_trips_groups_in_order() {
        let groups = vec![
            arg(false, "-m", &["comment"]),
            arg(false, "--comment", &["ns/svc:http cluster IP"]),
            arg(true, "-s", &["10.244.0.0/16"]),
            arg(false, "--rcheck", &[]),
            arg(false, "--to-destination", &["10.1.2.3:8080"]),
        ];
        let args = Args::from(groups.clone());
        assert_eq!(args.len(), 5);
        assert_eq!(args.to_vec(), groups);
        let neg = args.iter().nth(2).unwrap();
        assert!(neg.negated);
        assert_eq!((neg.flag, neg.value()), ("-s", Some("10.244.0.0/16")));
        assert!(args.iter().nth(3).unwrap().values.is_empty());
    }

    #[test]
    fn long_values_use_multi_byte_lengths() {
        let long = "x".repeat(70_000);
        let args = Args::from(vec![arg(false, "--comment", &[&long, "é"])]);
        let only = args.iter().next().unwrap();
        assert_eq!(only.values.get(0), Some(long.as_str()));
        assert_eq!(only.values.get(1), Some("é"));
        assert_eq!(only.values.len(), 2);
    }

    #[test]
    fn equality_is_by_content() {
        let a = Args::from(vec![arg(false, "-j", &["ACCEPT"])]);
        let b: Args = [arg(false, "-j", &["ACCEPT"])].iter().collect();
        assert_eq!(a, b);
        assert_ne!(a, Args::from(vec![arg(true, "-j", &["ACCEPT"])]));
        assert!(Args::new().is_empty());
    }

    proptest! {
        #[test]
        fn any_groups_round_trip(groups in proptest::collection::vec(
            (any::<bool>(), "\\PC{0,12}", proptest::collection::vec("\\PC{0,200}", 0..4)), 0..12)) {
            let groups: Vec<Arg> = groups.into_iter().map(|(n, f, v)| Arg { negated: n, flag: Cow::Owned(f), values: v }).collect();
            let args = Args::from(groups.clone());
            prop_assert_eq!(args.len(), groups.len());
            prop_assert_eq!(args.to_vec(), groups);
        }
    }
}
