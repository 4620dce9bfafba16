//! The policy database: the engine's master copy of IP sets, policies and
//! endpoint attachments, and per endpoint and direction the compiled
//! [`RuleSet`] the workers' classifiers are snapshots of.
//!
//! A batch is validated whole against the current state before anything
//! changes ([`PolicyDb::validate`]), then applied ([`PolicyDb::apply`]),
//! which cannot fail; the engine publishes the result in one table
//! snapshot. Applying is incremental:
//!
//! - an IP set change recomputes the derived sets ([`AddrExpr`]s) that
//!   name it and adds or removes only the changed members' rows in the
//!   rule sets that use them;
//! - a policy or attachment change recompiles the endpoints concerned and
//!   applies the difference by priority: unchanged rules stay, so their
//!   classifier pages stay shared with the published snapshot.
//!
//! Apply reports which endpoints' compiled rules changed: only their flows
//! are re-evaluated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::addrset::AddrSet;
use super::compile::{self, AddrExpr, Compiled, Env, Side};
use super::enforce::{DirectionRules, EndpointRules, RuleKind, RuleMeta, RuleName, DEFAULT_RULE};
use super::rule::{AddrMatch, IpNet, IpSetId, Priority, Rule, RuleId};
use super::spec::{
    Direction, EndpointPolicySpec, IpSetSpec, PolicyBatch, PolicySpec, PolicyStateSpec, RuleSpec,
    SideSpec,
};
use super::RuleSet;

/// Why a batch was refused; the message starts with the request field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("{0}")]
    Invalid(String),
    /// An IP set delta names a set that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A reference does not resolve (an unknown interface, policy or IP
    /// set, or a deletion of something still in use).
    #[error("{0}")]
    FailedPrecondition(String),
}

/// Rule identifiers, interned: flows record a `u32`.
#[derive(Debug)]
struct Names {
    list: Vec<Arc<str>>,
    index: HashMap<Arc<str>, RuleName>,
}

impl Names {
    fn new() -> Self {
        let mut n = Names {
            list: Vec::new(),
            index: HashMap::new(),
        };
        let default = n.intern("default");
        debug_assert_eq!(default, DEFAULT_RULE);
        n
    }

    // Append-only: a flow may still name a rule that is gone. Names are
    // rule identifiers, a few dozen bytes each, and the agent's are
    // stable across updates, so the list grows with the distinct rules
    // ever seen.
    fn intern(&mut self, s: &str) -> RuleName {
        if let Some(&id) = self.index.get(s) {
            return id;
        }
        let id = self.list.len() as RuleName;
        let s: Arc<str> = Arc::from(s);
        self.list.push(s.clone());
        self.index.insert(s, id);
        id
    }
}

/// A derived IP set: the addresses of one [`AddrExpr`], kept up to date.
#[derive(Debug)]
struct DerivedSet {
    expr: AddrExpr,
    members: AddrSet,
    /// The endpoint directions whose rule sets hold the members.
    users: BTreeSet<(String, Direction)>,
}

#[derive(Debug, Default)]
struct Derived {
    sets: HashMap<u32, DerivedSet>,
    by_expr: HashMap<AddrExpr, u32>,
    /// Derived sets by the IP sets they name.
    by_base: HashMap<String, BTreeSet<u32>>,
    next: u32,
}

impl Derived {
    fn intern(&mut self, expr: &AddrExpr, bases: &BTreeMap<String, AddrSet>) -> u32 {
        if let Some(&id) = self.by_expr.get(expr) {
            return id;
        }
        let id = self.next;
        self.next = self.next.wrapping_add(1);
        let members = expr.eval(|n| bases.get(n));
        for name in expr.set_names() {
            self.by_base.entry(name.to_owned()).or_default().insert(id);
        }
        self.by_expr.insert(expr.clone(), id);
        self.sets.insert(
            id,
            DerivedSet {
                expr: expr.clone(),
                members,
                users: BTreeSet::new(),
            },
        );
        id
    }

