use proptest::prelude::*;

use super::*;
use crate::rules::parse::parse;

macro_rules! dump {
    ($name:literal) => {
        include_str!(concat!("../../../fixtures/dumps/", $name))
    };
}

const REFERENCE: &str = dump!("reference-2.6.save");
const RESTORE: &str = dump!("kube-proxy-v4.restore");

const ALL: DiffOptions = DiffOptions { kube_only: false };
const KUBE: DiffOptions = DiffOptions { kube_only: true };

fn diff_text(a: &str, b: &str, opts: &DiffOptions) -> Diff {
    diff(&parse(a).unwrap(), &parse(b).unwrap(), opts)
}

/// `text` with `from` replaced by `to`, which must occur.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "fixture lacks {from:?}");
    text.replacen(from, to, 1)
}

#[test]
fn saved_dumps_equal_the_restore_input_they_came_from() {
    let cases = [
        ("reference 2.6", REFERENCE, RESTORE),
        ("nft", dump!("kube-proxy-v4-nft.save"), RESTORE),
        ("legacy", dump!("kube-proxy-v4-legacy.save"), RESTORE),
        ("save -c", dump!("kube-proxy-v4-counters.save"), RESTORE),
        ("legacy save -c", dump!("kube-proxy-v4-counters-legacy.save"), RESTORE),
        ("extras nft", dump!("extras-v4-nft.save"), dump!("extras-v4.restore")),
        ("extras legacy", dump!("extras-v4-legacy.save"), dump!("extras-v4.restore")),
        ("v6 nft", dump!("kube-proxy-v6-nft.save"), dump!("kube-proxy-v6.restore")),
        ("v6 legacy", dump!("kube-proxy-v6-legacy.save"), dump!("kube-proxy-v6.restore")),
    ];
    for (name, saved, restore) in cases {
        for opts in [ALL, KUBE] {
            let d = diff_text(restore, saved, &opts);
            assert!(d.is_empty(), "{name} {opts:?}:\n{d}");
            assert!(diff_text(saved, restore, &opts).is_empty(), "{name} reversed");
        }
    }
    assert!(!diff_text(RESTORE, dump!("extras-v4.restore"), &ALL).is_empty());
}

#[test]
fn differences_are_reported() {
    let svc = "-A KUBE-SVC-CDGGSHYLG3RE2FKL";
    let stat1 = "-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment \"default/web:http -> 10.244.1.5:8080\" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-AFGSLHOD2HFNCBX4\n";
    let stat2 = "-A KUBE-SVC-CDGGSHYLG3RE2FKL -m comment --comment \"default/web:http -> 10.244.2.7:8080\" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-2RIJ5GIYXEFH6G4D\n";
    let last = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";
    let sep =
        "-A KUBE-SEP-RBX5X5TOEG5GD3RO -s 10.244.3.9/32 -m comment --comment \"default/web:http\" -j KUBE-MARK-MASQ\n";
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "changed probability",
            edit(REFERENCE, "0.33333333349", "0.25000000000"),
            vec![
                "chain KUBE-SVC-CDGGSHYLG3RE2FKL:".into(),
                format!("- {svc} -m comment --comment \"default/web:http -> 10.244.1.5:8080\" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-AFGSLHOD2HFNCBX4"),
                format!("+ {svc} -m comment --comment \"default/web:http -> 10.244.1.5:8080\" -m statistic --mode random --probability 0.25000000000 -j KUBE-SEP-AFGSLHOD2HFNCBX4"),
                "1 rules only in A, 1 only in B".into(),
            ],
        ),
        (
            "missing SEP rule",
            edit(REFERENCE, sep, ""),
            vec![
                "- -A KUBE-SEP-RBX5X5TOEG5GD3RO -m comment --comment default/web:http -s 10.244.3.9 -j KUBE-MARK-MASQ".into(),
                "1 rules only in A, 0 only in B".into(),
            ],
        ),
        (
            "swapped order in a KUBE-SVC chain",
            edit(REFERENCE, &format!("{stat1}{stat2}"), &format!("{stat2}{stat1}")),
            vec!["(moved: rule 2 in A, 3 in B)".into(), "0 rules only in A, 0 only in B, 1 rules moved".into()],
        ),
        (
            "different comment",
            edit(REFERENCE, "default/db has no endpoints", "default/db has no endpoint"),
            vec![
                "*filter\nchain KUBE-SERVICES:\n- -A KUBE-SERVICES -m comment --comment \"default/db has no endpoints\"".into(),
                "+ -A KUBE-SERVICES -d 10.96.200.20/32 -p tcp -m comment --comment \"default/db has no endpoint\"".into(),
            ],
        ),
        (
            "last rule moved",
            edit(&edit(REFERENCE, last, ""), "-A KUBE-SERVICES -d 10.96.100.10", &format!("{last}-A KUBE-SERVICES -d 10.96.100.10")),
            vec![
                "chain KUBE-SERVICES:\n! the \"must be the last rule\" rule is rule 1 of 2 in B\n".into(),
                "0 rules only in A, 0 only in B, 1 other differences".into(),
            ],
        ),
        (
            "chain only in B",
            edit(REFERENCE, "\n-A PREROUTING", "\n:KUBE-SEP-NEW - [0:0]\n-A KUBE-SEP-NEW -j DROP\n-A PREROUTING"),
            vec!["chain only in B: KUBE-SEP-NEW\n+ -A KUBE-SEP-NEW -j DROP\n".into(), "1 chains only in B".into()],
        ),
    ];
    for (name, b, wanted) in cases {
        let d = diff_text(RESTORE, &b, &ALL);
        let report = d.to_string();
        assert!(!d.is_empty(), "{name}");
        for want in wanted {
            assert!(report.contains(&want), "{name}: missing {want:?} in\n{report}");
        }
        assert_eq!(diff_text(RESTORE, &b, &KUBE), d, "{name}: all differences are kube-owned");
    }
}

