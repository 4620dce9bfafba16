//! Sets of addresses as lists of prefixes, and the set algebra that turns
//! a rule side's "nets AND sets AND NOT nets AND NOT sets" into one
//! positive list of prefixes the classifier can match.
//!
//! An [`AddrSet`] is sorted and has no prefix inside another (two prefixes
//! either nest or are disjoint, so that also makes its members disjoint).
//! Intersection keeps, of every pair that nests, the inner prefix;
//! difference splits a prefix in halves around each excluded prefix inside
//! it, so `0.0.0.0/0` minus one `/8` is eight prefixes and minus a host
//! thirty-two: bounded by the address width per excluded prefix.

use std::net::IpAddr;

use super::rule::IpNet;

/// A prefix of either family, as one comparable value: family first, then
/// the address (host bits clear), then the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Net {
    v6: bool,
    addr: u128,
    len: u8,
}

impl Net {
    fn width(self) -> u8 {
        if self.v6 {
            128
        } else {
            32
        }
    }

    fn mask(width: u8, len: u8) -> u128 {
        if len == 0 {
            return 0;
        }
        let all = if width == 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        all & !((1u128 << (width - len)) - 1)
    }

    /// The last address of the prefix.
    fn last(self) -> u128 {
        let host = self.width() - self.len;
        let host_mask = if host == 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        };
        self.addr | host_mask
    }

    fn contains(self, other: Net) -> bool {
        self.v6 == other.v6
            && self.len <= other.len
            && other.addr & Self::mask(self.width(), self.len) == self.addr
    }

    /// The two prefixes one bit longer.
    fn halves(self) -> [Net; 2] {
        let len = self.len + 1;
        let bit = 1u128 << (self.width() - len);
        [
            Net { len, ..self },
            Net {
                addr: self.addr | bit,
                len,
                ..self
            },
        ]
    }

    fn from_ipnet(n: IpNet) -> Net {
        match n {
            IpNet::V4(p) => Net {
                v6: false,
                addr: u128::from(p.addr()),
                len: p.prefix_len(),
            },
            IpNet::V6(p) => Net {
                v6: true,
                addr: p.addr(),
                len: p.prefix_len(),
            },
        }
    }

    fn to_ipnet(self) -> IpNet {
        let addr = if self.v6 {
            IpAddr::from(self.addr.to_be_bytes())
        } else {
            IpAddr::from((self.addr as u32).to_be_bytes())
        };
        IpNet::new(addr, self.len).expect("a valid prefix")
    }
}

/// A set of addresses: sorted prefixes, none inside another.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrSet(Vec<Net>);

impl AddrSet {
    pub fn empty() -> Self {
        AddrSet(Vec::new())
    }

    /// Every address of both families.
    pub fn universe() -> Self {
        AddrSet(vec![
            Net {
                v6: false,
                addr: 0,
                len: 0,
            },
            Net {
                v6: true,
                addr: 0,
                len: 0,
            },
        ])
    }

    /// Every address of one family.
    pub fn family(v6: bool) -> Self {
        AddrSet(vec![Net {
            v6,
            addr: 0,
            len: 0,
        }])
    }

    /// The union of some prefixes (in any order, overlapping or not).
    pub fn from_nets(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut v: Vec<Net> = nets.into_iter().map(Net::from_ipnet).collect();
        v.sort_unstable();
        v.dedup();
        // Sorted by address then length, a prefix comes before every
        // prefix inside it; what is not inside the last kept one starts
        // after it.
        let mut out: Vec<Net> = Vec::with_capacity(v.len());
        for n in v {
            if out.last().is_none_or(|l| !l.contains(n)) {
                out.push(n);
            }
        }
        AddrSet(out)
    }