    fn drop_unused(&mut self, id: u32) {
        let unused = self.sets.get(&id).is_some_and(|s| s.users.is_empty());
        if !unused {
            return;
        }
        let s = self.sets.remove(&id).expect("checked");
        self.by_expr.remove(&s.expr);
        for name in s.expr.set_names() {
            if let Some(ids) = self.by_base.get_mut(name) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_base.remove(name);
                }
            }
        }
    }
}

/// One direction of one endpoint: its rule set and what each rule means.
#[derive(Debug, Default)]
struct DirState {
    rules: RuleSet,
    by_prio: BTreeMap<u32, (RuleId, Compiled)>,
    /// By rule id; free ids hold a placeholder.
    meta: Vec<RuleMeta>,
    free: Vec<u32>,
    /// Rules using each derived set.
    set_uses: HashMap<u32, u32>,
    published: Option<DirectionRules>,
}

const UNUSED_META: RuleMeta = RuleMeta {
    kind: RuleKind::Deny,
    name: DEFAULT_RULE,
    resume: Priority(0),
};

impl DirState {
    fn snapshot(&mut self, names: &Names) -> DirectionRules {
        if let Some(p) = &self.published {
            return p.clone();
        }
        let log_names = self
            .by_prio
            .values()
            .filter(|(_, c)| c.meta.kind == RuleKind::Log)
            .map(|(_, c)| (c.meta.name, names.list[c.meta.name as usize].clone()))
            .collect();
        let p = DirectionRules {
            classifier: self.rules.snapshot(),
            meta: Arc::from(self.meta.as_slice()),
            log_names: Arc::new(log_names),
        };
        self.published = Some(p.clone());
        p
    }

    /// Takes the rule set from its rules to `want`; true if anything
    /// changed.
    fn sync(
        &mut self,
        want: BTreeMap<u32, Compiled>,
        user: &(String, Direction),
        derived: &mut Derived,
        bases: &BTreeMap<String, AddrSet>,
    ) -> bool {
        let stale: Vec<u32> = self
            .by_prio
            .iter()
            .filter(|(p, (_, c))| want.get(p) != Some(c))
            .map(|(p, _)| *p)
            .collect();
        let mut released = Vec::new();
        for p in &stale {
            let (id, c) = self.by_prio.remove(p).expect("listed");
            self.rules.remove(id).expect("the rule set holds it");
            self.meta[id.0 as usize] = UNUSED_META;
            self.free.push(id.0);
            for side in [&c.src, &c.dst] {
                if let Side::Set(expr) = side {
                    released.push(derived.by_expr[expr]);
                }
            }
        }
        let mut added = 0;
        for (p, c) in want {
            if self.by_prio.contains_key(&p) {
                continue;
            }
            let src = self.resolve(&c.src, user, derived, bases);
            let dst = self.resolve(&c.dst, user, derived, bases);
            let id = match self.free.pop() {
                Some(id) => id,
                None => {
                    self.meta.push(UNUSED_META);
                    (self.meta.len() - 1) as u32
                }
            };
            let rule = Rule {
                id: RuleId(id),
                priority: Priority(p),
                src,
                dst,
                sport: c.sport,
                dport: c.dport,
                proto: c.proto,
                action: c.action(),
            };
            self.rules
                .insert(rule)
                .expect("compiled rules have unique ids and priorities and valid ranges");
            self.meta[id as usize] = c.meta;
            self.by_prio.insert(p, (RuleId(id), c));
            added += 1;
        }
        // Released after the inserts, so a set a new rule still uses is
        // neither emptied nor recomputed.
        for id in released {
            self.release(id, user, derived);
        }
        let changed = !stale.is_empty() || added > 0;
        if changed {
            self.published = None;
        }
        changed
    }

