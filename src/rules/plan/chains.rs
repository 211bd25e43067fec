//! One table of a ruleset grouped by chain, cheaply enough for 300k rules: chains live in a
//! `Vec` in first-mention order, each holding its rules as the runs of consecutive rules the
//! ruleset keeps them in (one run for nearly every chain the renderer writes, so no per-chain
//! allocation), and the name index is consulted only when a guess fails: the renderer writes a
//! chain's rules right after the previous chain's, so "the next chain" is nearly always right.
//! Names are hashed once with FxHash (ours, not attacker-chosen: SipHash bought nothing and
//! cost a sixth of the time) and the index compares stored hashes before touching any text.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use crate::rules::ruleset::{ChainDecl, ChainName, Rule, Ruleset, Table, TableName};

/// FxHash (rustc's hasher) of `text`, with a final mix so that the low bits are good too.
fn name_hash(text: &[u8]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mut hash = text.len() as u64;
    for chunk in text.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    (hash ^ (hash >> 32)).wrapping_mul(K) ^ (hash >> 29)
}

/// A chain name with its hash: equal hashes are checked before the text.
#[derive(Debug, Clone, Copy)]
struct Name<'a> {
    hash: u64,
    text: &'a str,
}

impl<'a> Name<'a> {
    fn new(text: &'a str) -> Self {
        Name { hash: name_hash(text.as_bytes()), text }
    }
}

impl PartialEq for Name<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && same_text(self.text, other.text)
    }
}

impl Eq for Name<'_> {}

impl Hash for Name<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The hasher of the index: the key already is a hash.
#[derive(Debug, Default, Clone, Copy)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = name_hash(bytes);
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Equal text; rules share their chain's name, so the pointers are usually equal.
fn same_text(a: &str, b: &str) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// `a == b` for two rules of the same chain, without comparing the chain names (the
/// arguments are one buffer each, compared as bytes).
fn same_rule(a: &Rule, b: &Rule) -> bool {
    a.op == b.op && a.args == b.args
}

/// A chain's rules as runs of consecutive rules of the ruleset.
#[derive(Debug)]
pub(super) enum Runs<'a> {
    /// Zero or one run: the common case, no allocation.
    One(&'a [Rule]),
    /// Rules spread over several places (e.g. KUBE-SERVICES, one rule per service).
    Many(Vec<&'a [Rule]>),
}

impl<'a> Runs<'a> {
    fn push(&mut self, run: &'a [Rule]) {
        match self {
            Runs::One(first) if first.is_empty() => *first = run,
            Runs::One(first) => *self = Runs::Many(vec![first, run]),
            Runs::Many(runs) => runs.push(run),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Runs::One(run) if run.is_empty())
    }

    /// The rules in order.
    pub fn rules(&self) -> impl Iterator<Item = &'a Rule> + '_ {
        let runs: &[&'a [Rule]] = match self {
            Runs::One(run) => std::slice::from_ref(run),
            Runs::Many(runs) => runs,
        };
        runs.iter().flat_map(|run| run.iter())
    }

    fn len(&self) -> usize {
        match self {
            Runs::One(run) => run.len(),
            Runs::Many(runs) => runs.iter().map(|r| r.len()).sum(),
        }
    }

    /// Same rules in the same order (both are rules of the same chain).
    fn same_as(&self, other: &Runs<'_>) -> bool {
        self.len() == other.len() && self.rules().zip(other.rules()).all(|(a, b)| same_rule(a, b))
    }
}

/// One chain of one table as a ruleset leaves it: its declaration, if any, and its rules.
#[derive(Debug)]
pub(super) struct ChainView<'a> {
    pub name: &'a ChainName,
    pub decl: Option<&'a ChainDecl>,
    pub runs: Runs<'a>,
    /// False once a later `-X` deleted it (kept so that indices stay valid).
    pub live: bool,
}

impl ChainView<'_> {
    /// Same rules in the same order, and the same policy.
    pub fn same_as(&self, other: &ChainView<'_>) -> bool {
        fn policy(decl: Option<&ChainDecl>) -> Option<&str> {
            decl.and_then(|d| d.policy.as_deref())
        }
        policy(self.decl) == policy(other.decl) && self.runs.same_as(&other.runs)
    }
}

/// Every chain of one table of a ruleset (all its sections), grouped by name. Assumes what
/// the parser and `Table::declare` guarantee: a section declares a chain at most once.
#[derive(Debug)]
pub(super) struct Chains<'a> {
    pub table: TableName,
    /// Chains in first-mention order (declarations, then chains that only have rules).
    pub views: Vec<ChainView<'a>>,
    /// Name index, built once guessing and short scans have failed [`SCANS_BEFORE_INDEX`] times.
    index: Option<NameIndex<'a>>,
    scans: usize,
    /// The chain the last run went to (guess: the next run goes to the one after it).
    cursor: usize,
    /// Chains found to have several runs, most recent first (guess for KUBE-SERVICES).
    spread: [usize; 4],
}

type NameIndex<'a> = HashMap<Name<'a>, usize, BuildHasherDefault<PassThrough>>;

/// Linear searches allowed before a name index is built (a rendered ruleset needs a handful).
const SCANS_BEFORE_INDEX: usize = 16;

