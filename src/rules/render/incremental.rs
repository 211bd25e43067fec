//! Incremental rendering: a service port's rules are a pure function of that port and the node
//! configuration, so they are rendered once and kept per port, and a sync re-renders only the
//! ports whose inputs changed. The chains the ports share (KUBE-SERVICES, KUBE-NODEPORTS, the
//! filter chains, and in tree mode the dispatch chains) are assembled from the ports'
//! contributions only when a contribution changed.
//!
//! [`Incremental::update`] returns the two small rulesets a partial plan needs: the chains
//! that changed as they were (`last`) and as they are now (`next`), each chain complete. A new
//! node configuration (a new address, a new lease) or a switch into or out of large-cluster
//! mode re-renders everything and returns the whole rulesets. [`Incremental::ruleset`] is
//! always exactly what [`render`](super::render) gives for the same inputs.

use std::cmp::Ordering;
use std::collections::btree_map::{self, BTreeMap};
use std::collections::BTreeSet;
use std::iter::Peekable;
use std::sync::Arc;

use super::{dispatch, service, static_rules, Output, LARGE_CLUSTER_ENDPOINTS};
use crate::model::{ClusterState, IpFamily, NodeConfig, ServicePort, ServicePortName, ServicesDispatch};
use crate::rules::chain_names::{fixed, KUBE_SERVICES};
use crate::rules::ruleset::{ChainDecl, ChainName, Rule, Ruleset, Table, TableName};

/// The two tables the renderer writes, in its order.
const TABLES: [TableName; 2] = [TableName::Filter, TableName::Nat];

/// One service port's part of the ruleset, exactly as the renderer wrote it.
#[derive(Debug)]
struct Part {
    /// The input it was rendered from.
    input: Arc<ServicePort>,
    /// Its chain declarations and rules, per table of [`TABLES`].
    tables: [Table; 2],
    /// Per table, the positions in `tables[i].rules` of rules in chains the port does not
    /// declare (its contributions to shared chains).
    shared: [Vec<usize>; 2],
    /// Its endpoints of the family, when it has a cluster IP of the family (large-cluster mode
    /// counts those).
    endpoints: usize,
}

impl Part {
    fn render(input: Arc<ServicePort>, node: &NodeConfig, large_cluster: bool) -> Part {
        let mut out =
            Output { node, filter: Table::new(TableName::Filter), nat: Table::new(TableName::Nat), large_cluster };
        service::render_service(&mut out, &input);
        let tables = [out.filter, out.nat];
        let shared = tables.each_ref().map(|t| {
            let own: BTreeSet<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
            (0..t.rules.len()).filter(|i| !own.contains(t.rules[*i].chain.as_str())).collect()
        });
        let endpoints = endpoint_count(&input, node.family);
        Part { input, tables, shared, endpoints }
    }

    /// Its rules in the shared chain `chain` of table `t`, in order.
    fn contributions<'a>(&'a self, t: usize, chain: &'a ChainName) -> impl Iterator<Item = &'a Rule> + 'a {
        self.shared[t].iter().map(move |i| &self.tables[t].rules[*i]).filter(move |r| &r.chain == chain)
    }

    /// The shared chains of table `t` it writes into.
    fn shared_chains(&self, t: usize) -> impl Iterator<Item = &ChainName> + '_ {
        self.shared[t].iter().map(move |i| &self.tables[t].rules[*i].chain)
    }
}

/// Endpoints of `family` a port counts toward large-cluster mode.
fn endpoint_count(port: &ServicePort, family: IpFamily) -> usize {
    if port.cluster_ip(family).is_none() {
        return 0;
    }
    port.endpoints.iter().filter(|e| family.contains(&e.addr.ip())).count()
}

/// What changed between the ruleset before an update and after it, chain by chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Every chain that changed, complete, as it was (declared when it is a user chain).
    pub last: Ruleset,
    /// The same chains as they are now; a chain only in `last` is gone.
    pub next: Ruleset,
    /// Service ports re-rendered.
    pub ports: usize,
    /// Everything was re-rendered (new node configuration or large-cluster switch): `last` and
    /// `next` are the whole rulesets.
    pub rebuilt: bool,
}