    fn resolve(
        &mut self,
        side: &Side,
        user: &(String, Direction),
        derived: &mut Derived,
        bases: &BTreeMap<String, AddrSet>,
    ) -> AddrMatch {
        match side {
            Side::Any => AddrMatch::Any,
            Side::Nets(n) => AddrMatch::Nets(n.clone()),
            Side::Set(expr) => {
                let id = derived.intern(expr, bases);
                let uses = self.set_uses.entry(id).or_default();
                if *uses == 0 {
                    let set = derived.sets.get_mut(&id).expect("interned");
                    for n in set.members.nets() {
                        self.rules.set_insert(IpSetId(id), n);
                    }
                    set.users.insert(user.clone());
                }
                *uses += 1;
                AddrMatch::Set(IpSetId(id))
            }
        }
    }

    fn release(&mut self, id: u32, user: &(String, Direction), derived: &mut Derived) {
        let uses = self.set_uses.get_mut(&id).expect("acquired");
        *uses -= 1;
        if *uses > 0 {
            return;
        }
        self.set_uses.remove(&id);
        let set = derived.sets.get_mut(&id).expect("in use");
        for n in set.members.nets() {
            self.rules.set_remove(IpSetId(id), n);
        }
        set.users.remove(user);
        derived.drop_unused(id);
    }
}

#[derive(Debug)]
struct EndpointState {
    spec: EndpointPolicySpec,
    own: AddrSet,
    /// Ingress, egress.
    dirs: [DirState; 2],
    published: Option<Arc<EndpointRules>>,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// IP sets, policies and endpoint attachments, and their compiled form.
#[derive(Debug)]
pub struct PolicyDb {
    /// IP set members as given.
    sets: BTreeMap<String, BTreeSet<IpNet>>,
    /// The same sets as [`AddrSet`]s, for the set algebra.
    bases: BTreeMap<String, AddrSet>,
    policies: BTreeMap<String, PolicySpec>,
    endpoints: BTreeMap<String, EndpointState>,
    derived: Derived,
    names: Names,
}

impl Default for PolicyDb {
    fn default() -> Self {
        Self::new()
    }
}

/// `field: duplicate of earlier_field` for the first repeated name.
fn no_duplicates<'a>(
    list: &'a str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), ApplyError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names.enumerate() {
        if let Some(j) = seen.insert(n, i) {
            return Err(ApplyError::Invalid(format!(
                "{list}[{i}]: {n:?} is already {list}[{j}]"
            )));
        }
    }
    Ok(())
}

impl PolicyDb {
    pub fn new() -> Self {
        PolicyDb {
            sets: BTreeMap::new(),
            bases: BTreeMap::new(),
            policies: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            derived: Derived::default(),
            names: Names::new(),
        }
    }

    /// The identifier of an interned rule name.
    pub fn rule_name(&self, id: RuleName) -> &str {
        self.names.list.get(id as usize).map_or("?", |s| s)
    }

    pub fn has_endpoint(&self, interface: &str) -> bool {
        self.endpoints.contains_key(interface)
    }

