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
//! - a policy or attachment change updates the endpoints concerned segment
//!   by segment (one policy's rules in one tier, see [`compile`]): only
//!   the segments of policies that changed are compiled again, and a new
//!   or changed segment takes priorities in the gap between its
//!   neighbours, so the rules of the others stay where they are, their
//!   classifier pages shared with the published snapshot — one policy
//!   added to an endpoint with ten thousand costs that policy's rules.
//!
//! Apply reports which endpoints' compiled rules changed: only their flows
//! are re-evaluated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::addrset::AddrSet;
use super::compile::{self, AddrExpr, Compiled, Env, KeyRef, Planned, SegmentKey, Side};
use super::enforce::{DirectionRules, EndpointRules, RuleKind, RuleMeta, RuleName, DEFAULT_RULE};
use super::rule::{AddrMatch, IpNet, IpSetId, Priority, Rule, RuleId};
use super::spec::{
    DefaultAction, Direction, EndpointPolicySpec, IpSetSpec, PolicyBatch, PolicySpec,
    PolicyStateSpec, RuleSpec, SideSpec,
};
use super::{CompileJob, CompiledRules, RuleSet};

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
///
/// The rules are kept as segments ([`SegmentKey`]) in evaluation order,
/// each at consecutive priorities from its base, with gaps between
/// segments: a segment added between two others takes priorities in the
/// gap between them, so adding, removing or changing one policy edits the
/// rule set by that policy's rules only, whatever the number of others
/// (rules that stay keep their priorities and their classifier rows).
/// Only when a gap is too small for what goes there is the whole
/// direction laid out again, evenly over the priority space.
#[derive(Debug, Default)]
struct DirState {
    rules: RuleSet,
    /// In evaluation order, at increasing priorities.
    segments: Vec<Placed>,
    /// By rule id; free ids hold a placeholder.
    meta: Vec<RuleMeta>,
    free: Vec<u32>,
    /// Rules using each derived set.
    set_uses: HashMap<u32, u32>,
    published: Option<DirectionRules>,
    /// The rule set's edit count at the last [`PolicyDb::compile_jobs`].
    edits_seen: u64,
}

/// One segment as the rule set holds it.
#[derive(Debug)]
struct Placed {
    key: SegmentKey,
    /// The policy the rules were compiled from: while the database holds
    /// the very same object, they need no compiling again.
    policy: Option<Arc<PolicySpec>>,
    /// With priorities (and `Log`/`Skip` resume points) relative to
    /// `base`.
    rules: Vec<Compiled>,
    /// The priority of the first rule.
    base: u32,
    /// The classifier rule of each of `rules`.
    ids: Vec<RuleId>,
}

/// A segment of the direction being computed.
#[derive(Debug)]
struct Next {
    key: SegmentKey,
    policy: Option<Arc<PolicySpec>>,
    rules: Vec<Compiled>,
    /// The priority of the first rule, once known.
    base: Option<u32>,
    /// The rules' ids when the segment keeps its old place.
    kept: Option<Vec<RuleId>>,
}

/// Priorities a segment takes: one per rule, and at least one (a tier's
/// end slot is where its `Pass` rules resume, even when it holds no rule).
fn width(rules: &[Compiled]) -> u64 {
    rules.len().max(1) as u64
}

/// Priorities segments may take: `0..PRIORITY_END` ([`Priority::MAX`] is
/// reserved).
const PRIORITY_END: u64 = u32::MAX as u64;