impl Change {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.last == self.next
    }
}

/// The rendered ruleset of one family, kept per service port.
#[derive(Debug)]
pub struct Incremental {
    node: NodeConfig,
    large_cluster: bool,
    /// Endpoints counted toward large-cluster mode.
    endpoints: usize,
    ports: BTreeMap<ServicePortName, Part>,
    /// The chains and rules written before and after the ports' (static), per table of
    /// [`TABLES`].
    before: [Table; 2],
    after: [Table; 2],
    /// Rules in the whole ruleset, per table of [`TABLES`].
    totals: [usize; 2],
}

impl Incremental {
    /// Renders every port of `state` for `node`.
    pub fn new(state: &ClusterState, node: &NodeConfig) -> Self {
        let mut this = Incremental {
            node: node.clone(),
            large_cluster: super::large_cluster(state, node.family),
            endpoints: 0,
            ports: BTreeMap::new(),
            before: empty_tables(),
            after: empty_tables(),
            totals: [0; 2],
        };
        this.rebuild(state);
        this
    }

    /// The node configuration the rules are rendered for.
    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    /// Whether the family is in kube-proxy's large-cluster mode.
    pub fn large_cluster(&self) -> bool {
        self.large_cluster
    }

    /// Rules in the whole ruleset in `table`.
    pub fn rules_total(&self, table: TableName) -> usize {
        TABLES.iter().position(|t| *t == table).map_or(0, |i| self.totals[i])
    }

    /// Service ports rendered.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether no service port is rendered.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Brings the rendering up to `state` and `node`; returns what changed.
    pub fn update(&mut self, state: &ClusterState, node: &NodeConfig) -> Change {
        let changed = self.changed_ports(state);
        let endpoints = self.endpoints_after(state, &changed);
        let large_cluster = endpoints > LARGE_CLUSTER_ENDPOINTS;
        if *node != self.node || large_cluster != self.large_cluster {
            let last = self.ruleset();
            self.node = node.clone();
            self.large_cluster = large_cluster;
            self.rebuild(state);
            return Change { last, next: self.ruleset(), ports: self.ports.len(), rebuilt: true };
        }
        if changed.is_empty() {
            return Change::default();
        }
        let ports = changed.len();
        let fresh: Vec<(ServicePortName, Option<Part>)> = changed
            .into_iter()
            .map(|name| {
                let part = state.services.get(&name).map(|s| Part::render(s.clone(), &self.node, self.large_cluster));
                (name, part)
            })
            .collect();
        let shared = self.shared_chains_changing(&fresh);
        let mut last = Ruleset { tables: TABLES.iter().map(|t| Table::new(*t)).collect() };
        let mut next = last.clone();
        self.shared_chains_into(&mut last, &shared);
        for (name, part) in fresh {
            if let Some(old) = self.ports.remove(&name) {
                own_chains_into(&mut last, &old);
            }
            if let Some(part) = part {
                own_chains_into(&mut next, &part);
                self.ports.insert(name, part);
            }
        }
        self.endpoints = endpoints;
        self.shared_chains_into(&mut next, &shared);
        for (i, total) in self.totals.iter_mut().enumerate() {
            *total = *total + next.tables[i].rules.len() - last.tables[i].rules.len();
        }
        for ruleset in [&mut last, &mut next] {
            ruleset.tables.retain(|t| !(t.chains.is_empty() && t.rules.is_empty()));
        }
        Change { last, next, ports, rebuilt: false }
    }