    /// Checks a whole batch against the current state: every name unique
    /// within its list, every delta's set existing, every reference
    /// resolving after the batch, every attachment's interface existing
    /// (`interface_exists`), no rule compiling to too many classifier rules.
    pub fn validate(
        &self,
        b: &PolicyBatch,
        interface_exists: impl Fn(&str) -> bool,
    ) -> Result<(), ApplyError> {
        no_duplicates("set_ip_sets", b.set_ip_sets.iter().map(|s| s.name.as_str()))?;
        no_duplicates(
            "set_policies",
            b.set_policies.iter().map(|p| p.name.as_str()),
        )?;
        no_duplicates(
            "set_endpoints",
            b.set_endpoints.iter().map(|e| e.interface.as_str()),
        )?;
        for (i, d) in b.update_ip_sets.iter().enumerate() {
            let known =
                self.sets.contains_key(&d.name) || b.set_ip_sets.iter().any(|s| s.name == d.name);
            if !known {
                return Err(ApplyError::NotFound(format!(
                    "update_ip_sets[{i}].name: no IP set {:?}",
                    d.name
                )));
            }
        }
        let deleted_sets: BTreeSet<&str> = b.delete_ip_sets.iter().map(String::as_str).collect();
        let deleted_policies: BTreeSet<&str> =
            b.delete_policies.iter().map(String::as_str).collect();
        let set_exists = |name: &str| {
            !deleted_sets.contains(name)
                && (self.sets.contains_key(name) || b.set_ip_sets.iter().any(|s| s.name == name))
        };
        let policy_exists = |name: &str| {
            !deleted_policies.contains(name)
                && (self.policies.contains_key(name)
                    || b.set_policies.iter().any(|p| p.name == name))
        };
        for (i, p) in b.set_policies.iter().enumerate() {
            for dir in Direction::BOTH {
                for (j, rule) in p.rules(dir).iter().enumerate() {
                    let field = format!("set_policies[{i}].{}[{j}]", dir.as_str());
                    check_rule(&field, rule, &set_exists)?;
                }
            }
        }
        // Policies the batch leaves alone must not lose a set.
        for (name, p) in &self.policies {
            if deleted_policies.contains(name.as_str())
                || b.set_policies.iter().any(|q| &q.name == name)
            {
                continue;
            }
            if let Some(set) = policy_sets(p).find(|s| deleted_sets.contains(s)) {
                let i = b
                    .delete_ip_sets
                    .iter()
                    .position(|d| d == set)
                    .expect("deleted");
                return Err(ApplyError::FailedPrecondition(format!(
                    "delete_ip_sets[{i}]: IP set {set:?} is used by policy {name:?}"
                )));
            }
        }
        for (i, e) in b.set_endpoints.iter().enumerate() {
            if !interface_exists(&e.interface) {
                return Err(ApplyError::FailedPrecondition(format!(
                    "set_endpoints[{i}].interface: no interface {:?}",
                    e.interface
                )));
            }
            for dir in Direction::BOTH {
                for (t, tier) in e.tiers(dir).iter().enumerate() {
                    for (k, p) in tier.policies.iter().enumerate() {
                        if !policy_exists(p) {
                            return Err(ApplyError::FailedPrecondition(format!(
                                "set_endpoints[{i}].{}[{t}].policies[{k}]: no policy {p:?}",
                                dir.as_str()
                            )));
                        }
                    }
                }
            }
        }
        for (name, ep) in &self.endpoints {
            if b.set_endpoints.iter().any(|e| &e.interface == name) {
                continue;
            }
            if let Some((i, p)) = b
                .delete_policies
                .iter()
                .enumerate()
                .find(|(_, p)| ep.spec.uses(p))
            {
                return Err(ApplyError::FailedPrecondition(format!(
                    "delete_policies[{i}]: policy {p:?} is attached to interface {name:?}"
                )));
            }
        }
        Ok(())
    }

