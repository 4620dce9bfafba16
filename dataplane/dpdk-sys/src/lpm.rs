//! `rte_lpm` (IPv4, DIR-24-8: a 2^24-entry first table and 256-entry
//! second-level groups) and `rte_lpm6` (IPv6: a 2^24-entry first table,
//! then 8-bit levels).
//!
//! Both allocate their tables in full at creation: `max_rules` rules and
//! `tbl8_groups` second-level groups (one per IPv4 /24 holding a longer
//! prefix; for IPv6 one per 8-bit level below /24 on each prefix's path).
//! Adding a prefix fails with `ENOSPC` when either runs out. Prefix
//! lengths are 1..=32 and 1..=128: neither stores a default route.

use std::ptr::NonNull;

use crate::acl::unique_name;
use crate::error::DpdkError;
use crate::sys;
use crate::Eal;

/// Addresses per call into DPDK's bulk lookups.
const CHUNK: usize = sys::CARACAL_LPM_BULK_MAX as usize;

/// `rte_lpm_lookup_bulk` marks hits with this bit and keeps the next hop
/// below it.
const LPM4_HIT: u32 = sys::RTE_LPM_LOOKUP_SUCCESS;
const LPM4_NEXT_HOP: u32 = (1 << 24) - 1;

fn check_sizes(max_rules: usize, tbl8_groups: usize) -> Result<(u32, u32), DpdkError> {
    let bad = || DpdkError::InvalidArgument(format!("{max_rules} rules, {tbl8_groups} groups"));
    Ok((
        u32::try_from(max_rules.max(1)).map_err(|_| bad())?,
        u32::try_from(tbl8_groups.max(1)).map_err(|_| bad())?,
    ))
}

/// An IPv4 `rte_lpm` table. Addresses and prefixes in host byte order.
#[derive(Debug)]
pub struct Lpm4 {
    lpm: NonNull<sys::rte_lpm>,
    memory_bytes: usize,
}

// SAFETY: the table is heap memory owned by this value alone; DPDK does
// not tie it to the thread that created it.
unsafe impl Send for Lpm4 {}
// SAFETY: `&self` methods only run DPDK's lookups, which read the tables
// (DPDK allows concurrent lookups); writers need `&mut self`.
unsafe impl Sync for Lpm4 {}

impl Lpm4 {
    /// Largest next hop (24 bits).
    pub const MAX_NEXT_HOP: u32 = LPM4_NEXT_HOP;

    pub fn new(eal: &Eal, max_rules: usize, tbl8_groups: usize) -> Result<Self, DpdkError> {
        let (max_rules, number_tbl8s) = check_sizes(max_rules, tbl8_groups)?;
        let config = sys::rte_lpm_config {
            max_rules,
            number_tbl8s,
            flags: 0,
        };
        let name = unique_name("lpm");
        let before = eal.heap_allocated_bytes();
        // SAFETY: the name and config are valid for the call (DPDK copies
        // the name); the EAL runs (`eal`).
        let lpm = unsafe { sys::rte_lpm_create(name.as_ptr(), sys::SOCKET_ID_ANY, &config) };
        let lpm = NonNull::new(lpm).ok_or_else(|| DpdkError::last("rte_lpm_create"))?;
        Ok(Lpm4 {
            lpm,
            memory_bytes: eal.heap_allocated_bytes().saturating_sub(before),
        })
    }

    /// Adds `prefix/len` → `next_hop`, or changes the next hop of an
    /// existing prefix.
    pub fn add(&mut self, prefix: u32, len: u8, next_hop: u32) -> Result<(), DpdkError> {
        if !(1..=32).contains(&len) || next_hop > Self::MAX_NEXT_HOP {
            return Err(DpdkError::InvalidArgument(format!(
                "{prefix:#x}/{len} → {next_hop}"
            )));
        }
        // SAFETY: the table is valid and not in use (`&mut self`).
        let rc = unsafe { sys::rte_lpm_add(self.lpm.as_ptr(), prefix, len, next_hop) };
        if rc < 0 {
            return Err(DpdkError::call("rte_lpm_add", -rc));
        }
        Ok(())
    }

    /// Removes `prefix/len`; fails if it is not there.
    pub fn delete(&mut self, prefix: u32, len: u8) -> Result<(), DpdkError> {
        // SAFETY: the table is valid and not in use (`&mut self`); DPDK
        // checks `len`.
        let rc = unsafe { sys::rte_lpm_delete(self.lpm.as_ptr(), prefix, len) };
        if rc < 0 {
            return Err(DpdkError::call("rte_lpm_delete", -rc));
        }
        Ok(())
    }

