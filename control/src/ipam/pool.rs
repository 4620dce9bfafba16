//! IP pools as the allocator uses them: validated once when configured,
//! then chosen per request and family.

use ipnet::IpNet;

use super::block::MAX_BLOCK_ADDRESSES;
use super::selector::NodeSelector;
use super::{AssignRequest, IpPool, IpamError};

/// Default block prefix for IPv4 pools (64 addresses).
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// Default block prefix for IPv6 pools (64 addresses).
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;

/// An address family, for errors and per-family choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(net: IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A pool whose CIDR, block size and selector have been checked.
#[derive(Debug, Clone)]
pub struct Pool {
    /// As configured, with `block_size` defaulted.
    pub spec: IpPool,
    pub selector: NodeSelector,
}

impl Pool {
    pub fn family(&self) -> Family {
        Family::of(self.spec.cidr)
    }

    /// Whether `name` (from an annotation) names this pool, by name or CIDR.
    fn is_named(&self, name: &str) -> bool {
        let name = name.trim();
        self.spec.name == name || name.parse::<IpNet>().is_ok_and(|n| n == self.spec.cidr)
    }
}

/// The configured pools, in the order given.
#[derive(Debug, Clone, Default)]
pub struct PoolSet {
    pools: Vec<Pool>,
}

impl PoolSet {
    /// Validates `pools`: canonical CIDRs, block sizes that fit (0 picks
    /// the default), unique names, no overlap, supported selectors.
    pub fn new(pools: Vec<IpPool>) -> Result<PoolSet, IpamError> {
        let mut checked: Vec<Pool> = Vec::with_capacity(pools.len());
        for mut spec in pools {
            let invalid = |reason: String| IpamError::InvalidPool {
                pool: spec.name.clone(),
                reason,
            };
            if spec.name.is_empty() {
                return Err(invalid("a pool needs a name".into()));
            }
            let cidr = spec.cidr;
            if cidr.trunc() != cidr {
                return Err(invalid(format!(
                    "CIDR {cidr} has host bits set; did you mean {}?",
                    cidr.trunc()
                )));
            }
            let (default, max) = match cidr {
                IpNet::V4(_) => (DEFAULT_BLOCK_SIZE_V4, 32),
                IpNet::V6(_) => (DEFAULT_BLOCK_SIZE_V6, 128),
            };
            if spec.block_size == 0 {
                spec.block_size = default;
            }
            // Smallest prefix whose block holds at most MAX_BLOCK_ADDRESSES.
            let min = max - MAX_BLOCK_ADDRESSES.ilog2() as u8;
            let block_size = spec.block_size;
            if !(min..=max).contains(&block_size) {
                return Err(invalid(format!(
                    "block size /{block_size} is out of range for {} (/{min} to /{max})",
                    Family::of(cidr).name()
                )));
            }
            if block_size < cidr.prefix_len() {
                return Err(invalid(format!(
                    "block size /{block_size} is larger than the pool {cidr}"
                )));
            }
            let selector =
                NodeSelector::parse(&spec.node_selector).map_err(|e| invalid(e.to_string()))?;
            if let Some(other) = checked.iter().find(|p| p.spec.name == spec.name) {
                return Err(invalid(format!(
                    "name also used by pool {}",
                    other.spec.cidr
                )));
            }
            if let Some(other) = checked
                .iter()
                .find(|p| p.spec.cidr.contains(&cidr) || cidr.contains(&p.spec.cidr))
            {
                return Err(invalid(format!(
                    "{cidr} overlaps pool {:?} ({})",
                    other.spec.name, other.spec.cidr
                )));
            }
            checked.push(Pool { spec, selector });
        }
        Ok(PoolSet { pools: checked })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.pools.iter()
    }