    /// Applies a batch [`validate`](Self::validate) accepted; `addresses`
    /// gives an interface's own addresses. Returns the endpoints whose
    /// compiled rules changed.
    pub fn apply(
        &mut self,
        b: PolicyBatch,
        addresses: impl Fn(&str) -> Vec<IpAddr>,
    ) -> BTreeSet<String> {
        let mut touched_sets = BTreeSet::new();
        for s in b.set_ip_sets {
            if self.sets.get(&s.name) != Some(&s.members) {
                self.put_set(s.name.clone(), s.members);
                touched_sets.insert(s.name);
            }
        }
        for d in b.update_ip_sets {
            let old = &self.sets[&d.name];
            let mut members = old.clone();
            for n in &d.remove {
                members.remove(n);
            }
            members.extend(d.add);
            if members != *old {
                self.put_set(d.name.clone(), members);
                touched_sets.insert(d.name);
            }
        }
        let mut dirty = BTreeSet::new();
        for name in &touched_sets {
            self.set_changed(name, &mut dirty);
        }
        let mut changed_policies = BTreeSet::new();
        for p in b.set_policies {
            if self.policies.get(&p.name) != Some(&p) {
                changed_policies.insert(p.name.clone());
                self.policies.insert(p.name.clone(), p);
            }
        }
        let mut recompile: BTreeSet<String> = self
            .endpoints
            .iter()
            .filter(|(_, e)| changed_policies.iter().any(|p| e.spec.uses(p)))
            .map(|(n, _)| n.clone())
            .collect();
        for e in b.set_endpoints {
            match self.endpoints.get_mut(&e.interface) {
                Some(ep) if ep.spec == e => {}
                Some(ep) => {
                    ep.spec = e.clone();
                    recompile.insert(e.interface);
                }
                None => {
                    let own = AddrSet::from_nets(
                        addresses(&e.interface)
                            .into_iter()
                            .map(|a| IpNet::new(a, if a.is_ipv4() { 32 } else { 128 }))
                            .map(|n| n.expect("host prefix")),
                    );
                    self.endpoints.insert(
                        e.interface.clone(),
                        EndpointState {
                            spec: e.clone(),
                            own,
                            dirs: Default::default(),
                            published: None,
                        },
                    );
                    recompile.insert(e.interface.clone());
                    dirty.insert(e.interface);
                }
            }
        }
        for name in recompile {
            if self.compile(&name) {
                dirty.insert(name);
            }
        }
        for p in b.delete_policies {
            self.policies.remove(&p);
        }
        for s in b.delete_ip_sets {
            self.sets.remove(&s);
            self.bases.remove(&s);
        }
        for name in &dirty {
            if let Some(ep) = self.endpoints.get_mut(name) {
                ep.published = None;
            }
        }
        dirty
    }

    fn put_set(&mut self, name: String, members: BTreeSet<IpNet>) {
        self.bases
            .insert(name.clone(), AddrSet::from_nets(members.iter().copied()));
        self.sets.insert(name, members);
    }

