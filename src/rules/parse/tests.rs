use proptest::prelude::*;

use super::*;
use crate::rules::ruleset::Arg;

const REFERENCE: &str = include_str!("../../../fixtures/dumps/reference-2.6.save");
const RESTORE: &str = include_str!("../../../fixtures/dumps/kube-proxy-v4.restore");
const COUNTERS: &str = include_str!("../../../fixtures/dumps/kube-proxy-v4-counters.save");
const COUNTERS_LEGACY: &str = include_str!("../../../fixtures/dumps/kube-proxy-v4-counters-legacy.save");
const EXTRAS: &str = include_str!("../../../fixtures/dumps/extras-v4.restore");

fn chain(name: &str) -> ChainName {
    ChainName::new(name).unwrap()
}

fn args(rule: &Rule) -> Vec<String> {
    rule.args.iter().map(|a| a.to_string()).collect()
}

#[test]
fn parses_the_reference_save_dump() {
    let rs = parse(REFERENCE).unwrap();
    let names: Vec<TableName> = rs.tables.iter().map(|t| t.name).collect();
    assert_eq!(names, [TableName::Mangle, TableName::Filter, TableName::Nat]);
    let nat = rs.table(TableName::Nat).unwrap();
    assert_eq!(nat.chains.len(), 15);
    assert_eq!(nat.chains[0].policy.as_deref(), Some("ACCEPT"));
    assert_eq!(nat.chains[4], ChainDecl::user(chain("KUBE-EXT-CDGGSHYLG3RE2FKL")));
    assert_eq!(nat.rules.len(), 22);
    let masq = nat.chain_rules("KUBE-SVC-CDGGSHYLG3RE2FKL").next().unwrap();
    assert_eq!(masq.op, RuleOp::Append);
    assert_eq!(
        args(masq),
        [
            "! -s 10.244.0.0/16",
            "-d 10.96.100.10/32",
            "-p tcp",
            "-m comment",
            "--comment \"default/web:http cluster IP\"",
            "-m tcp",
            "--dport 80",
            "-j KUBE-MARK-MASQ"
        ]
    );
    assert_eq!(rs.rule_count(), 38);
}

#[test]
fn parses_restore_input_with_unquoted_comments() {
    let rs = parse(RESTORE).unwrap();
    let nat = rs.table(TableName::Nat).unwrap();
    let nodeport = nat.chain_rules("KUBE-NODEPORTS").next().unwrap();
    assert_eq!(nodeport.comment(), Some("default/web:http"));
    assert_eq!(nodeport.target(), Some("KUBE-EXT-CDGGSHYLG3RE2FKL"));
    let filter = rs.table(TableName::Filter).unwrap();
    let firewall = filter.chain_rules("KUBE-FIREWALL").next().unwrap();
    let negated: Vec<&str> = firewall.args.iter().filter(|a| a.negated).map(|a| a.flag).collect();
    assert_eq!(negated, ["-s", "--ctstate"]);
    let extras = parse(EXTRAS).unwrap();
    let nat = extras.table(TableName::Nat).unwrap();
    assert_eq!(nat.deletes, [chain("KUBE-SVC-STALESTALESTALE2")]);
    assert!(!nat.is_declared("KUBE-SVC-STALESTALESTALE2"));
}

#[test]
fn counters_comments_and_policies_are_read() {
    for text in [COUNTERS, COUNTERS_LEGACY] {
        let rs = parse(text).unwrap();
        let filter = rs.table(TableName::Filter).unwrap();
        let forward = filter.chains.iter().find(|c| c.name.as_str() == "FORWARD");
        assert_eq!(forward.unwrap().policy.as_deref(), Some("DROP"));
        let first = filter.rules.first().unwrap();
        assert_eq!(first.to_string(), "-A INPUT -j KUBE-FIREWALL");
        assert_eq!(rs.rule_count(), parse(RESTORE).unwrap().rule_count());
    }
}

#[test]
fn commands_change_the_table() {
    let text = "\
# comment
*filter
:INPUT DROP [1:2]
:A - [0:0]
:B - [0:0]
-N C
-A A -j ACCEPT
-I A -j DROP
-I A 2 -s 10.0.0.1 -j RETURN
--append B --jump A
-D A -j ACCEPT
-A C -j A
-F C
-P FORWARD ACCEPT
-Z
-X C

COMMIT
";
    let rs = parse(text).unwrap();
    let t = &rs.tables[0];
    let decls: Vec<(&str, Option<&str>)> = t.chains.iter().map(|c| (c.name.as_str(), c.policy.as_deref())).collect();
    assert_eq!(decls, [("INPUT", Some("DROP")), ("A", None), ("B", None), ("FORWARD", Some("ACCEPT"))]);
    let rules: Vec<String> = t.rules.iter().map(ToString::to_string).collect();
    assert_eq!(
        rules,
        ["-A A -j ACCEPT", "-I A -j DROP", "-I A 2 -s 10.0.0.1 -j RETURN", "-A B --jump A", "-D A -j ACCEPT"]
    );
    assert_eq!(t.deletes, [chain("C")]);
}

