//! `rte_acl`, DPDK's packet classifier, for the IPv4 5-tuple.
//!
//! `rte_acl` compiles a rule set into a multi-bit trie (split into up to
//! eight tries when it grows too big) and walks it over a batch of keys
//! with SIMD code. It has no incremental update: [`AclContext::build`]
//! replaces the rules and recompiles everything.
//!
//! Keys are bytes at fixed offsets, in network byte order, described to
//! `rte_acl` by field definitions. The first field must be one byte long
//! and the rest are read four bytes at a time (one *input index* per four
//! bytes), hence the layout of [`AclKey`]:
//!
//! | offset | size | field            | input index | match        |
//! |--------|------|------------------|-------------|--------------|
//! | 0      | 1    | protocol         | 0           | value/mask   |
//! | 4      | 4    | source address   | 1           | prefix       |
//! | 8      | 4    | destination addr | 2           | prefix       |
//! | 12     | 2    | source port      | 3           | range        |
//! | 14     | 2    | destination port | 3           | range        |
//!
//! Rule values, unlike keys, are given in host byte order.

use std::ffi::CString;
use std::num::NonZeroU32;
use std::ops::RangeInclusive;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::DpdkError;
use crate::sys;
use crate::Eal;

/// Highest rule priority `rte_acl` accepts (the lowest is 1); among the
/// rules matching a key the one of highest priority wins.
pub const ACL_MAX_PRIORITY: u32 = sys::RTE_ACL_MAX_PRIORITY;

/// Offsets of the key's fields, bytes.
mod field {
    pub const PROTO: usize = 0;
    pub const SRC: usize = 4;
    pub const DST: usize = 8;
    pub const SPORT: usize = 12;
    pub const DPORT: usize = 14;
    pub const LEN: usize = 16;
}

/// Fields per rule.
const FIELDS: usize = 5;
/// Keys handed to `rte_acl_classify` per call; bounds the stack array of
/// key pointers.
const CHUNK: usize = 256;
/// Categories: one result per key.
const CATEGORIES: u32 = 1;

/// A packet's 5-tuple laid out as `rte_acl` reads it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C, align(4))]
pub struct AclKey([u8; field::LEN]);

impl AclKey {
    /// The key of a packet; addresses and ports in host byte order.
    pub fn new(proto: u8, src: u32, dst: u32, sport: u16, dport: u16) -> Self {
        let mut b = [0u8; field::LEN];
        b[field::PROTO] = proto;
        b[field::SRC..field::SRC + 4].copy_from_slice(&src.to_be_bytes());
        b[field::DST..field::DST + 4].copy_from_slice(&dst.to_be_bytes());
        b[field::SPORT..field::SPORT + 2].copy_from_slice(&sport.to_be_bytes());
        b[field::DPORT..field::DPORT + 2].copy_from_slice(&dport.to_be_bytes());
        AclKey(b)
    }

    /// The bytes `rte_acl` reads.
    pub fn as_bytes(&self) -> &[u8; field::LEN] {
        &self.0
    }
}

/// One IPv4 5-tuple rule. Addresses and ports in host byte order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclRule {
    /// The protocol, compared under `proto_mask` (0 = any protocol).
    pub proto: u8,
    pub proto_mask: u8,
    /// Source prefix: address and length in bits (0..=32).
    pub src: u32,
    pub src_len: u8,
    pub dst: u32,
    pub dst_len: u8,
    pub sport: RangeInclusive<u16>,
    pub dport: RangeInclusive<u16>,
    /// 1..=[`ACL_MAX_PRIORITY`]; the highest matching priority wins.
    /// Priorities should be unique: `rte_acl` does not say which of two
    /// matching rules of equal priority wins.
    pub priority: u32,
    /// What a key matching this rule classifies to.
    pub userdata: NonZeroU32,
}

/// `struct rte_acl_rule` with its field array sized: what
/// `RTE_ACL_RULE_DEF(name, 5)` declares in C.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawRule {
    data: sys::rte_acl_rule_data,
    field: [sys::rte_acl_field; FIELDS],
}

const RAW_RULE_SIZE: usize = std::mem::size_of::<RawRule>();
// RTE_ACL_RULE_SZ(FIELDS): the size rte_acl_add_rules strides by.
const _: () = assert!(
    RAW_RULE_SIZE
        == std::mem::size_of::<sys::rte_acl_rule>()
            + FIELDS * std::mem::size_of::<sys::rte_acl_field>()
);