#[test]
fn kube_only_ignores_other_owners() {
    let foreign = edit(
        REFERENCE,
        ":KUBE-SERVICES - [0:0]\n:KUBE-SVC",
        ":KUBE-SERVICES - [0:0]\n:DOCKER - [0:0]\n:FLANNEL-POSTRTG - [0:0]\n:KUBE-SVC",
    );
    let foreign = edit(
        &foreign,
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
         -A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n\
         -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n\
         -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN\n",
    );
    let foreign = edit(&foreign, ":KUBE-KUBELET-CANARY - [0:0]\n", "");
    assert!(diff_text(RESTORE, &foreign, &KUBE).is_empty());
    let report = diff_text(RESTORE, &foreign, &ALL).to_string();
    for want in [
        "chain only in B: FLANNEL-POSTRTG",
        "chain only in B: DOCKER",
        "chain only in A: KUBE-KUBELET-CANARY",
        "+ -A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG",
        "+ -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
    ] {
        assert!(report.contains(want), "missing {want:?} in\n{report}");
    }
}

#[test]
fn report_format() {
    let a = "*filter\n:FORWARD ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n:KUBE-OLD - [0:0]\n\
             -A KUBE-FORWARD -j A1\n-A KUBE-FORWARD -j A2\n-A KUBE-FORWARD -j A3\n-A KUBE-FORWARD -j A4\nCOMMIT\n";
    let b = "*filter\n:FORWARD DROP [9:9]\n:KUBE-FORWARD - [0:0]\n\
             -A KUBE-FORWARD -j A4\n-A KUBE-FORWARD -j A1\n-A KUBE-FORWARD -j A3\n-A KUBE-FORWARD -j B2\nCOMMIT\n";
    let report = diff_text(a, b, &ALL).to_string();
    assert_eq!(
        report,
        "*filter\n\
         chain FORWARD:\n\
         ! policy ACCEPT in A, DROP in B\n\
         chain KUBE-FORWARD:\n\
         - -A KUBE-FORWARD -j A2\n\
         ~ -A KUBE-FORWARD -j A4  (moved: rule 4 in A, 1 in B)\n\
         + -A KUBE-FORWARD -j B2\n\
         chain only in A: KUBE-OLD\n\
         1 rules only in A, 1 only in B, 1 rules moved, 1 chains only in A, 1 other differences\n"
    );
    assert_eq!(Diff::default().to_string(), "no differences\n");
    // Under kube_only the built-in policy no longer counts.
    assert!(!diff_text(a, b, &KUBE).to_string().contains("policy"));
}