#[test]
fn errors_name_the_line() {
    let long = "A".repeat(29);
    let cases: Vec<(String, usize, &str)> = vec![
        ("-A X -j Y\n".into(), 1, "outside a table"),
        ("COMMIT\n".into(), 1, "outside a table"),
        ("*bogus\nCOMMIT\n".into(), 1, "unknown table"),
        ("*nat\n*filter\n".into(), 2, "before COMMIT of table nat"),
        ("\n*nat\n:X - [0:0]\n".into(), 2, "no COMMIT"),
        ("*nat\n:X - [0:0]\n-A X --comment \"open\nCOMMIT\n".into(), 3, "unterminated quote"),
        ("*nat\n-A\nCOMMIT\n".into(), 2, "no chain"),
        ("*nat\n-A -j X\nCOMMIT\n".into(), 2, "no chain"),
        (format!("*nat\n:{long} - [0:0]\nCOMMIT\n"), 2, "invalid chain name"),
        (format!("*nat\n-A {long} -j X\nCOMMIT\n"), 2, "invalid chain name"),
        ("*filter\n-A PREROUTING -j X\nCOMMIT\n".into(), 2, "undeclared chain \"PREROUTING\""),
        ("*nat\n:X - [0:0]\n-X X\n-A X -j Y\nCOMMIT\n".into(), 4, "undeclared chain"),
        ("*nat\n:X - [0:0]\n:X - [0:0]\nCOMMIT\n".into(), 3, "declared twice"),
        ("*nat\n:X - [0:0]\n-A X -j ACCEPT\n-X X\nCOMMIT\n".into(), 4, "still has rules"),
        ("*nat\n:X - [0:0]\n-A OUTPUT -j X\n-X X\nCOMMIT\n".into(), 4, "jumps to it"),
        ("*nat\n-X PREROUTING\nCOMMIT\n".into(), 2, "built-in chain"),
        ("*nat\n:X ACCEPT [0:0]\nCOMMIT\n".into(), 2, "policy on a user chain"),
        ("*nat\n:INPUT REJECT [0:0]\nCOMMIT\n".into(), 2, "policy must be"),
        ("*nat\n:X\nCOMMIT\n".into(), 2, "missing policy"),
        ("*nat\n:X - [a:b]\nCOMMIT\n".into(), 2, "counters"),
        ("*nat\n:X - [0:0] extra\nCOMMIT\n".into(), 2, "extra words"),
        ("*nat\n:X - [0:0]\n-A X value -j Y\nCOMMIT\n".into(), 3, "before any flag"),
        ("*nat\n:X - [0:0]\n-A X -j Y !\nCOMMIT\n".into(), 3, "at the end"),
        ("*nat\n:X - [0:0]\n-I X 0 -j Y\nCOMMIT\n".into(), 3, "insert position"),
        ("*nat\n:X - [0:0]\n-D X 2\nCOMMIT\n".into(), 3, "rule number"),
        ("*nat\n-P X ACCEPT\nCOMMIT\n".into(), 2, "-P of a user chain"),
        ("*nat\n[1:2]\nCOMMIT\n".into(), 2, "without a command"),
        ("*nat\n-R OUTPUT 1 -j X\nCOMMIT\n".into(), 2, "unknown command \"-R\""),
        ("*nat\nbogus words\nCOMMIT\n".into(), 2, "unknown command \"bogus\""),
    ];
    for (text, line, needle) in cases {
        let err = parse(&text).unwrap_err();
        assert_eq!(err.line(), line, "{text:?}: {err}");
        let shown = format!("{err} {}", std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default());
        assert!(shown.contains(needle), "{text:?}: {shown}");
        assert!(shown.starts_with(&format!("line {line}: ")), "{shown}");
    }
    let err = parse("*nat\n-A KUBE-X -m comment --comment x -j Y\nCOMMIT\n").unwrap_err();
    assert_eq!(err.to_string(), "line 2: rule for undeclared chain \"KUBE-X\": -A KUBE-X -m comment --comment x -j Y");
}

#[test]
fn parse_inverts_write() {
    let mut nat = Table::new(TableName::Nat);
    nat.chains.push(ChainDecl { name: chain("PREROUTING"), policy: Some("ACCEPT".into()) });
    nat.declare(&chain("KUBE-SERVICES"));
    nat.rules.push(
        Rule::append(&chain("KUBE-SERVICES"))
            .comment("say \"hi\" \\ back")
            .arg(Arg::new("-s", "10.0.0.0/8").negate())
            .arg(Arg::bare("--rcheck"))
            .arg(Arg::new("--empty", ""))
            .jump("KUBE-MARK-MASQ"),
    );
    nat.rules.push(Rule {
        op: RuleOp::Insert(Some(3)),
        chain: chain("PREROUTING"),
        args: vec![Arg::new("-j", "KUBE-SERVICES")].into(),
    });
    nat.rules.push(Rule::new(RuleOp::Delete, chain("KUBE-SERVICES"), vec![]));
    nat.deletes.push(chain("KUBE-SVC-OLD"));
    let rs = Ruleset { tables: vec![nat, Table::new(TableName::Filter)] };
    assert_eq!(parse(&rs.to_string()).unwrap(), rs);
}