/// Which of `bases` (`None`: not placed) form a longest strictly
/// increasing subsequence: the segments that can keep their place.
fn increasing_subsequence(bases: &[Option<u32>]) -> Vec<bool> {
    // Patience sorting: `tails[k]` ends the best subsequence of length
    // k + 1 found so far; `prev` links each element to its predecessor.
    let mut tails: Vec<usize> = Vec::new();
    let mut prev = vec![usize::MAX; bases.len()];
    for (i, b) in bases.iter().enumerate() {
        let Some(b) = *b else { continue };
        let k = tails.partition_point(|&t| bases[t].expect("placed") < b);
        if k > 0 {
            prev[i] = tails[k - 1];
        }
        if k == tails.len() {
            tails.push(i);
        } else {
            tails[k] = i;
        }
    }
    let mut keep = vec![false; bases.len()];
    let mut i = tails.last().copied().unwrap_or(usize::MAX);
    while i != usize::MAX {
        keep[i] = true;
        i = prev[i];
    }
    keep
}

/// Gives every segment without a base one between its placed neighbours,
/// spreading each run of them evenly over the gap it goes into; false
/// (and some left without a base) if a run does not fit its gap.
fn place(next: &mut [Next]) -> bool {
    let mut lo = 0u64;
    let mut i = 0;
    while i < next.len() {
        if let Some(base) = next[i].base {
            lo = u64::from(base) + width(&next[i].rules);
            i += 1;
            continue;
        }
        let run_end = (i..next.len())
            .find(|&j| next[j].base.is_some())
            .unwrap_or(next.len());
        let hi = next
            .get(run_end)
            .and_then(|n| n.base)
            .map_or(PRIORITY_END, u64::from);
        let run = &mut next[i..run_end];
        let need: u64 = run.iter().map(|n| width(&n.rules)).sum();
        let Some(room) = hi.checked_sub(lo).and_then(|r| r.checked_sub(need)) else {
            return false;
        };
        let gap = room / (run.len() as u64 + 1);
        let mut at = lo;
        for n in run {
            at += gap;
            n.base = Some(u32::try_from(at).expect("below PRIORITY_END"));
            at += width(&n.rules);
        }
        i = run_end;
    }
    true
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
            .segments
            .iter()
            .flat_map(|s| &s.rules)
            .filter(|c| c.meta.kind == RuleKind::Log)
            .map(|c| (c.meta.name, names.list[c.meta.name as usize].clone()))
            .collect();
        let p = DirectionRules {
            classifier: self.rules.snapshot(),
            meta: Arc::from(self.meta.as_slice()),
            log_names: Arc::new(log_names),
        };
        self.published = Some(p.clone());
        p
    }

    /// Takes the rule set to the segments of `plan` (whose last is the
    /// endpoint default, compiled to `default`), compiling only the
    /// segments whose policy is not the one their rules were compiled
    /// from; true if anything changed.
    fn update(
        &mut self,
        plan: Vec<Planned<'_>>,
        default: DefaultAction,
        env: &mut Env<'_>,
        user: &(String, Direction),
        derived: &mut Derived,
        bases: &BTreeMap<String, AddrSet>,
    ) -> bool {
        // The old segments by key; of a key listed twice, the first.
        let mut old: Vec<Option<Placed>> = std::mem::take(&mut self.segments)
            .into_iter()
            .map(Some)
            .collect();
        // Each planned segment with its rules (`None`: the old ones) and
        // the old segment it stays in the place of.
        let mut matched: Vec<(Planned<'_>, Option<Vec<Compiled>>, Option<usize>)> =
            Vec::with_capacity(plan.len());
        {
            let mut by_key: HashMap<KeyRef<'_>, usize> = HashMap::with_capacity(old.len());
            for (i, s) in old.iter().enumerate() {
                let s = s.as_ref().expect("all there");
                by_key.entry(s.key.as_ref()).or_insert(i);
            }
            for p in plan {
                let prev = by_key
                    .remove(&p.key)
                    .map(|i| (i, old[i].as_ref().expect("matched once")));
                let unchanged = prev.is_some_and(|(_, o)| match (&o.policy, p.policy) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    _ => false,
                });
                if unchanged {
                    let i = prev.map(|(i, _)| i);
                    matched.push((p, None, i));
                    continue;
                }
                let rules = match (p.key, p.policy, p.tier) {
                    (KeyRef::Policy { policy: name, .. }, Some(policy), _) => {
                        compile::compile_policy(name, policy, env)
                    }
                    (KeyRef::TierEnd { .. }, _, Some(tier)) => compile::compile_tier_end(tier, env),
                    _ => compile::compile_default(default),
                };
                // Rules compiled again to what they were stay in place
                // (say, the policy changed in the other direction only).
                let i = prev.filter(|(_, o)| o.rules == rules).map(|(i, _)| i);
                matched.push((p, Some(rules), i));
            }
        }
        let mut next: Vec<Next> = Vec::with_capacity(matched.len());
        for (p, rules, i) in matched {
            next.push(match i.and_then(|i| old[i].take()) {
                Some(o) => Next {
                    key: o.key,
                    policy: p.policy.cloned(),
                    rules: o.rules,
                    base: Some(o.base),
                    kept: Some(o.ids),
                },
                None => Next {
                    key: p.key.to_key(),
                    policy: p.policy.cloned(),
                    rules: rules.expect("compiled when not kept"),
                    base: None,
                    kept: None,
                },
            });
        }
        let stale = old.into_iter().flatten();

        // Segments that keep their place must stay in priority order: keep
        // the longest run of them that is, move the others.
        let keep = increasing_subsequence(&next.iter().map(|n| n.base).collect::<Vec<_>>());
        let mut removed: Vec<Vec<RuleId>> = stale.map(|s| s.ids).collect();
        for (n, keep) in next.iter_mut().zip(keep) {
            if !keep {
                n.base = None;
                removed.extend(n.kept.take());
            }
        }
        if !place(&mut next) {
            // No room where something goes: lay the whole direction out
            // again.
            for n in &mut next {
                n.base = None;
                removed.extend(n.kept.take());
            }
            assert!(
                place(&mut next),
                "a direction's rules fit the priority space"
            );
        }

        let mut released = Vec::new();
        let mut changed = false;
        for id in removed.into_iter().flatten() {
            let rule = self.rules.remove(id).expect("the rule set holds it");
            self.meta[id.0 as usize] = UNUSED_META;
            self.free.push(id.0);
            for side in [&rule.src, &rule.dst] {
                if let AddrMatch::Set(set) = side {
                    released.push(set.0);
                }
            }
            changed = true;
        }
        let mut segments = Vec::with_capacity(next.len());
        for n in next {
            let base = n.base.expect("placed");
            let ids = match n.kept {
                Some(ids) => ids,
                None => {
                    let ids = n
                        .rules
                        .iter()
                        .enumerate()
                        .map(|(i, c)| self.insert(c, base + i as u32, user, derived, bases))
                        .collect();
                    changed |= !n.rules.is_empty();
                    ids
                }
            };
            segments.push(Placed {
                key: n.key,
                policy: n.policy,
                rules: n.rules,
                base,
                ids,
            });
        }
        // What each rule means, its resume point made absolute: a `Pass`
        // resumes after its tier's end slot (which follows it).
        let mut tier_end = 0;
        for s in segments.iter().rev() {
            if matches!(s.key, SegmentKey::TierEnd { .. }) {
                tier_end = s.base;
            }
            for (c, id) in s.rules.iter().zip(&s.ids) {
                let resume = match c.meta.kind {
                    RuleKind::Pass => tier_end,
                    _ => s.base + c.meta.resume.0,
                };
                let meta = RuleMeta {
                    resume: Priority(resume),
                    ..c.meta
                };
                let slot = &mut self.meta[id.0 as usize];
                if *slot != meta {
                    *slot = meta;
                    changed = true;
                }
            }
        }
        self.segments = segments;
        // Released after the inserts, so a set a new rule still uses is
        // neither emptied nor recomputed.
        for id in released {
            self.release(id, user, derived);
        }
        if changed {
            self.published = None;
        }
        changed
    }

    /// Inserts one compiled rule at `priority`; returns its id.
    fn insert(
        &mut self,
        c: &Compiled,
        priority: u32,
        user: &(String, Direction),
        derived: &mut Derived,
        bases: &BTreeMap<String, AddrSet>,
    ) -> RuleId {
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
            priority: Priority(priority),
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
        RuleId(id)
    }

    /// Removes every rule (the attachment is gone).
    fn clear(&mut self, user: &(String, Direction), derived: &mut Derived) {
        let mut released = Vec::new();
        for s in std::mem::take(&mut self.segments) {
            for id in s.ids {
                let rule = self.rules.remove(id).expect("the rule set holds it");
                for side in [&rule.src, &rule.dst] {
                    if let AddrMatch::Set(set) = side {
                        released.push(set.0);
                    }
                }
            }
        }
        for id in released {
            self.release(id, user, derived);
        }
        self.published = None;
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

/// Which rule set a [`CompileJob`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyCompile {
    pub endpoint: String,
    pub direction: Direction,
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
    /// Shared with the segments compiled from them.
    policies: BTreeMap<String, Arc<PolicySpec>>,
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
        // Policies the batch leaves alone must not lose a set (if it
        // deletes any: the loop is over every policy).
        if !deleted_sets.is_empty() {
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
            if self.policies.get(&p.name).map(|q| &**q) != Some(&p) {
                changed_policies.insert(p.name.clone());
                self.policies.insert(p.name.clone(), Arc::new(p));
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
            let started = std::time::Instant::now();
            let (plan, default) = compile::layout(&ep.spec, dir, policies);
            let user = (name.to_owned(), dir);
            changed |=
                ep.dirs[dir_index(dir)].update(plan, default, &mut env, &user, derived, bases);
            tracing::debug!(
                interface = name,
                ?dir,
                took_us = started.elapsed().as_micros() as u64,
                "endpoint policy compiled"
            );
        }
        changed
    }

    /// Compile jobs for every endpoint direction whose rules changed since
    /// their last compile (see [`RuleSet::wants_compile`]) and then held
    /// still since the previous call (so a stream of changes is not
    /// compiled again and again), or changed so much that lookups have
    /// lost much of the forest's speed. Run them off the control thread,
    /// then hand each result to [`PolicyDb::install_compiled`].
    pub fn compile_jobs(&mut self) -> Vec<(PolicyCompile, CompileJob)> {
        let mut jobs = Vec::new();
        for (name, ep) in &mut self.endpoints {
            for dir in Direction::BOTH {
                let st = &mut ep.dirs[dir_index(dir)];
                let still = st.rules.edits() == st.edits_seen;
                st.edits_seen = st.rules.edits();
                let rules = &st.rules;
                if rules.wants_compile() && (still || rules.much_changed()) {
                    let key = PolicyCompile {
                        endpoint: name.clone(),
                        direction: dir,
                    };
                    jobs.push((key, rules.compile_job()));
                }
            }
        }
        jobs
    }

    /// Installs a compiled result (edits made since its job was taken are
    /// kept); true if the endpoint is still there and its rules must be
    /// published again. The verdicts do not change, only their speed.
    pub fn install_compiled(&mut self, key: &PolicyCompile, compiled: CompiledRules) -> bool {
        let Some(ep) = self.endpoints.get_mut(&key.endpoint) else {
            return false;
        };
        let dir = &mut ep.dirs[dir_index(key.direction)];
        dir.rules.install(compiled);
        dir.published = None;
        ep.published = None;
        true
    }

    /// Drops an interface's attachment (the interface is gone or was
    /// replaced); true if it had one.
    pub fn remove_endpoint(&mut self, name: &str) -> bool {
        let Some(mut ep) = self.endpoints.remove(name) else {
            return false;
        };
        for dir in Direction::BOTH {
            let user = (name.to_owned(), dir);
            ep.dirs[dir_index(dir)].clear(&user, &mut self.derived);
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
            None => self.policies.values().map(|p| &**p).collect(),
            Some(_) => {
                let used: BTreeSet<&str> = endpoints
                    .iter()
                    .flat_map(|e| e.spec.ingress.iter().chain(&e.spec.egress))
                    .flat_map(|t| t.policies.iter().map(String::as_str))
                    .collect();
                used.into_iter()
                    .filter_map(|p| self.policies.get(p).map(|p| &**p))
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

#[cfg(test)]
impl PolicyDb {
    /// One direction of an endpoint as the workers evaluate it, without
    /// what is free to differ between two databases holding the same
    /// state (rule ids, priorities, derived set ids): per rule in
    /// priority order, its matches (a derived set by its members), its
    /// action and meaning, and where it resumes as a position in that
    /// order. Checks the bookkeeping on the way.
    pub(super) fn evaluation_order(&self, interface: &str, dir: Direction) -> Vec<String> {
        let st = &self.endpoints[interface].dirs[dir_index(dir)];
        let mut placed: Vec<(u32, RuleId)> = Vec::new();
        let mut end = 0u64;
        for s in &st.segments {
            assert!(
                u64::from(s.base) >= end,
                "segments overlap or are out of order"
            );
            assert_eq!(s.ids.len(), s.rules.len());
            for (i, id) in s.ids.iter().enumerate() {
                let rule = st
                    .rules
                    .get(*id)
                    .expect("the rule set holds every placed rule");
                assert_eq!(rule.priority, Priority(s.base + i as u32));
                placed.push((rule.priority.0, *id));
            }
            end = u64::from(s.base) + width(&s.rules);
        }
        assert_eq!(placed.len(), st.rules.len(), "no rule outside the segments");
        let describe = |m: &AddrMatch| match m {
            AddrMatch::Set(id) => {
                let members: Vec<IpNet> = self.derived.sets[&id.0].members.nets().collect();
                format!("set{members:?}")
            }
            other => format!("{other:?}"),
        };
        placed
            .iter()
            .map(|&(_, id)| {
                let r = st.rules.get(id).expect("placed");
                let meta = st.meta[id.0 as usize];
                let resume = placed.partition_point(|&(p, _)| p <= meta.resume.0);
                format!(
                    "{} {} {:?} {:?} {:?} {:?} {:?} {} resume@{}",
                    describe(&r.src),
                    describe(&r.dst),
                    r.sport,
                    r.dport,
                    r.proto,
                    r.action,
                    meta.kind,
                    self.rule_name(meta.name),
                    match meta.kind {
                        RuleKind::Log | RuleKind::Pass | RuleKind::Skip => resume,
                        RuleKind::Allow | RuleKind::Deny => 0,
                    }
                )
            })
            .collect()
    }

    /// The (priority, id) of every rule of one direction.
    pub(super) fn placement(&self, interface: &str, dir: Direction) -> BTreeSet<(u32, u32)> {
        let st = &self.endpoints[interface].dirs[dir_index(dir)];
        st.rules.rules().map(|r| (r.priority.0, r.id.0)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::spec::{EndAction, TierSpec};
    use crate::policy::{Action, PortRange};

    fn policy(name: &str, port: u16) -> PolicySpec {
        let net: IpNet = format!("172.16.{}.{}/32", port / 250, port % 250 + 1)
            .parse()
            .unwrap();
        PolicySpec {
            name: name.into(),
            ingress: vec![RuleSpec {
                protocol: Some(17),
                source: SideSpec {
                    nets: vec![net],
                    ..SideSpec::default()
                },
                destination: SideSpec {
                    ports: vec![PortRange::exact(port)],
                    ..SideSpec::default()
                },
                ..RuleSpec::new(Action::Allow)
            }],
            egress: vec![],
        }
    }

    fn attach(policies: &[String]) -> EndpointPolicySpec {
        EndpointPolicySpec {
            interface: "ep".into(),
            ingress: vec![TierSpec {
                name: "default".into(),
                policies: policies.to_vec(),
                end_action: EndAction::Deny,
            }],
            egress: vec![],
            ingress_default: DefaultAction::Allow,
            egress_default: DefaultAction::Allow,
        }
    }

    fn own(_: &str) -> Vec<IpAddr> {
        vec!["10.65.0.2".parse().unwrap()]
    }

    /// One policy more or less among many edits the rule set by that
    /// policy's rules only: every other rule keeps its id and priority.
    #[test]
    fn a_policy_added_or_removed_among_many_touches_only_its_rules() {
        let mut names: Vec<String> = (0..1000).map(|i| format!("filler-{i:04}")).collect();
        let mut db = PolicyDb::new();
        let batch = PolicyBatch {
            set_policies: names
                .iter()
                .enumerate()
                .map(|(i, n)| policy(n, i as u16))
                .collect(),
            set_endpoints: vec![attach(&names)],
            ..PolicyBatch::default()
        };
        db.validate(&batch, |i| i == "ep").unwrap();
        db.apply(batch, own);
        let before = db.placement("ep", Direction::Ingress);
        assert_eq!(
            before.len(),
            1000 + 2,
            "the fillers, the tier's end, the default"
        );

        // First in name order, as "allow-client" comes before "filler-…".
        names.insert(0, "allow-client".into());
        let batch = PolicyBatch {
            set_policies: vec![policy("allow-client", 5001)],
            set_endpoints: vec![attach(&names)],
            ..PolicyBatch::default()
        };
        db.validate(&batch, |i| i == "ep").unwrap();
        assert_eq!(db.apply(batch, own), ["ep".to_owned()].into());
        let with = db.placement("ep", Direction::Ingress);
        assert_eq!(with.difference(&before).count(), 1);
        assert!(before.is_subset(&with));

        names.remove(0);
        let batch = PolicyBatch {
            set_endpoints: vec![attach(&names)],
            delete_policies: vec!["allow-client".into()],
            ..PolicyBatch::default()
        };
        db.validate(&batch, |i| i == "ep").unwrap();
        db.apply(batch, own);
        assert_eq!(db.placement("ep", Direction::Ingress), before);
    }

    /// Insertions at one spot use up the gap there; the direction is then
    /// laid out again, and stays what a fresh database compiles.
    #[test]
    fn a_full_gap_lays_the_direction_out_again() {
        let mut names: Vec<String> = vec!["z".into()];
        let mut db = PolicyDb::new();
        let mut set = vec![policy("z", 1)];
        for i in 0..40u16 {
            names.insert(0, format!("p{i:02}"));
            set.push(policy(&names[0], i + 2));
            let batch = PolicyBatch {
                set_policies: vec![policy(&names[0], i + 2)],
                set_endpoints: vec![attach(&names)],
                ..PolicyBatch::default()
            };
            let batch = if i == 0 {
                PolicyBatch {
                    set_policies: vec![policy("z", 1), policy(&names[0], 2)],
                    ..batch
                }
            } else {
                batch
            };
            db.validate(&batch, |i| i == "ep").unwrap();
            db.apply(batch, own);
            let mut fresh = PolicyDb::new();
            fresh.apply(
                PolicyBatch {
                    set_policies: set.clone(),
                    set_endpoints: vec![attach(&names)],
                    ..PolicyBatch::default()
                },
                own,
            );
            assert_eq!(
                db.evaluation_order("ep", Direction::Ingress),
                fresh.evaluation_order("ep", Direction::Ingress)
            );
        }
    }

    #[test]
    fn increasing_subsequence_keeps_the_longest_ordered_run() {
        let keep = increasing_subsequence(&[Some(5), None, Some(1), Some(2), Some(9), Some(3)]);
        assert_eq!(keep, [false, false, true, true, false, true]);
        assert!(increasing_subsequence(&[]).is_empty());
    }
}
