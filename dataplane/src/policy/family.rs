//! The two address families as types: `u32` is IPv4 and `u128` is IPv6
//! (addresses in host order). Every hot routine of the classifier is
//! generic over [`Family`], so each family gets its own monomorphised
//! lookup without a runtime branch on the version.

use std::fmt::Debug;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::classifier::{Classifier, Half};
use super::rule::{IpNet, Prefix};

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for u128 {}
}

/// An address family: `u32` (IPv4) or `u128` (IPv6).
pub trait Family:
    sealed::Sealed + Copy + Default + Eq + Ord + Hash + Debug + Send + Sync + 'static
{
    /// Address width in bits.
    const BITS: u8;
    /// Address width in 32-bit words (the decision tree cuts on words).
    const WORDS: usize;
    const ZERO: Self;

    /// The netmask of a `len`-bit prefix (`len` ≤ [`Self::BITS`]).
    fn mask(len: u8) -> Self;
    fn and(self, other: Self) -> Self;
    /// 64 well-spread bits of the address, for hashing.
    fn fold(self) -> u64;
    /// 32-bit word `i` of the address, the most significant first
    /// (`i` < [`Self::WORDS`]).
    fn word(self, i: usize) -> u32;
    /// The prefix if `net` is of this family.
    fn prefix(net: IpNet) -> Option<Prefix<Self>>;
    /// The address as an [`IpAddr`] (for logs and reports).
    fn to_ip(self) -> IpAddr;
    /// This family's half of a classifier.
    #[doc(hidden)]
    fn half(c: &Classifier) -> &Half<Self>;
}

impl Family for u32 {
    const BITS: u8 = 32;
    const WORDS: usize = 1;
    const ZERO: Self = 0;

    #[inline(always)]
    fn mask(len: u8) -> Self {
        // A 64-bit shift keeps len = 0 (shift by 32) branch-free.
        (u64::MAX << (32 - u32::from(len))) as u32
    }

    #[inline(always)]
    fn and(self, other: Self) -> Self {
        self & other
    }

    #[inline(always)]
    fn fold(self) -> u64 {
        u64::from(self)
    }

    #[inline(always)]
    fn word(self, _: usize) -> u32 {
        self
    }

    fn prefix(net: IpNet) -> Option<Prefix<Self>> {
        match net {
            IpNet::V4(p) => Some(p),
            IpNet::V6(_) => None,
        }
    }

    fn to_ip(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }

    #[inline(always)]
    fn half(c: &Classifier) -> &Half<Self> {
        &c.v4
    }
}

impl Family for u128 {
    const BITS: u8 = 128;
    const WORDS: usize = 4;
    const ZERO: Self = 0;

    #[inline(always)]
    fn mask(len: u8) -> Self {
        u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
    }

    #[inline(always)]
    fn and(self, other: Self) -> Self {
        self & other
    }

    #[inline(always)]
    fn fold(self) -> u64 {
        ((self >> 64) as u64) ^ (self as u64).rotate_left(29)
    }

    #[inline(always)]
    fn word(self, i: usize) -> u32 {
        (self >> (96 - 32 * i)) as u32
    }

    fn prefix(net: IpNet) -> Option<Prefix<Self>> {
        match net {
            IpNet::V6(p) => Some(p),
            IpNet::V4(_) => None,
        }
    }

    fn to_ip(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }

    #[inline(always)]
    fn half(c: &Classifier) -> &Half<Self> {
        &c.v6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(u32::mask(0), 0);
        assert_eq!(u32::mask(1), 0x8000_0000);
        assert_eq!(u32::mask(24), 0xffff_ff00);
        assert_eq!(u32::mask(32), u32::MAX);
        assert_eq!(u128::mask(0), 0);
        assert_eq!(u128::mask(64), u128::MAX << 64);
        assert_eq!(u128::mask(128), u128::MAX);
    }
}