    /// The next hop of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<u32> {
        let mut next_hop = 0;
        // SAFETY: the table is valid and only read; `next_hop` is writable.
        let rc = unsafe { sys::caracal_rte_lpm_lookup(self.lpm.as_ptr(), addr, &mut next_hop) };
        (rc == 0).then_some(next_hop)
    }

    /// `out[i]` = the next hop of `addrs[i]`, through DPDK's bulk lookup.
    ///
    /// # Panics
    /// If the slices differ in length.
    #[inline]
    pub fn lookup_bulk(&self, addrs: &[u32], out: &mut [Option<u32>]) {
        assert_eq!(addrs.len(), out.len(), "one next hop per address");
        let mut raw = [0u32; CHUNK];
        for (addrs, out) in addrs.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            // SAFETY: the table is valid and only read; `addrs` has n
            // readable entries and `raw` at least n writable ones, with
            // n ≤ CARACAL_LPM_BULK_MAX as the shim requires.
            unsafe {
                sys::caracal_rte_lpm_lookup_bulk(
                    self.lpm.as_ptr(),
                    addrs.as_ptr(),
                    raw.as_mut_ptr(),
                    addrs.len() as u32,
                );
            }
            for (o, &r) in out.iter_mut().zip(&raw) {
                *o = (r & LPM4_HIT != 0).then_some(r & LPM4_NEXT_HOP);
            }
        }
    }

    /// DPDK heap bytes of the table (allocated in full at creation).
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl Drop for Lpm4 {
    fn drop(&mut self) {
        // SAFETY: the table came from rte_lpm_create and is freed once.
        unsafe { sys::rte_lpm_free(self.lpm.as_ptr()) };
    }
}

/// An IPv6 `rte_lpm6` table. Addresses and prefixes as 16 bytes in
/// network order (`Ipv6Addr::octets`).
#[derive(Debug)]
pub struct Lpm6 {
    lpm: NonNull<sys::rte_lpm6>,
    memory_bytes: usize,
}

// SAFETY: as for Lpm4.
unsafe impl Send for Lpm6 {}
// SAFETY: as for Lpm4: `&self` methods only look up.
unsafe impl Sync for Lpm6 {}

impl Lpm6 {
    /// Largest next hop (21 bits in DPDK 22.11's table entries).
    pub const MAX_NEXT_HOP: u32 = (1 << 21) - 1;

    pub fn new(eal: &Eal, max_rules: usize, tbl8_groups: usize) -> Result<Self, DpdkError> {
        let (max_rules, number_tbl8s) = check_sizes(max_rules, tbl8_groups)?;
        let config = sys::rte_lpm6_config {
            max_rules,
            number_tbl8s,
            flags: 0,
        };
        let name = unique_name("lpm6");
        let before = eal.heap_allocated_bytes();
        // SAFETY: as in Lpm4::new.
        let lpm = unsafe { sys::rte_lpm6_create(name.as_ptr(), sys::SOCKET_ID_ANY, &config) };
        let lpm = NonNull::new(lpm).ok_or_else(|| DpdkError::last("rte_lpm6_create"))?;
        Ok(Lpm6 {
            lpm,
            memory_bytes: eal.heap_allocated_bytes().saturating_sub(before),
        })
    }

    /// Adds `prefix/len` → `next_hop`, or changes the next hop of an
    /// existing prefix.
    pub fn add(&mut self, prefix: &[u8; 16], len: u8, next_hop: u32) -> Result<(), DpdkError> {
        if !(1..=128).contains(&len) || next_hop > Self::MAX_NEXT_HOP {
            return Err(DpdkError::InvalidArgument(format!(
                "{prefix:02x?}/{len} → {next_hop}"
            )));
        }
        // SAFETY: the table is valid and not in use (`&mut self`); the
        // prefix is 16 readable bytes.
        let rc = unsafe { sys::rte_lpm6_add(self.lpm.as_ptr(), prefix.as_ptr(), len, next_hop) };
        if rc < 0 {
            return Err(DpdkError::call("rte_lpm6_add", -rc));
        }
        Ok(())
    }

    /// Removes `prefix/len`; fails if it is not there.
    pub fn delete(&mut self, prefix: &[u8; 16], len: u8) -> Result<(), DpdkError> {
        // SAFETY: as in add; DPDK checks `len`.
        let rc = unsafe { sys::rte_lpm6_delete(self.lpm.as_ptr(), prefix.as_ptr(), len) };
        if rc < 0 {
            return Err(DpdkError::call("rte_lpm6_delete", -rc));
        }
        Ok(())
    }