    /// The whole ruleset, exactly as [`render`](super::render) writes it.
    pub fn ruleset(&self) -> Ruleset {
        let [mut filter, mut nat] = self.before.clone();
        // Exact room: a full sync's copy of the ruleset is the daemon's peak.
        let chains = |t: usize| {
            self.ports.values().map(|p| p.tables[t].chains.len()).sum::<usize>() + self.after[t].chains.len()
        };
        for (t, table) in [&mut filter, &mut nat].into_iter().enumerate() {
            table.chains.reserve_exact(chains(t));
            table.rules.reserve_exact(self.totals[t].saturating_sub(table.rules.len()));
        }
        for part in self.ports.values() {
            for (table, own) in [&mut filter, &mut nat].into_iter().zip(&part.tables) {
                table.chains.extend(own.chains.iter().cloned());
                table.rules.extend(own.rules.iter().cloned());
            }
        }
        for (table, after) in [&mut filter, &mut nat].into_iter().zip(&self.after) {
            table.chains.extend(after.chains.iter().cloned());
            table.rules.extend(after.rules.iter().cloned());
        }
        if self.node.services_dispatch == ServicesDispatch::Tree {
            dispatch::dispatch_tree(&mut nat, self.node.family);
        }
        Ruleset { tables: vec![filter, nat] }
    }

    /// Re-renders every port of `state` for the current node configuration.
    fn rebuild(&mut self, state: &ClusterState) {
        let (node, large_cluster) = (&self.node, self.large_cluster);
        self.ports = state
            .services
            .iter()
            .map(|(name, svc)| (name.clone(), Part::render(svc.clone(), node, large_cluster)))
            .collect();
        self.endpoints = self.ports.values().map(|p| p.endpoints).sum();
        let statics = |write: fn(&mut Output)| {
            let [filter, nat] = empty_tables();
            let mut out = Output { node, filter, nat, large_cluster };
            write(&mut out);
            [out.filter, out.nat]
        };
        (self.before, self.after) = (statics(static_rules::preamble), statics(static_rules::postamble));
        let whole = self.ruleset();
        self.totals = TABLES.map(|t| whole.table(t).map_or(0, |t| t.rules.len()));
    }

    /// Ports whose input differs between the rendering and `state` (added, changed, gone), in
    /// order. Walks both in step comparing pointers first: a port the source did not touch is
    /// the same allocation. A port equal by value gets the new pointer and is not listed.
    fn changed_ports(&mut self, state: &ClusterState) -> Vec<ServicePortName> {
        let mut changed = Vec::new();
        let mut refreshed = Vec::new();
        for step in merge(self.ports.iter(), state.services.iter()) {
            match step {
                Step::Both(name, part, input) => {
                    if Arc::ptr_eq(&part.input, input) {
                        continue;
                    }
                    if *part.input == **input {
                        refreshed.push((name.clone(), input.clone()));
                    } else {
                        changed.push(name.clone());
                    }
                }
                Step::Old(name) | Step::New(name) => changed.push(name.clone()),
            }
        }
        for (name, input) in refreshed {
            if let Some(part) = self.ports.get_mut(&name) {
                part.input = input;
            }
        }
        changed
    }

    /// The large-cluster endpoint count once `changed` are re-rendered from `state`.
    fn endpoints_after(&self, state: &ClusterState, changed: &[ServicePortName]) -> usize {
        let family = self.node.family;
        changed.iter().fold(self.endpoints, |total, name| {
            let old = self.ports.get(name).map_or(0, |p| p.endpoints);
            let new = state.services.get(name).map_or(0, |s| endpoint_count(s, family));
            total - old + new
        })
    }

    /// The shared chains (per table of [`TABLES`]) whose contributions differ between the
    /// current parts of the `fresh` ports and their new parts (`None`: the port is gone). In
    /// tree mode a changed nat KUBE-SERVICES stands for the whole dispatch tree.
    fn shared_chains_changing(&self, fresh: &[(ServicePortName, Option<Part>)]) -> [BTreeSet<ChainName>; 2] {
        let mut chains: [BTreeSet<ChainName>; 2] = Default::default();
        for (name, new) in fresh {
            let old = self.ports.get(name);
            for (t, set) in chains.iter_mut().enumerate() {
                let mut candidates: BTreeSet<&ChainName> = BTreeSet::new();
                candidates.extend(old.iter().flat_map(|p| p.shared_chains(t)));
                candidates.extend(new.iter().flat_map(|p| p.shared_chains(t)));
                for chain in candidates {
                    let before = old.iter().flat_map(|p| p.contributions(t, chain));
                    let after = new.iter().flat_map(|p| p.contributions(t, chain));
                    if !before.eq(after) {
                        set.insert(chain.clone());
                    }
                }
            }
        }
        chains
    }