fn value8(v: u8) -> sys::rte_acl_field_types {
    sys::rte_acl_field_types { u8_: v }
}

fn value16(v: u16) -> sys::rte_acl_field_types {
    sys::rte_acl_field_types { u16_: v }
}

fn value32(v: u32) -> sys::rte_acl_field_types {
    sys::rte_acl_field_types { u32_: v }
}

impl AclRule {
    fn validate(&self) -> Result<(), DpdkError> {
        let bad = |what: &str| Err(DpdkError::InvalidArgument(format!("{what} in {self:?}")));
        if self.src_len > 32 || self.dst_len > 32 {
            return bad("prefix longer than 32 bits");
        }
        if self.sport.is_empty() || self.dport.is_empty() {
            return bad("empty port range");
        }
        if !(1..=ACL_MAX_PRIORITY).contains(&self.priority) {
            return bad("priority out of 1..=RTE_ACL_MAX_PRIORITY");
        }
        Ok(())
    }

    fn raw(&self) -> RawRule {
        let f = |value, mask_range| sys::rte_acl_field { value, mask_range };
        RawRule {
            data: sys::rte_acl_rule_data {
                category_mask: 1,
                priority: self.priority as i32, // ≤ 2^29 - 1 (validated)
                userdata: self.userdata.get(),
            },
            field: [
                f(value8(self.proto), value8(self.proto_mask)),
                f(value32(self.src), value32(u32::from(self.src_len))),
                f(value32(self.dst), value32(u32::from(self.dst_len))),
                f(value16(*self.sport.start()), value16(*self.sport.end())),
                f(value16(*self.dport.start()), value16(*self.dport.end())),
            ],
        }
    }
}

/// The field definitions of the layout in the module docs.
fn config() -> sys::rte_acl_config {
    let def = |ty: u32, size: usize, index: u8, input: u8, offset: usize| sys::rte_acl_field_def {
        type_: ty as u8,
        size: size as u8,
        field_index: index,
        input_index: input,
        offset: offset as u32,
    };
    let mut cfg = sys::rte_acl_config {
        num_categories: CATEGORIES,
        num_fields: FIELDS as u32,
        // No memory limit for the run-time structures.
        max_size: 0,
        ..Default::default()
    };
    cfg.defs[..FIELDS].copy_from_slice(&[
        def(sys::RTE_ACL_FIELD_TYPE_BITMASK, 1, 0, 0, field::PROTO),
        def(sys::RTE_ACL_FIELD_TYPE_MASK, 4, 1, 1, field::SRC),
        def(sys::RTE_ACL_FIELD_TYPE_MASK, 4, 2, 2, field::DST),
        def(sys::RTE_ACL_FIELD_TYPE_RANGE, 2, 3, 3, field::SPORT),
        def(sys::RTE_ACL_FIELD_TYPE_RANGE, 2, 4, 3, field::DPORT),
    ]);
    cfg
}

/// The classification code paths of `rte_acl`, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AclAlgorithm {
    Avx512x32,
    Avx512x16,
    Avx2,
    Sse,
    Scalar,
}

impl AclAlgorithm {
    pub const ALL: [AclAlgorithm; 5] = [
        AclAlgorithm::Avx512x32,
        AclAlgorithm::Avx512x16,
        AclAlgorithm::Avx2,
        AclAlgorithm::Sse,
        AclAlgorithm::Scalar,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AclAlgorithm::Avx512x32 => "avx512x32",
            AclAlgorithm::Avx512x16 => "avx512x16",
            AclAlgorithm::Avx2 => "avx2",
            AclAlgorithm::Sse => "sse",
            AclAlgorithm::Scalar => "scalar",
        }
    }

    fn raw(self) -> sys::rte_acl_classify_alg {
        match self {
            AclAlgorithm::Avx512x32 => sys::rte_acl_classify_alg_RTE_ACL_CLASSIFY_AVX512X32,
            AclAlgorithm::Avx512x16 => sys::rte_acl_classify_alg_RTE_ACL_CLASSIFY_AVX512X16,
            AclAlgorithm::Avx2 => sys::rte_acl_classify_alg_RTE_ACL_CLASSIFY_AVX2,
            AclAlgorithm::Sse => sys::rte_acl_classify_alg_RTE_ACL_CLASSIFY_SSE,
            AclAlgorithm::Scalar => sys::rte_acl_classify_alg_RTE_ACL_CLASSIFY_SCALAR,
        }
    }
}