    /// The pools `req` may take a `family` address from, in preference
    /// order. Pools named by the request are used as named, whatever their
    /// node selector (as in Calico); otherwise every enabled pool of the
    /// family that selects the node. An empty result means the family
    /// gets no address.
    pub fn eligible(&self, req: &AssignRequest, family: Family) -> Result<Vec<&Pool>, IpamError> {
        let named = match family {
            Family::V4 => req.ipv4_pools.as_deref(),
            Family::V6 => req.ipv6_pools.as_deref(),
        };
        match named {
            Some(names) if !names.is_empty() => names
                .iter()
                .map(|name| {
                    let pool = self
                        .pools
                        .iter()
                        .find(|p| p.is_named(name))
                        .ok_or_else(|| IpamError::UnknownPool(name.clone()))?;
                    let invalid = |reason: &str| IpamError::InvalidPool {
                        pool: pool.spec.name.clone(),
                        reason: reason.to_owned(),
                    };
                    if pool.family() != family {
                        return Err(invalid(&format!("is not an {} pool", family.name())));
                    }
                    if pool.spec.disabled {
                        return Err(invalid("is disabled"));
                    }
                    Ok(pool)
                })
                .collect(),
            _ => Ok(self
                .pools
                .iter()
                .filter(|p| {
                    p.family() == family && !p.spec.disabled && p.selector.matches(&req.node_labels)
                })
                .collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pool(name: &str, cidr: &str, block_size: u8, selector: &str) -> IpPool {
        IpPool {
            name: name.into(),
            cidr: cidr.parse().unwrap(),
            block_size,
            node_selector: selector.into(),
            disabled: false,
            nat_outgoing: false,
        }
    }

    fn reason(err: IpamError) -> String {
        match err {
            IpamError::InvalidPool { reason, .. } => reason,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn block_sizes_default_and_are_checked() {
        let set = PoolSet::new(vec![
            pool("v4", "10.65.0.0/16", 0, ""),
            pool("v6", "fd00:65::/64", 0, ""),
        ])
        .unwrap();
        let sizes: Vec<u8> = set.iter().map(|p| p.spec.block_size).collect();
        assert_eq!(sizes, [26, 122]);

        let err = PoolSet::new(vec![pool("p", "10.65.0.0/24", 20, "")]).unwrap_err();
        assert!(reason(err).contains("larger than the pool"));
        let err = PoolSet::new(vec![pool("p", "10.65.0.0/16", 19, "")]).unwrap_err();
        assert!(reason(err).contains("/20 to /32"));
        let err = PoolSet::new(vec![pool("p", "10.65.0.0/16", 33, "")]).unwrap_err();
        assert!(reason(err).contains("out of range"));
        let err = PoolSet::new(vec![pool("p", "fd00::/64", 100, "")]).unwrap_err();
        assert!(reason(err).contains("/116 to /128"));
        let err = PoolSet::new(vec![pool("p", "10.65.0.1/24", 0, "")]).unwrap_err();
        assert!(reason(err).contains("did you mean 10.65.0.0/24"));
        PoolSet::new(vec![pool("p", "10.65.0.0/26", 26, "")]).unwrap();
    }

    #[test]
    fn overlaps_duplicates_and_selectors_are_rejected() {
        let err = PoolSet::new(vec![
            pool("a", "10.65.0.0/16", 0, ""),
            pool("b", "10.65.4.0/24", 0, ""),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid IP pool \"b\": 10.65.4.0/24 overlaps pool \"a\" (10.65.0.0/16)"
        );
        let err = PoolSet::new(vec![
            pool("a", "10.65.0.0/24", 0, ""),
            pool("a", "10.66.0.0/24", 0, ""),
        ])
        .unwrap_err();
        assert!(reason(err).contains("name also used"));
        let err =
            PoolSet::new(vec![pool("a", "10.65.0.0/24", 0, "a == 'b' || c == 'd'")]).unwrap_err();
        assert!(reason(err).contains("unsupported node selector"));
    }

    #[test]
    fn eligible_pools_by_selector_and_by_name() {
        let mut disabled = pool("off", "10.67.0.0/24", 0, "");
        disabled.disabled = true;
        let set = PoolSet::new(vec![
            pool("east", "10.65.0.0/24", 0, "zone == 'east'"),
            pool("any", "10.66.0.0/24", 0, "all()"),
            disabled,
            pool("manual", "10.68.0.0/24", 0, "!all()"),
            pool("v6", "fd00::/120", 0, ""),
        ])
        .unwrap();
        let names = |pools: Vec<&Pool>| -> Vec<String> {
            pools.iter().map(|p| p.spec.name.clone()).collect()
        };
        let mut req = AssignRequest {
            node: "n1".into(),
            ..Default::default()
        };
        assert_eq!(names(set.eligible(&req, Family::V4).unwrap()), ["any"]);
        assert_eq!(names(set.eligible(&req, Family::V6).unwrap()), ["v6"]);
        req.node_labels.insert("zone".into(), "east".into());
        assert_eq!(
            names(set.eligible(&req, Family::V4).unwrap()),
            ["east", "any"]
        );

        // Named pools: by name or CIDR, in the order named, selector ignored.
        req.ipv4_pools = Some(vec!["10.68.0.0/24".into(), "any".into()]);
        assert_eq!(
            names(set.eligible(&req, Family::V4).unwrap()),
            ["manual", "any"]
        );
        req.ipv4_pools = Some(vec![]);
        assert_eq!(
            names(set.eligible(&req, Family::V4).unwrap()),
            ["east", "any"]
        );
        req.ipv4_pools = Some(vec!["nope".into()]);
        assert!(
            matches!(set.eligible(&req, Family::V4), Err(IpamError::UnknownPool(n)) if n == "nope")
        );
        req.ipv4_pools = Some(vec!["off".into()]);
        assert!(reason(set.eligible(&req, Family::V4).unwrap_err()).contains("disabled"));
        req.ipv4_pools = Some(vec!["v6".into()]);
        assert!(reason(set.eligible(&req, Family::V4).unwrap_err()).contains("not an IPv4"));
    }
}
