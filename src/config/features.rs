//! `--feature-gates` / `featureGates`: what each gate that changes kube-proxy's behaviour means
//! for kubenat. kube-proxy accepts every Kubernetes gate name (distributions pass one gate list
//! to every component), so an unknown name is accepted and reported, never fatal.

use std::collections::BTreeMap;

use super::effective::{Level, Note};

/// What kubenat does with a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// kubenat always behaves as with the gate on (a GA behaviour); turning it off is not honoured.
    AlwaysOn,
    /// Honoured both ways (on and off).
    Honoured,
    /// The gate concerns another proxy mode, platform or logging detail: no effect here.
    NoEffect,
}

/// Gates that kube-proxy reads (1.28–1.35), and kubenat's answer.
pub const GATES: [(&str, Support); 16] = [
    ("TopologyAwareHints", Support::AlwaysOn),
    ("ServiceTrafficDistribution", Support::AlwaysOn),
    ("ProxyTerminatingEndpoints", Support::AlwaysOn),
    ("ServiceInternalTrafficPolicy", Support::AlwaysOn),
    ("EndpointSliceTerminatingCondition", Support::AlwaysOn),
    ("KubeProxyDrainingTerminatingNodes", Support::AlwaysOn),
    ("LoadBalancerIPMode", Support::AlwaysOn),
    ("PreferSameTrafficDistribution", Support::Honoured),
    ("NFTablesProxyMode", Support::NoEffect),
    ("WinDSR", Support::NoEffect),
    ("WinOverlay", Support::NoEffect),
    ("ContextualLogging", Support::NoEffect),
    ("LoggingAlphaOptions", Support::NoEffect),
    ("LoggingBetaOptions", Support::NoEffect),
    ("AllAlpha", Support::NoEffect),
    ("AllBeta", Support::NoEffect),
];

/// What kubenat does with `name`, if kube-proxy reads it.
pub fn support(name: &str) -> Option<Support> {
    GATES.iter().find(|(gate, _)| *gate == name).map(|(_, support)| *support)
}

/// Start-up notes for the gates that were set.
pub fn notes(gates: &BTreeMap<String, bool>) -> Vec<Note> {
    let mut ignored_off = Vec::new();
    let mut other = Vec::new();
    for (name, enabled) in gates {
        match (support(name), enabled) {
            (Some(Support::AlwaysOn), false) => ignored_off.push(name.as_str()),
            (Some(_), _) => {}
            (None, _) => other.push(name.as_str()),
        }
    }
    let mut notes = Vec::new();
    if !ignored_off.is_empty() {
        notes.push(Note {
            level: Level::Warn,
            daemon_only: false,
            text: format!("feature gates turned off but always on in kubenat: {}", ignored_off.join(", ")),
        });
    }
    if !other.is_empty() {
        notes.push(Note {
            level: Level::Info,
            daemon_only: false,
            text: format!("feature gates that do not change kube-proxy's behaviour, ignored: {}", other.join(", ")),
        });
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_are_reported_by_what_kubenat_does() {
        let gates = BTreeMap::from([
            ("TopologyAwareHints".to_string(), false),
            ("ServiceTrafficDistribution".to_string(), true),
            ("PreferSameTrafficDistribution".to_string(), true),
            ("SomeFutureProxyGate".to_string(), true),
            ("InPlacePodVerticalScaling".to_string(), true),
            ("NFTablesProxyMode".to_string(), true),
        ]);
        let notes = notes(&gates);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].text.contains("TopologyAwareHints") && notes[0].level == Level::Warn);
        assert!(notes[1].text.contains("InPlacePodVerticalScaling") && notes[1].text.contains("SomeFutureProxyGate"));
        assert_eq!(notes[1].level, Level::Info);
        let quiet = ["NFTablesProxyMode", "ServiceTraffic", "PreferSameTrafficDistribution"];
        assert!(!notes.iter().any(|n| quiet.iter().any(|q| n.text.contains(q))));
        assert!(super::notes(&BTreeMap::new()).is_empty());
    }
}