impl<'a> Chains<'a> {
    pub fn of(ruleset: &'a Ruleset, table: TableName) -> Self {
        let mut chains = Chains { table, views: Vec::new(), index: None, scans: 0, cursor: 0, spread: [usize::MAX; 4] };
        for section in ruleset.tables.iter().filter(|t| t.name == table) {
            chains.add_section(section);
        }
        chains
    }

    fn add_section(&mut self, section: &'a Table) {
        let first = self.views.is_empty();
        self.views.reserve(section.chains.len());
        for decl in &section.chains {
            // In the first section every declaration is a new chain: no lookup needed.
            let found = if first { None } else { self.locate(decl.name.as_str()) };
            let i = found.unwrap_or_else(|| self.push(&decl.name));
            let view = &mut self.views[i];
            view.decl = Some(decl);
            // A declaration flushes the chain (with --noflush): earlier sections' rules are gone.
            view.runs = Runs::One(&[]);
        }
        let mut rest = section.rules.as_slice();
        while let Some(first) = rest.first() {
            let len = rest.iter().position(|r| r.chain != first.chain).unwrap_or(rest.len());
            let (run, tail) = rest.split_at(len);
            let i = self.run_position(&first.chain);
            self.views[i].runs.push(run);
            rest = tail;
        }
        for deleted in &section.deletes {
            if let Some(i) = self.locate(deleted.as_str()) {
                self.views[i] = ChainView { name: deleted, decl: None, runs: Runs::One(&[]), live: false };
            }
        }
    }

    fn is_at(&self, i: usize, name: &str) -> bool {
        self.views.get(i).is_some_and(|v| v.live && same_text(v.name.as_str(), name))
    }

    /// Where the next run of rules of `chain` goes: guessed, else located (a chain that had
    /// rules already becomes a "spread" guess, a new one moves the cursor), else a new chain.
    fn run_position(&mut self, chain: &'a ChainName) -> usize {
        let name = chain.as_str();
        if let Some(i) = [self.cursor + 1, self.cursor].into_iter().find(|i| self.is_at(*i, name)) {
            self.cursor = i;
            return i;
        }
        if let Some(i) = self.spread.into_iter().find(|i| self.is_at(*i, name)) {
            return i;
        }
        let Some(i) = self.locate(name) else {
            self.cursor = self.push(chain);
            return self.cursor;
        };
        if self.views[i].runs.is_empty() {
            self.cursor = i;
        } else {
            self.spread.rotate_right(1);
            self.spread[0] = i;
        }
        i
    }

    /// The live chain `name`: by index once there is one, else by a linear scan.
    fn locate(&mut self, name: &str) -> Option<usize> {
        if self.index.is_none() && self.scans >= SCANS_BEFORE_INDEX {
            let live = self.views.iter().enumerate().filter(|(_, v)| v.live);
            self.index = Some(live.map(|(i, v)| (Name::new(v.name.as_str()), i)).collect());
        }
        match &self.index {
            Some(index) => index.get(&Name::new(name)).copied().filter(|i| self.views[*i].live),
            None => {
                self.scans += 1;
                (0..self.views.len()).find(|i| self.is_at(*i, name))
            }
        }
    }

    /// Appends a new, empty, undeclared chain.
    fn push(&mut self, name: &'a ChainName) -> usize {
        let i = self.views.len();
        self.views.push(ChainView { name, decl: None, runs: Runs::One(&[]), live: true });
        if let Some(index) = &mut self.index {
            index.insert(Name::new(name.as_str()), i);
        }
        i
    }
}

/// Pairs the live chains of `old` and `new` by name: `(new index, old index if any)` in `new`'s
/// order, plus whether each old chain was paired. Walks both in step (a chain is looked for
/// among the next [`PAIR_WINDOW`] old chains), then pairs what is left through a map.
pub(super) fn pair(old: &Chains<'_>, new: &Chains<'_>) -> (Vec<(usize, Option<usize>)>, Vec<bool>) {
    let mut paired = vec![false; old.views.len()];
    let mut pairs = Vec::with_capacity(new.views.len());
    let mut unpaired = Vec::new();
    let mut hint = 0;
    for (j, view) in new.views.iter().enumerate().filter(|(_, v)| v.live) {
        let name = view.name.as_str();
        let mut window = hint..(hint + PAIR_WINDOW).min(old.views.len());
        match window.find(|i| !paired[*i] && old.is_at(*i, name)) {
            Some(i) => {
                paired[i] = true;
                hint = i + 1;
                pairs.push((j, Some(i)));
            }
            None => unpaired.push(j),
        }
    }
    if !unpaired.is_empty() {
        let left = old.views.iter().enumerate().filter(|(i, v)| v.live && !paired[*i]);
        let left: NameIndex<'_> = left.map(|(i, v)| (Name::new(v.name.as_str()), i)).collect();
        for j in unpaired {
            let found = left.get(&Name::new(new.views[j].name.as_str())).copied();
            if let Some(i) = found {
                paired[i] = true;
            }
            pairs.push((j, found));
        }
        pairs.sort_unstable_by_key(|(j, _)| *j);
    }
    (pairs, paired)
}

/// How far ahead in the old chains [`pair`] looks before falling back to a map.
const PAIR_WINDOW: usize = 64;