/// An `rte_acl` context: up to `capacity` rules, compiled by
/// [`AclContext::build`], classified by [`AclContext::classify`].
#[derive(Debug)]
pub struct AclContext {
    ctx: NonNull<sys::rte_acl_ctx>,
    eal: &'static Eal,
    capacity: usize,
    rules: usize,
    built: bool,
    algorithm: AclAlgorithm,
    heap_before: usize,
    memory_bytes: usize,
}

// SAFETY: the context is heap memory owned by this value alone; DPDK does
// not tie it to the thread that created it.
unsafe impl Send for AclContext {}
// SAFETY: the only `&self` call into DPDK is rte_acl_classify(_alg),
// which reads the compiled context and writes only the caller's buffers:
// DPDK documents it as safe to run concurrently on one context.
unsafe impl Sync for AclContext {}

static NEXT_NAME: AtomicU32 = AtomicU32::new(0);

/// A name no other live DPDK object of this process has (DPDK looks
/// contexts and tables up by name and would hand back an existing one).
pub(crate) fn unique_name(kind: &str) -> CString {
    let n = NEXT_NAME.fetch_add(1, Ordering::Relaxed);
    CString::new(format!("caracal-{kind}-{n}")).expect("no NUL")
}

impl AclContext {
    /// An empty context for up to `capacity` rules.
    pub fn new(eal: &'static Eal, capacity: usize) -> Result<Self, DpdkError> {
        let name = unique_name("acl");
        let param = sys::rte_acl_param {
            name: name.as_ptr(),
            socket_id: sys::SOCKET_ID_ANY,
            rule_size: RAW_RULE_SIZE as u32,
            max_rule_num: u32::try_from(capacity.max(1))
                .map_err(|_| DpdkError::InvalidArgument(format!("{capacity} rules")))?,
        };
        let heap_before = eal.heap_allocated_bytes();
        // SAFETY: `param` and the name it points to are valid for the
        // call (DPDK copies the name); the EAL runs (`eal`).
        let ctx = unsafe { sys::rte_acl_create(&param) };
        let ctx = NonNull::new(ctx).ok_or_else(|| DpdkError::last("rte_acl_create"))?;
        let mut acl = AclContext {
            ctx,
            eal,
            capacity,
            rules: 0,
            built: false,
            algorithm: AclAlgorithm::Scalar,
            heap_before,
            memory_bytes: 0,
        };
        // rte_acl's default is the first of these the CPU (and the SIMD
        // width allowed) supports; finding it names what is measured.
        acl.algorithm = AclAlgorithm::ALL
            .into_iter()
            .find(|a| {
                // SAFETY: the context is valid and not in use (`&mut`).
                unsafe { sys::rte_acl_set_ctx_classify(acl.ctx.as_ptr(), a.raw()) == 0 }
            })
            .unwrap_or(AclAlgorithm::Scalar);
        acl.memory_bytes = eal.heap_allocated_bytes().saturating_sub(heap_before);
        Ok(acl)
    }

    /// Replaces the rules with `rules` and compiles them. On error the
    /// context has no rules and classifies nothing until the next
    /// successful build.
    pub fn build(&mut self, rules: &[AclRule]) -> Result<(), DpdkError> {
        if rules.len() > self.capacity {
            return Err(DpdkError::InvalidArgument(format!(
                "{} rules in a context for {}",
                rules.len(),
                self.capacity
            )));
        }
        let raw = rules
            .iter()
            .map(|r| r.validate().map(|()| r.raw()))
            .collect::<Result<Vec<RawRule>, _>>()?;
        self.built = false;
        self.rules = 0;
        // SAFETY: the context is valid and not in use (`&mut self`).
        unsafe { sys::rte_acl_reset_rules(self.ctx.as_ptr()) };
        // SAFETY: `raw` holds raw.len() rules of the size the context was
        // created with (RAW_RULE_SIZE, asserted to be RTE_ACL_RULE_SZ(5)).
        let rc = unsafe {
            sys::rte_acl_add_rules(
                self.ctx.as_ptr(),
                raw.as_ptr().cast::<sys::rte_acl_rule>(),
                raw.len() as u32,
            )
        };
        if rc != 0 {
            return Err(DpdkError::call("rte_acl_add_rules", -rc));
        }
        let cfg = config();
        // SAFETY: the context is valid and not in use; `cfg` describes
        // FIELDS fields inside the rule size the context was made for.
        let rc = unsafe { sys::rte_acl_build(self.ctx.as_ptr(), &cfg) };
        if rc != 0 {
            return Err(DpdkError::call("rte_acl_build", -rc));
        }
        self.rules = rules.len();
        self.built = true;
        self.memory_bytes = self
            .eal
            .heap_allocated_bytes()
            .saturating_sub(self.heap_before);
        Ok(())
    }