    /// The nat KUBE-SERVICES chain as rendered now, rearranged into the dispatch tree.
    fn tree(&self, services: &ChainName) -> Table {
        let mut nat = Table::new(TableName::Nat);
        nat.push_chain(services);
        nat.rules = self.assemble(1, services);
        dispatch::dispatch_tree(&mut nat, self.node.family);
        nat
    }

    /// Every rule of the shared chain `chain` of table `t`, in order.
    fn assemble(&self, t: usize, chain: &ChainName) -> Vec<Rule> {
        let statics =
            |table: &[Table; 2]| table[t].rules.iter().filter(|r| &r.chain == chain).cloned().collect::<Vec<_>>();
        let mut rules = statics(&self.before);
        for part in self.ports.values() {
            rules.extend(part.contributions(t, chain).cloned());
        }
        rules.extend(statics(&self.after));
        rules
    }

    /// Writes the shared chains `chains` (per table) as currently rendered into `out`, each
    /// complete and declared (built-in chains are not declared).
    fn shared_chains_into(&self, out: &mut Ruleset, chains: &[BTreeSet<ChainName>; 2]) {
        let services = fixed(KUBE_SERVICES);
        let tree = self.node.services_dispatch == ServicesDispatch::Tree && chains[1].contains(&services);
        for (t, set) in chains.iter().enumerate() {
            let table = &mut out.tables[t];
            if t == 1 && tree {
                let built = self.tree(&services);
                table.chains.extend(built.chains);
                table.rules.extend(built.rules);
            }
            for chain in set {
                if t == 1 && tree && chain == &services {
                    continue;
                }
                if !chain.is_builtin() {
                    table.chains.push(ChainDecl::user(chain.clone()));
                }
                table.rules.extend(self.assemble(t, chain));
            }
        }
    }
}

/// Empty tables of [`TABLES`].
fn empty_tables() -> [Table; 2] {
    TABLES.map(Table::new)
}

/// Adds a part's own chains (declarations and rules) to `out`.
fn own_chains_into(out: &mut Ruleset, part: &Part) {
    for (t, own) in part.tables.iter().enumerate() {
        let table = &mut out.tables[t];
        table.chains.extend(own.chains.iter().cloned());
        let shared = &part.shared[t];
        let mut next_shared = shared.iter().peekable();
        for (i, rule) in own.rules.iter().enumerate() {
            if next_shared.next_if_eq(&&i).is_none() {
                table.rules.push(rule.clone());
            }
        }
    }
}

/// One step of walking the rendered ports and the state's ports in name order.
enum Step<'a> {
    Both(&'a ServicePortName, &'a Part, &'a Arc<ServicePort>),
    Old(&'a ServicePortName),
    New(&'a ServicePortName),
}

/// The rendered ports and the state's ports, merged by name.
fn merge<'a>(
    old: btree_map::Iter<'a, ServicePortName, Part>,
    new: btree_map::Iter<'a, ServicePortName, Arc<ServicePort>>,
) -> impl Iterator<Item = Step<'a>> {
    Merge { old: old.peekable(), new: new.peekable() }
}

struct Merge<'a> {
    old: Peekable<btree_map::Iter<'a, ServicePortName, Part>>,
    new: Peekable<btree_map::Iter<'a, ServicePortName, Arc<ServicePort>>>,
}

impl<'a> Iterator for Merge<'a> {
    type Item = Step<'a>;

    fn next(&mut self) -> Option<Step<'a>> {
        let order = match (self.old.peek(), self.new.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            // Names shared with the source compare by pointer first (`Arc<str>`'s `==`).
            (Some((a, _)), Some((b, _))) if a == b => Ordering::Equal,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        Some(match order {
            Ordering::Less => self.old.next().map(|(name, _)| Step::Old(name))?,
            Ordering::Greater => self.new.next().map(|(name, _)| Step::New(name))?,
            Ordering::Equal => {
                let (name, part) = self.old.next()?;
                let (_, input) = self.new.next()?;
                Step::Both(name, part, input)
            }
        })
    }
}

#[cfg(test)]
mod tests;