#[test]
fn effective_state_is_compared() {
    let cases = [
        // -I puts a rule first, at a position, or at the end when the position is past it.
        ("-A X -j a\n-A X -j b\n", "-A X -j b\n-I X -j a\n", true),
        ("-A X -j a\n-A X -j b\n-A X -j c\n", "-A X -j a\n-A X -j c\n-I X 2 -j b\n", true),
        ("-A X -j a\n-A X -j b\n", "-A X -j a\n-I X 9 -j b\n", true),
        // -D removes the matching rule in any spelling; an unmatched -D stays a difference.
        ("-A X -j a\n", "-A X -j a\n-A X -s 1.2.3.4 -j b\n-D X --source 1.2.3.4/32 --jump b\n", true),
        ("-A X -j a\n", "-A X -j a\n-D X -j b\n", false),
        // A chain declared and deleted is gone.
        ("", ":GONE - [0:0]\n-X GONE\n", true),
        // Order matters in KUBE-SVC chains, not in KUBE-SERVICES.
        ("-A X -j a\n-A X -j b\n", "-A X -j b\n-A X -j a\n", false),
    ];
    for (a, b, equal) in cases {
        let wrap = |rules: &str, chain: &str| {
            let rules = rules.replace("-A X", &format!("-A {chain}"));
            let rules = rules.replace("-I X", &format!("-I {chain}"));
            let rules = rules.replace("-D X", &format!("-D {chain}"));
            format!("*nat\n:{chain} - [0:0]\n{rules}COMMIT\n")
        };
        let d = diff_text(&wrap(a, "KUBE-SVC-X"), &wrap(b, "KUBE-SVC-X"), &ALL);
        assert_eq!(d.is_empty(), equal, "{a:?} vs {b:?}:\n{d}");
    }
    let wrap = |rules: &str| format!("*nat\n:KUBE-SERVICES - [0:0]\n{rules}COMMIT\n");
    assert!(diff_text(
        &wrap("-A KUBE-SERVICES -j a\n-A KUBE-SERVICES -j b\n"),
        &wrap("-A KUBE-SERVICES -j b\n-A KUBE-SERVICES -j a\n"),
        &ALL
    )
    .is_empty());
    // Missing tables equal tables holding only empty built-in chains.
    assert!(diff_text("", "*raw\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", &ALL).is_empty());
}

#[test]
fn long_chains_fall_back_to_multisets() {
    let chain = |rules: Vec<String>| {
        let body: String = rules.iter().map(|r| format!("-A KUBE-SVC-X -j {r}\n")).collect();
        format!("*nat\n:KUBE-SVC-X - [0:0]\n{body}COMMIT\n")
    };
    let forward: Vec<String> = (0..2100).map(|i| format!("T{i}")).collect();
    let reversed: Vec<String> = forward.iter().rev().cloned().collect();
    let d = diff_text(&chain(forward.clone()), &chain(reversed), &ALL);
    assert_eq!(d.problems(), 1, "{d}");
    assert_eq!(d.tables[0].chains[0].problems, [ChainProblem::OrderDiffers]);
    assert_eq!(d.rules_only_in(Side::A) + d.rules_only_in(Side::B), 0);

    let ends = |first: &str, last: &str| {
        let mut rules = forward.clone();
        rules.insert(0, first.to_string());
        rules.push(last.to_string());
        chain(rules)
    };
    let d = diff_text(&ends("A0", "A9"), &ends("B0", "B9"), &ALL);
    assert_eq!((d.problems(), d.rules_only_in(Side::A), d.rules_only_in(Side::B)), (0, 2, 2));
}

proptest! {
    #[test]
    fn a_ruleset_equals_itself_and_its_text(rs in crate::rules::parse::tests::ruleset()) {
        prop_assert!(diff(&rs, &rs, &ALL).is_empty());
        let reparsed = parse(&rs.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(diff(&reparsed, &rs, &KUBE).is_empty());
    }
}