    /// The next hop of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: &[u8; 16]) -> Option<u32> {
        let mut next_hop = 0;
        // SAFETY: the table is valid and only read; `addr` is 16 readable
        // bytes and `next_hop` is writable.
        let rc = unsafe { sys::rte_lpm6_lookup(self.lpm.as_ptr(), addr.as_ptr(), &mut next_hop) };
        (rc == 0).then_some(next_hop)
    }

    /// `out[i]` = the next hop of `addrs[i]`, through DPDK's bulk lookup.
    ///
    /// # Panics
    /// If the slices differ in length.
    #[inline]
    pub fn lookup_bulk(&self, addrs: &[[u8; 16]], out: &mut [Option<u32>]) {
        assert_eq!(addrs.len(), out.len(), "one next hop per address");
        let mut raw = [0i32; CHUNK];
        for (addrs, out) in addrs.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            // SAFETY: the table is valid and only read; `addrs` has n
            // readable addresses (the C prototype lacks `const`, but the
            // function does not write them) and `raw` at least n writable
            // entries.
            unsafe {
                sys::rte_lpm6_lookup_bulk_func(
                    self.lpm.as_ptr(),
                    addrs.as_ptr().cast_mut(),
                    raw.as_mut_ptr(),
                    addrs.len() as u32,
                );
            }
            for (o, &r) in out.iter_mut().zip(&raw) {
                // -1 on a miss.
                *o = u32::try_from(r).ok();
            }
        }
    }

    /// DPDK heap bytes of the table (allocated in full at creation).
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl Drop for Lpm6 {
    fn drop(&mut self) {
        // SAFETY: the table came from rte_lpm6_create and is freed once.
        unsafe { sys::rte_lpm6_free(self.lpm.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eal() -> &'static Eal {
        Eal::init().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn lpm4_add_lookup_delete() {
        let mut t = Lpm4::new(eal(), 16, 4).unwrap();
        assert!(t.memory_bytes() >= 4 << 24, "tbl24 is allocated up front");
        assert_eq!(t.lookup(0x0a00_0001), None);
        t.add(0x0a00_0000, 8, 2).unwrap();
        t.add(0x0a01_0200, 24, 3).unwrap();
        t.add(0x0a01_0203, 32, 4).unwrap();
        t.add(0x0a01_0000, 16, 5).unwrap();
        let addrs = [
            0x0b00_0000,
            0x0a7f_0000,
            0x0a01_0201,
            0x0a01_0203,
            0x0a01_0300,
        ];
        let want = [None, Some(2), Some(3), Some(4), Some(5)];
        let got: Vec<_> = addrs.iter().map(|&a| t.lookup(a)).collect();
        assert_eq!(got, want);
        let many: Vec<u32> = addrs.iter().copied().cycle().take(300).collect();
        let mut out = vec![None; many.len()];
        t.lookup_bulk(&many, &mut out);
        assert!(out.iter().zip(want.iter().cycle()).all(|(o, w)| o == w));

        t.delete(0x0a01_0203, 32).unwrap();
        assert_eq!(t.lookup(0x0a01_0203), Some(3));
        t.delete(0x0a01_0200, 24).unwrap();
        assert_eq!(t.lookup(0x0a01_0203), Some(5));
        assert!(t.delete(0x0a01_0200, 24).is_err(), "already gone");
        t.add(0x0a00_0000, 8, 9).unwrap();
        assert_eq!(t.lookup(0x0a7f_0000), Some(9), "next hop replaced");
        assert!(matches!(t.add(0, 0, 1), Err(DpdkError::InvalidArgument(_))));
        assert!(t.add(0, 1, Lpm4::MAX_NEXT_HOP + 1).is_err());
    }

    #[test]
    fn lpm4_runs_out_of_groups() {
        let mut t = Lpm4::new(eal(), 16, 1).unwrap();
        t.add(0x0a00_0001, 32, 1).unwrap();
        let e = t.add(0x0b00_0001, 32, 1).unwrap_err();
        assert!(
            matches!(
                e,
                DpdkError::Call {
                    errno: libc::ENOSPC,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn lpm6_add_lookup_delete() {
        let a = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let mut t = Lpm6::new(eal(), 16, 64).unwrap();
        t.add(&a("fd00::"), 8, 1).unwrap();
        t.add(&a("fd00:65::"), 32, 2).unwrap();
        t.add(&a("fd00:65:0:1::"), 64, 3).unwrap();
        t.add(&a("fd00:65:0:1::5"), 128, 4).unwrap();
        let addrs = [
            a("fe80::1"),
            a("fd01::1"),
            a("fd00:65:0:2::1"),
            a("fd00:65:0:1::6"),
            a("fd00:65:0:1::5"),
        ];
        let want = [None, Some(1), Some(2), Some(3), Some(4)];
        let got: Vec<_> = addrs.iter().map(|x| t.lookup(x)).collect();
        assert_eq!(got, want);
        let mut out = [None; 5];
        t.lookup_bulk(&addrs, &mut out);
        assert_eq!(out, want);
        t.delete(&a("fd00:65:0:1::"), 64).unwrap();
        assert_eq!(t.lookup(&a("fd00:65:0:1::6")), Some(2));
        assert_eq!(t.lookup(&a("fd00:65:0:1::5")), Some(4));
        assert!(t.delete(&a("fd00:65:0:1::"), 64).is_err());
        assert!(t.add(&a("::"), 1, Lpm6::MAX_NEXT_HOP + 1).is_err());
    }
}