    pub fn nets(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.0.iter().map(|n| n.to_ipnet())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_universe(&self) -> bool {
        *self == AddrSet::universe()
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        let n = Net::from_ipnet(
            match a {
                IpAddr::V4(_) => IpNet::new(a, 32),
                IpAddr::V6(_) => IpNet::new(a, 128),
            }
            .expect("host prefix"),
        );
        self.cover(n).is_some()
    }

    /// The member containing `n`, if any: only the last member starting
    /// at or before `n` can.
    fn cover(&self, n: Net) -> Option<Net> {
        let i = self.0.partition_point(|m| (m.v6, m.addr) <= (n.v6, n.addr));
        i.checked_sub(1)
            .map(|i| self.0[i])
            .filter(|m| m.contains(n))
    }

    pub fn union(&self, other: &AddrSet) -> AddrSet {
        AddrSet::from_nets(self.nets().chain(other.nets()))
    }

    pub fn intersect(&self, other: &AddrSet) -> AddrSet {
        // Of two nesting prefixes the inner one is their intersection.
        let mut out: Vec<Net> = self
            .0
            .iter()
            .filter(|&&n| other.cover(n).is_some())
            .chain(other.0.iter().filter(|&&n| self.cover(n).is_some()))
            .copied()
            .collect();
        out.sort_unstable();
        out.dedup();
        AddrSet(out)
    }

    pub fn difference(&self, other: &AddrSet) -> AddrSet {
        let mut out = Vec::new();
        for &n in &self.0 {
            if other.cover(n).is_some() {
                continue;
            }
            // The excluded prefixes strictly inside `n`: a sorted run.
            let start = other.0.partition_point(|m| (m.v6, m.addr) < (n.v6, n.addr));
            let inner: Vec<Net> = other.0[start..]
                .iter()
                .take_while(|m| n.contains(**m))
                .copied()
                .collect();
            subtract(n, &inner, &mut out);
        }
        AddrSet(out)
    }
}

/// Appends `n` minus `holes` (sorted, disjoint, each strictly inside `n`)
/// to `out`, in order.
fn subtract(n: Net, holes: &[Net], out: &mut Vec<Net>) {
    if holes.is_empty() {
        out.push(n);
        return;
    }
    if holes[0] == n {
        return;
    }
    let [lo, hi] = n.halves();
    let split = holes.partition_point(|h| h.addr <= lo.last());
    subtract(lo, &holes[..split], out);
    subtract(hi, &holes[split..], out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nets: &[&str]) -> AddrSet {
        AddrSet::from_nets(nets.iter().map(|n| n.parse().unwrap()))
    }

    fn strs(s: &AddrSet) -> Vec<String> {
        s.nets().map(|n| n.to_string()).collect()
    }

    #[test]
    fn normalises_nested_and_duplicate_prefixes() {
        let s = set(&[
            "10.1.0.0/16",
            "10.0.0.0/8",
            "10.0.0.0/8",
            "fd00::1",
            "192.168.1.1",
        ]);
        assert_eq!(strs(&s), ["10.0.0.0/8", "192.168.1.1/32", "fd00::1/128"]);
        assert!(s.contains("10.200.0.1".parse().unwrap()));
        assert!(!s.contains("11.0.0.1".parse().unwrap()));
        assert!(s.contains("fd00::1".parse().unwrap()));
        assert!(!s.contains("fd00::2".parse().unwrap()));
    }

    #[test]
    fn intersection_keeps_inner_prefixes() {
        let a = set(&["10.0.0.0/8", "172.16.0.5", "fd00::/64"]);
        let b = set(&["10.1.0.0/16", "10.2.0.7", "172.16.0.0/12", "fd01::1"]);
        assert_eq!(
            strs(&a.intersect(&b)),
            ["10.1.0.0/16", "10.2.0.7/32", "172.16.0.5/32"]
        );
        assert_eq!(a.intersect(&AddrSet::universe()), a);
        assert_eq!(strs(&a.intersect(&AddrSet::family(true))), ["fd00::/64"]);
    }

    #[test]
    fn difference_splits_around_holes() {
        let a = set(&["0.0.0.0/0"]);
        let d = a.difference(&set(&["128.0.0.0/1"]));
        assert_eq!(strs(&d), ["0.0.0.0/1"]);
        let d = set(&["10.0.0.0/24"]).difference(&set(&["10.0.0.5", "10.0.0.128/25"]));
        assert_eq!(
            strs(&d),
            [
                "10.0.0.0/30",
                "10.0.0.4/32",
                "10.0.0.6/31",
                "10.0.0.8/29",
                "10.0.0.16/28",
                "10.0.0.32/27",
                "10.0.0.64/26"
            ]
        );
        assert!(set(&["10.0.0.0/24"])
            .difference(&set(&["10.0.0.0/8"]))
            .is_empty());
        let all = AddrSet::universe().difference(&set(&["10.0.0.1"]));
        assert_eq!(all.len(), 32 + 1);
        assert!(!all.contains("10.0.0.1".parse().unwrap()));
        assert!(all.contains("10.0.0.0".parse().unwrap()));
        assert!(all.contains("::1".parse().unwrap()));
    }

    #[test]
    fn algebra_agrees_with_membership() {
        // Exhaustively over a small corner of the address space.
        let pool = [
            "10.0.0.0/29",
            "10.0.0.0/30",
            "10.0.0.2/31",
            "10.0.0.5",
            "10.0.0.4/30",
            "10.0.0.8/29",
            "0.0.0.0/0",
        ];
        let sets: Vec<AddrSet> = (0u32..1 << pool.len())
            .step_by(7)
            .map(|mask| {
                set(&pool
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>())
            })
            .collect();
        for a in &sets {
            for b in &sets {
                let (i, d, u) = (a.intersect(b), a.difference(b), a.union(b));
                for host in 0..20u8 {
                    let ip: IpAddr = [10, 0, 0, host].into();
                    let (x, y) = (a.contains(ip), b.contains(ip));
                    assert_eq!(i.contains(ip), x && y, "{a:?} & {b:?} at {ip}");
                    assert_eq!(d.contains(ip), x && !y, "{a:?} - {b:?} at {ip}");
                    assert_eq!(u.contains(ip), x || y);
                }
                for s in [&i, &d, &u] {
                    assert_eq!(*s, AddrSet::from_nets(s.nets()), "normal form");
                }
            }
        }
    }
}