    /// Recomputes the derived sets naming IP set `name` and edits the rule
    /// sets that use them.
    fn set_changed(&mut self, name: &str, dirty: &mut BTreeSet<String>) {
        let ids: Vec<u32> = self
            .derived
            .by_base
            .get(name)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            let set = self.derived.sets.get_mut(&id).expect("indexed");
            let new = set.expr.eval(|n| self.bases.get(n));
            if new == set.members {
                continue;
            }
            let old: BTreeSet<IpNet> = set.members.nets().collect();
            let now: BTreeSet<IpNet> = new.nets().collect();
            for (ep, dir) in &set.users {
                let st =
                    &mut self.endpoints.get_mut(ep).expect("a user exists").dirs[dir_index(*dir)];
                for n in old.difference(&now) {
                    st.rules.set_remove(IpSetId(id), *n);
                }
                for n in now.difference(&old) {
                    st.rules.set_insert(IpSetId(id), *n);
                }
                st.published = None;
                dirty.insert(ep.clone());
            }
            set.members = new;
        }
    }

    /// Recompiles both directions of an endpoint; true if they changed.
    fn compile(&mut self, name: &str) -> bool {
        let PolicyDb {
            policies,
            endpoints,
            derived,
            names,
            bases,
            ..
        } = self;
        let ep = endpoints.get_mut(name).expect("compiling a known endpoint");
        let mut changed = false;
        for dir in Direction::BOTH {
            let mut intern = |s: &str| names.intern(s);
            let mut env = Env {
                dir,
                own: &ep.own,
                name: &mut intern,
            };
            let want = compile::compile_direction(&ep.spec, policies, &mut env);
            let user = (name.to_owned(), dir);
            changed |= ep.dirs[dir_index(dir)].sync(want, &user, derived, bases);
        }
        changed
    }

    /// Drops an interface's attachment (the interface is gone or was
    /// replaced); true if it had one.
    pub fn remove_endpoint(&mut self, name: &str) -> bool {
        let Some(mut ep) = self.endpoints.remove(name) else {
            return false;
        };
        for dir in Direction::BOTH {
            let user = (name.to_owned(), dir);
            ep.dirs[dir_index(dir)].sync(BTreeMap::new(), &user, &mut self.derived, &self.bases);
        }
        true
    }

    /// The compiled rules of an endpoint, as the workers get them.
    pub fn endpoint_rules(&mut self, name: &str) -> Option<Arc<EndpointRules>> {
        let ep = self.endpoints.get_mut(name)?;
        if ep.published.is_none() {
            let [ingress, egress] = &mut ep.dirs;
            ep.published = Some(Arc::new(EndpointRules {
                ingress: ingress.snapshot(&self.names),
                egress: egress.snapshot(&self.names),
            }));
        }
        ep.published.clone()
    }

    /// Everything, or what one interface's attachment uses.
    pub fn state(&self, interface: Option<&str>) -> PolicyStateSpec {
        let endpoints: Vec<&EndpointState> = match interface {
            None => self.endpoints.values().collect(),
            Some(i) => self.endpoints.get(i).into_iter().collect(),
        };
        let policies: Vec<&PolicySpec> = match interface {
            None => self.policies.values().collect(),
            Some(_) => {
                let used: BTreeSet<&str> = endpoints
                    .iter()
                    .flat_map(|e| e.spec.ingress.iter().chain(&e.spec.egress))
                    .flat_map(|t| t.policies.iter().map(String::as_str))
                    .collect();
                used.into_iter()
                    .filter_map(|p| self.policies.get(p))
                    .collect()
            }
        };
        let sets: Vec<&str> = match interface {
            None => self.sets.keys().map(String::as_str).collect(),
            Some(_) => {
                let used: BTreeSet<&str> = policies.iter().flat_map(|p| policy_sets(p)).collect();
                used.into_iter()
                    .filter(|s| self.sets.contains_key(*s))
                    .collect()
            }
        };
        PolicyStateSpec {
            generation: 0,
            ip_sets: sets
                .into_iter()
                .map(|s| IpSetSpec {
                    name: s.to_owned(),
                    members: self.sets[s].clone(),
                })
                .collect(),
            policies: policies.into_iter().cloned().collect(),
            endpoints: endpoints.into_iter().map(|e| e.spec.clone()).collect(),
        }
    }
}

/// Every IP set a policy's rules name.
fn policy_sets(p: &PolicySpec) -> impl Iterator<Item = &str> {
    p.ingress
        .iter()
        .chain(&p.egress)
        .flat_map(|r| [&r.source, &r.destination])
        .flat_map(|s| s.ip_sets.iter().chain(&s.not_ip_sets))
        .map(String::as_str)
}

fn check_rule(
    field: &str,
    rule: &RuleSpec,
    set_exists: &impl Fn(&str) -> bool,
) -> Result<(), ApplyError> {
    for (side_name, side) in [("source", &rule.source), ("destination", &rule.destination)] {
        let SideSpec {
            ip_sets,
            not_ip_sets,
            ..
        } = side;
        for (list, sets) in [("ip_sets", ip_sets), ("not_ip_sets", not_ip_sets)] {
            for (k, s) in sets.iter().enumerate() {
                if !set_exists(s) {
                    return Err(ApplyError::FailedPrecondition(format!(
                        "{field}.{side_name}.{list}[{k}]: no IP set {s:?}"
                    )));
                }
            }
        }
    }
    let n = compile::expansion(rule);
    if n > compile::MAX_EXPANSION {
        return Err(ApplyError::Invalid(format!(
            "{field}: compiles to {n} classifier rules (port ranges × ICMP matches), more than {}",
            compile::MAX_EXPANSION
        )));
    }
    Ok(())
}