fn value() -> impl Strategy<Value = String> {
    "[ -~\u{e9}\u{4e2d}]{0,12}".prop_filter("bare values starting with - read back as flags", |v| !v.starts_with('-'))
}

fn flag() -> impl Strategy<Value = String> {
    prop_oneof!["-[a-zA-Z]", "--[a-z][a-z-]{1,12}"]
        .prop_filter("no jumps", |f| !matches!(f.as_str(), "-j" | "-g" | "--jump" | "--goto"))
}

/// Any group, or a `--comment` with arbitrary text (quotes, backslashes, spaces, non-ASCII).
fn arg() -> impl Strategy<Value = Arg> {
    let any_group = (any::<bool>(), flag(), prop::collection::vec(value(), 0..3))
        .prop_map(|(negated, flag, values)| Arg { negated, flag: flag.into(), values });
    prop_oneof![any_group, value().prop_map(|text| Arg::new("--comment", text))]
}

fn op() -> impl Strategy<Value = RuleOp> {
    prop_oneof![Just(RuleOp::Append), Just(RuleOp::Delete), proptest::option::of(1u32..1000).prop_map(RuleOp::Insert),]
}

fn user_chain() -> impl Strategy<Value = ChainName> {
    "[A-Z][A-Z0-9_-]{0,27}".prop_filter("not built-in", |n| !chain(n).is_builtin()).prop_map(|n| chain(&n))
}

fn table(name: TableName) -> impl Strategy<Value = Table> {
    let builtins = builtin_chains(name);
    let policies = prop::collection::vec(
        proptest::option::of(prop_oneof![Just("ACCEPT"), Just("DROP"), Just("-")]),
        builtins.len(),
    );
    let names = prop::collection::btree_set(user_chain(), 0..8);
    (policies, names, any::<prop::sample::Index>()).prop_flat_map(move |(policies, names, split)| {
        let names: Vec<ChainName> = names.into_iter().collect();
        let (users, deletes) = names.split_at(split.index(names.len() + 1).min(names.len()));
        let mut chains: Vec<ChainDecl> = Vec::new();
        for (builtin, policy) in builtins.iter().zip(policies) {
            if let Some(policy) = policy {
                chains.push(ChainDecl { name: chain(builtin), policy: (policy != "-").then(|| policy.to_string()) });
            }
        }
        chains.extend(users.iter().cloned().map(ChainDecl::user));
        let targets: Vec<ChainName> = builtins.iter().map(|b| chain(b)).chain(users.iter().cloned()).collect();
        let rule = (op(), prop::sample::select(targets), prop::collection::vec(arg(), 0..5))
            .prop_map(|(op, chain, args)| Rule::new(op, chain, args));
        let deletes = deletes.to_vec();
        prop::collection::vec(rule, 0..8).prop_map(move |rules| Table {
            name,
            chains: chains.clone(),
            rules,
            deletes: deletes.clone(),
        })
    })
}

/// Rulesets the writer can produce and the parser must read back unchanged.
pub(crate) fn ruleset() -> impl Strategy<Value = Ruleset> {
    let all = [TableName::Raw, TableName::Mangle, TableName::Nat, TableName::Filter, TableName::Security];
    prop::sample::subsequence(all.to_vec(), 0..=all.len())
        .prop_flat_map(|names| names.into_iter().map(table).collect::<Vec<_>>())
        .prop_map(|tables| Ruleset { tables })
}

fn garbage_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[-!\"\\\\ :*A-Za-z0-9\\[\\]]{0,30}",
        prop::sample::select(vec![
            "*nat",
            "*filter",
            "COMMIT",
            ":X - [0:0]",
            ":INPUT DROP [1:2]",
            "-A X -j Y",
            "-A INPUT ! -s 1.2.3.4 -j X",
            "-I X 0",
            "-X X",
            "-F",
            "-D X 1",
            "\"",
            "[0:0] -A X",
            "-A X -m comment --comment \"a \\\" b\"",
            "# c",
            "",
        ])
        .prop_map(str::to_string),
    ]
}

proptest! {
    #[test]
    fn parse_write_round_trips(rs in ruleset()) {
        let text = rs.to_string();
        prop_assert_eq!(parse(&text).map_err(|e| e.to_string()), Ok(rs), "{}", text);
    }

    #[test]
    fn never_panics_on_lines(lines in prop::collection::vec(garbage_line(), 0..20)) {
        let _ = parse(&lines.join("\n"));
    }

    #[test]
    fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn a_jump_to_a_chain_deleted_earlier_is_refused() {
    let text = "*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-X KUBE-B\n-A KUBE-A -j KUBE-B\nCOMMIT\n";
    let err = parse(text).unwrap_err().to_string();
    assert!(err.contains("line 5") && err.contains("deleted earlier"), "{err}");
    // A -D of such a jump is fine (it removes nothing that could fail later).
    let text = "*nat\n:KUBE-A - [0:0]\n:KUBE-B - [0:0]\n-X KUBE-B\n-D KUBE-A -j KUBE-B\nCOMMIT\n";
    assert!(parse(text).is_ok());
}