    /// `out[i]` = the userdata of the highest-priority rule matching
    /// `keys[i]`, or `None`.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn classify(
        &self,
        keys: &[AclKey],
        out: &mut [Option<NonZeroU32>],
    ) -> Result<(), DpdkError> {
        self.classify_inner(keys, out, None)
    }

    /// [`AclContext::classify`] with a given code path.
    pub fn classify_with(
        &self,
        algorithm: AclAlgorithm,
        keys: &[AclKey],
        out: &mut [Option<NonZeroU32>],
    ) -> Result<(), DpdkError> {
        self.classify_inner(keys, out, Some(algorithm))
    }

    #[inline]
    fn classify_inner(
        &self,
        keys: &[AclKey],
        out: &mut [Option<NonZeroU32>],
        algorithm: Option<AclAlgorithm>,
    ) -> Result<(), DpdkError> {
        assert_eq!(keys.len(), out.len(), "one result per key");
        if !self.built {
            return Err(DpdkError::NotBuilt);
        }
        let mut data = [std::ptr::null::<u8>(); CHUNK];
        for (keys, out) in keys.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            for (d, k) in data.iter_mut().zip(keys) {
                *d = k.0.as_ptr();
            }
            let n = keys.len() as u32;
            // `Option<NonZeroU32>` is guaranteed to have the layout of
            // `u32`, 0 standing for `None` — the value rte_acl writes for
            // "no match" (userdata is never 0).
            let results = out.as_mut_ptr().cast::<u32>();
            let rc = match algorithm {
                // SAFETY: the context is built and only read; `data`
                // holds `n` pointers to keys of field::LEN bytes (every
                // field the config reads lies inside); `results` has room
                // for n × CATEGORIES results; both live across the call.
                None => unsafe {
                    sys::rte_acl_classify(
                        self.ctx.as_ptr(),
                        data.as_mut_ptr(),
                        results,
                        n,
                        CATEGORIES,
                    )
                },
                // SAFETY: as above.
                Some(a) => unsafe {
                    sys::rte_acl_classify_alg(
                        self.ctx.as_ptr(),
                        data.as_mut_ptr(),
                        results,
                        n,
                        CATEGORIES,
                        a.raw(),
                    )
                },
            };
            if rc != 0 {
                return Err(DpdkError::call("rte_acl_classify", -rc));
            }
        }
        Ok(())
    }

    /// Rules compiled by the last successful build.
    pub fn rules(&self) -> usize {
        self.rules
    }

    /// The code path [`AclContext::classify`] runs.
    pub fn algorithm(&self) -> AclAlgorithm {
        self.algorithm
    }

    /// DPDK heap bytes the context holds (its rule array and compiled
    /// tries), measured around creation and the last build.
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl Drop for AclContext {
    fn drop(&mut self) {
        // SAFETY: the context came from rte_acl_create and is freed once.
        unsafe { sys::rte_acl_free(self.ctx.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eal() -> &'static Eal {
        Eal::init().unwrap_or_else(|e| panic!("{e}"))
    }

    fn rule(priority: u32, userdata: u32) -> AclRule {
        AclRule {
            proto: 0,
            proto_mask: 0,
            src: 0,
            src_len: 0,
            dst: 0,
            dst_len: 0,
            sport: 0..=u16::MAX,
            dport: 0..=u16::MAX,
            priority,
            userdata: NonZeroU32::new(userdata).unwrap(),
        }
    }

    #[test]
    fn key_layout() {
        let k = AclKey::new(6, 0x0a00_0001, 0xc0a8_0102, 1234, 80);
        assert_eq!(
            k.as_bytes(),
            &[6, 0, 0, 0, 10, 0, 0, 1, 192, 168, 1, 2, 0x04, 0xd2, 0, 80]
        );
    }

    #[test]
    fn classify_literal_rules() {
        let rules = [
            // 10.0.0.0/8 → 192.168.1.0/24 TCP dport 80: 1
            AclRule {
                proto: 6,
                proto_mask: 0xff,
                src: 0x0a00_0000,
                src_len: 8,
                dst: 0xc0a8_0100,
                dst_len: 24,
                dport: 80..=80,
                ..rule(30, 1)
            },
            // Anything → 192.168.1.5 UDP sport 1000..=2000: 2
            AclRule {
                proto: 17,
                proto_mask: 0xff,
                dst: 0xc0a8_0105,
                dst_len: 32,
                sport: 1000..=2000,
                ..rule(20, 2)
            },
            // 10.1.0.0/16 → anything, any protocol: 3 (below rule 1)
            AclRule {
                src: 0x0a01_0000,
                src_len: 16,
                ..rule(10, 3)
            },
        ];
        let mut acl = AclContext::new(eal(), 8).unwrap();
        let keys = [AclKey::new(6, 0x0a01_0203, 0xc0a8_0105, 5, 80)];
        let mut out = [None; 1];
        assert_eq!(acl.classify(&keys, &mut out), Err(DpdkError::NotBuilt));
        acl.build(&rules).unwrap();
        assert_eq!(acl.rules(), 3);
        assert!(acl.memory_bytes() > 0);

        let cases = [
            // (key, expected userdata)
            (AclKey::new(6, 0x0a01_0203, 0xc0a8_0105, 5, 80), Some(1)),
            (AclKey::new(6, 0x0a01_0203, 0xc0a8_0105, 5, 81), Some(3)),
            (AclKey::new(6, 0x0a02_0203, 0xc0a8_0105, 5, 81), None),
            (AclKey::new(17, 0x0b00_0001, 0xc0a8_0105, 1000, 9), Some(2)),
            (AclKey::new(17, 0x0b00_0001, 0xc0a8_0105, 2000, 9), Some(2)),
            (AclKey::new(17, 0x0b00_0001, 0xc0a8_0105, 2001, 9), None),
            (AclKey::new(17, 0x0a01_0001, 0xc0a8_0105, 1500, 9), Some(2)),
            (AclKey::new(17, 0x0a01_0001, 0xc0a8_0106, 1500, 9), Some(3)),
            (AclKey::new(1, 0x0a00_0001, 0xc0a8_0101, 0, 80), None),
        ];
        // Several batches: more keys than one chunk.
        let keys: Vec<AclKey> = cases.iter().cycle().take(600).map(|c| c.0).collect();
        let want: Vec<Option<u32>> = cases.iter().cycle().take(600).map(|c| c.1).collect();
        let mut out = vec![None; keys.len()];
        acl.classify(&keys, &mut out).unwrap();
        let got: Vec<Option<u32>> = out.iter().map(|o| o.map(NonZeroU32::get)).collect();
        assert_eq!(got, want);
        for alg in [AclAlgorithm::Scalar, acl.algorithm()] {
            acl.classify_with(alg, &keys, &mut out).unwrap();
            let got: Vec<Option<u32>> = out.iter().map(|o| o.map(NonZeroU32::get)).collect();
            assert_eq!(got, want, "{alg:?}");
        }

        // A rebuild without rule 1: its keys fall to rule 3.
        acl.build(&rules[1..]).unwrap();
        let mut out = [None; 1];
        acl.classify(&keys[..1], &mut out).unwrap();
        assert_eq!(out[0].map(NonZeroU32::get), Some(3));
    }

    #[test]
    fn refuses_bad_rules() {
        let mut acl = AclContext::new(eal(), 1).unwrap();
        assert!(matches!(
            acl.build(&[rule(0, 1)]),
            Err(DpdkError::InvalidArgument(_))
        ));
        assert!(matches!(
            acl.build(&[rule(1, 1), rule(2, 2)]),
            Err(DpdkError::InvalidArgument(_))
        ));
        let bad_len = AclRule {
            src_len: 33,
            ..rule(1, 1)
        };
        assert!(acl.build(&[bad_len]).is_err());
        acl.build(&[rule(ACL_MAX_PRIORITY, 7)]).unwrap();
    }
}
