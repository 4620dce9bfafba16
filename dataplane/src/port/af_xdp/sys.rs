//! The system calls of the AF_XDP driver: the XDP socket and its options
//! (`XDP_UMEM_REG`, the four ring sizes, `XDP_MMAP_OFFSETS`,
//! `XDP_OPTIONS`, `XDP_STATISTICS`), the UMEM and ring mappings, `bind`,
//! the tx kick and rx wakeup, and the three `bpf()` commands the redirect
//! program needs (map create, program load, map update). This is the only
//! module of the driver with `unsafe`.
//!
//! As in the AF_PACKET driver, no Rust reference into shared memory is
//! ever handed out: ring indices are atomics (the ring protocol), ring
//! entries are volatile loads and stores at masked slots of a mapping
//! whose layout was checked when it was mapped, and packet bytes move by
//! raw copies at offsets checked against the UMEM first.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Turns a `-1` return into the thread's `errno`.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A close-on-exec XDP socket (not bound yet).
pub(super) fn xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = check(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a descriptor the kernel just created and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(SOL_XDP, opt)` with a plain-data value.
fn set_xdp_opt<T: Copy>(sock: BorrowedFd<'_>, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points at `size_of::<T>()` readable bytes that
    // outlive the call; the kernel copies them. Callers pass the C type
    // the option expects (an int or an `xdp_umem_reg`).
    check(unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// `getsockopt(SOL_XDP, opt)` into a plain-data value; fails unless the
/// kernel filled exactly `size_of::<T>()` bytes.
fn get_xdp_opt<T: Copy>(sock: BorrowedFd<'_>, opt: libc::c_int, value: &mut T) -> io::Result<()> {
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` points at `len` writable bytes that outlive the
    // call; callers pass plain-data C types for which any bytes the
    // kernel writes are a valid value.
    check(unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (value as *mut T).cast(),
            &mut len,
        )
    })?;
    if len as usize != size_of::<T>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "SOL_XDP option {opt}: kernel wrote {len} bytes, expected {}",
                size_of::<T>()
            ),
        ));
    }
    Ok(())
}

/// Registers `umem` as the socket's packet memory, cut into chunks of
/// `frame_size` bytes with no headroom of our own.
pub(super) fn register_umem(sock: BorrowedFd<'_>, umem: &Umem, frame_size: u32) -> io::Result<()> {
    let reg = libc::xdp_umem_reg {
        addr: umem.base.as_ptr() as u64,
        len: umem.len as u64,
        chunk_size: frame_size,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    set_xdp_opt(sock, libc::XDP_UMEM_REG, &reg)
}

/// The four rings, by their `setsockopt` and `mmap` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RingKind {
    Rx,
    Tx,
    Fill,
    Completion,
}

impl RingKind {
    fn option(self) -> libc::c_int {
        match self {
            RingKind::Rx => libc::XDP_RX_RING,
            RingKind::Tx => libc::XDP_TX_RING,
            RingKind::Fill => libc::XDP_UMEM_FILL_RING,
            RingKind::Completion => libc::XDP_UMEM_COMPLETION_RING,
        }
    }

    /// The `mmap` offset that selects the ring (<linux/if_xdp.h>).
    fn page_offset(self) -> libc::off_t {
        match self {
            RingKind::Rx => libc::XDP_PGOFF_RX_RING,
            RingKind::Tx => libc::XDP_PGOFF_TX_RING,
            RingKind::Fill => libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
            RingKind::Completion => libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
        }
    }

    /// Bytes per entry: an `xdp_desc` on rx/tx, a `u64` address on the
    /// UMEM rings.
    pub fn entry_size(self) -> usize {
        match self {
            RingKind::Rx | RingKind::Tx => size_of::<libc::xdp_desc>(),
            RingKind::Fill | RingKind::Completion => size_of::<u64>(),
        }
    }

    fn offsets(self, all: &libc::xdp_mmap_offsets) -> libc::xdp_ring_offset {
        let o = match self {
            RingKind::Rx => &all.rx,
            RingKind::Tx => &all.tx,
            RingKind::Fill => &all.fr,
            RingKind::Completion => &all.cr,
        };
        libc::xdp_ring_offset {
            producer: o.producer,
            consumer: o.consumer,
            desc: o.desc,
            flags: o.flags,
        }
    }
}

/// Sets the number of entries (a power of two) of one ring.
pub(super) fn set_ring_size(sock: BorrowedFd<'_>, ring: RingKind, entries: u32) -> io::Result<()> {
    set_xdp_opt(sock, ring.option(), &(entries as libc::c_int))
}

/// Where the producer, consumer, flags and entries of each ring sit in
/// its mapping (Linux 5.4 and later, which report the flags word).
pub(super) fn mmap_offsets(sock: BorrowedFd<'_>) -> io::Result<libc::xdp_mmap_offsets> {
    // SAFETY: plain data of integers; all zeroes is a valid value.
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    get_xdp_opt(sock, libc::XDP_MMAP_OFFSETS, &mut off)?;
    Ok(off)
}

/// Binds the socket to queue `queue` of interface `ifindex` with
/// `XDP_*` bind flags.
pub(super) fn bind(sock: BorrowedFd<'_>, ifindex: u32, queue: u32, flags: u16) -> io::Result<()> {
    let sxdp = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    // SAFETY: `sxdp` is a valid sockaddr_xdp of the length we pass.
    check(unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sxdp as *const libc::sockaddr_xdp).cast(),
            size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// True when the bound socket runs in zero-copy mode (`XDP_OPTIONS`).
pub(super) fn zero_copy(sock: BorrowedFd<'_>) -> io::Result<bool> {
    let mut opts = libc::xdp_options { flags: 0 };
    get_xdp_opt(sock, libc::XDP_OPTIONS, &mut opts)?;
    Ok(opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
}

/// The kernel's counters for the socket (`XDP_STATISTICS`, Linux 5.9
/// layout).
pub(super) fn statistics(sock: BorrowedFd<'_>) -> io::Result<libc::xdp_statistics> {
    // SAFETY: plain data of integers; all zeroes is a valid value.
    let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    get_xdp_opt(sock, libc::XDP_STATISTICS, &mut st)?;
    Ok(st)
}

/// What a tx kick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kick {
    /// The kernel took what it could.
    Done,
    /// The kernel stopped early (its per-call budget, a busy driver):
    /// descriptors are left on the ring.
    Again,
}

/// Asks the kernel to send what is on the tx ring, without blocking.
pub(super) fn kick_tx(sock: BorrowedFd<'_>) -> io::Result<Kick> {
    // SAFETY: a null buffer of length 0 and no address is how an XDP tx
    // ring is flushed; nothing is read through the pointers.
    let rc = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if rc >= 0 {
        return Ok(Kick::Done);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) => Ok(Kick::Again),
        _ => Err(e),
    }
}

/// Wakes the driver up to refill from the fill ring (zero-copy drivers
/// that set the fill ring's need-wakeup flag), without blocking.
pub(super) fn wake_rx(sock: BorrowedFd<'_>) {
    // SAFETY: a null buffer of length 0 and no address: the kernel only
    // runs the driver's wakeup and reads or writes nothing through them.
    let _ = unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

/// The packet memory: one private anonymous mapping, locked in by the
/// kernel when it is registered; unmapped on drop (the kernel keeps its
/// own pin on the pages for as long as a socket uses them).
#[derive(Debug)]
pub(super) struct Umem {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: every access is a raw copy at a checked offset, sound from any
// thread; which thread touches which frame is the queue's business (one
// owner), and the kernel's side follows the ring protocol.
unsafe impl Send for Umem {}
// SAFETY: as above.
unsafe impl Sync for Umem {}

impl Umem {
    /// Maps `len` bytes (a multiple of the page size), asking for
    /// transparent hugepages when `hugepages` (advice only: the mapping
    /// works without).
    pub fn map(len: usize, hugepages: bool) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: a fresh anonymous mapping chosen by the kernel (no fixed
        // address), so no existing memory is replaced; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if hugepages {
            // SAFETY: advice on the mapping just made; it changes no
            // contents. A refusal (no THP) is harmless and ignored.
            let _ = unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
        }
        let base = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Umem { base, len })
    }

    /// A pointer to `len` bytes at `off`; panics outside the mapping (a
    /// bug of the driver: descriptors are checked before they get here).
    #[inline]
    #[track_caller]
    fn at(&self, off: usize, len: usize) -> *mut u8 {
        assert!(
            off.checked_add(len).is_some_and(|end| end <= self.len),
            "UMEM access of {len} bytes at {off} outside {} bytes",
            self.len
        );
        // SAFETY: `off + len <= self.len`, checked just above.
        unsafe { self.base.as_ptr().add(off) }
    }

    /// Copies `dst.len()` bytes at `off` out of the UMEM.
    #[inline]
    #[track_caller]
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) {
        let p = self.at(off, dst.len());
        // SAFETY: the source is inside the mapping (checked by `at`) and
        // cannot overlap `dst`, which is our own memory.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `src` into the UMEM at `off`.
    #[inline]
    #[track_caller]
    pub fn copy_in(&self, off: usize, src: &[u8]) {
        let p = self.at(off, src.len());
        // SAFETY: the destination is inside the mapping (checked by `at`)
        // and cannot overlap `src`, which is our own memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) }
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe a mapping this value created; no
        // reference into it exists (none is ever handed out).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// One ring of an XDP socket, mapped; unmapped on drop.
///
/// Its layout comes from `XDP_MMAP_OFFSETS` and is checked once, in
/// [`RingMemory::map`]: the producer, consumer and flags words are
/// aligned and inside the mapping, and so are all `entries` slots. Slot
/// numbers are masked with `entries - 1`, so no later access can leave it.
#[derive(Debug)]
pub(super) struct RingMemory {
    base: NonNull<u8>,
    len: usize,
    producer: usize,
    consumer: usize,
    flags: usize,
    desc: usize,
    entry_size: usize,
    mask: u32,
}

// SAFETY: as `Umem`: atomics, volatile accesses and raw copies only.
unsafe impl Send for RingMemory {}
// SAFETY: as above.
unsafe impl Sync for RingMemory {}

impl RingMemory {
    /// Maps ring `kind` of `sock`, which has `entries` (a power of two)
    /// entries, at the offsets the kernel reported.
    pub fn map(
        sock: BorrowedFd<'_>,
        kind: RingKind,
        entries: u32,
        offsets: &libc::xdp_mmap_offsets,
    ) -> io::Result<Self> {
        if !entries.is_power_of_two() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let o = kind.offsets(offsets);
        let entry_size = kind.entry_size();
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("XDP_MMAP_OFFSETS of the {kind:?} ring: {what}"),
            )
        };
        let desc = usize::try_from(o.desc).map_err(|_| bad("entries"))?;
        let len = (entries as usize)
            .checked_mul(entry_size)
            .and_then(|n| n.checked_add(desc))
            .ok_or_else(|| bad("size"))?;
        let word = |off: u64, what: &str| -> io::Result<usize> {
            let off = usize::try_from(off).map_err(|_| bad(what))?;
            if !off.is_multiple_of(4) || off.checked_add(4).is_none_or(|end| end > len) {
                return Err(bad(what));
            }
            Ok(off)
        };
        let producer = word(o.producer, "producer")?;
        let consumer = word(o.consumer, "consumer")?;
        let flags = word(o.flags, "flags")?;
        if !desc.is_multiple_of(8) {
            return Err(bad("entries are not aligned"));
        }
        // SAFETY: a fresh shared mapping of the socket's ring chosen by the
        // kernel (no fixed address), so no existing memory is replaced;
        // the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                sock.as_raw_fd(),
                kind.page_offset(),
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(RingMemory {
            base,
            len,
            producer,
            consumer,
            flags,
            desc,
            entry_size,
            mask: entries - 1,
        })
    }

    #[inline]
    fn word(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is one of the word offsets `map` checked (aligned,
        // inside the mapping), which lives as long as `self`; the kernel
        // and we access these words only atomically.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off).cast()) }
    }

    /// The producer index, with acquire ordering: entries it covers are
    /// visible once it is read.
    #[inline]
    pub fn load_producer(&self) -> u32 {
        self.word(self.producer).load(Ordering::Acquire)
    }

    /// Publishes entries written before it (release ordering).
    #[inline]
    pub fn store_producer(&self, value: u32) {
        self.word(self.producer).store(value, Ordering::Release)
    }

    #[inline]
    pub fn load_consumer(&self) -> u32 {
        self.word(self.consumer).load(Ordering::Acquire)
    }

    /// Gives entries read before it back (release ordering: the reads
    /// are done before the kernel may overwrite them).
    #[inline]
    pub fn store_consumer(&self, value: u32) {
        self.word(self.consumer).store(value, Ordering::Release)
    }

    /// The ring's flags word (`XDP_RING_NEED_WAKEUP`).
    #[inline]
    pub fn load_flags(&self) -> u32 {
        self.word(self.flags).load(Ordering::Relaxed)
    }

    /// A pointer to the slot of ring index `index`.
    #[inline]
    fn slot(&self, index: u32) -> *mut u8 {
        let off = self.desc + (index & self.mask) as usize * self.entry_size;
        debug_assert!(off + self.entry_size <= self.len);
        // SAFETY: `map` checked that all `mask + 1` slots lie inside the
        // mapping, and the index is masked.
        unsafe { self.base.as_ptr().add(off) }
    }

    /// The address in a fill or completion ring slot.
    #[inline]
    pub fn read_addr(&self, index: u32) -> u64 {
        debug_assert_eq!(self.entry_size, 8);
        // SAFETY: an aligned slot inside the mapping (see `slot`); any bit
        // pattern is a u64.
        unsafe { std::ptr::read_volatile(self.slot(index).cast::<u64>()) }
    }

    #[inline]
    pub fn write_addr(&self, index: u32, addr: u64) {
        debug_assert_eq!(self.entry_size, 8);
        // SAFETY: an aligned slot inside the mapping (see `slot`); no
        // reference into the mapping exists to be invalidated.
        unsafe { std::ptr::write_volatile(self.slot(index).cast::<u64>(), addr) }
    }

    /// The `(addr, len, options)` of an rx or tx ring slot.
    #[inline]
    pub fn read_desc(&self, index: u32) -> (u64, u32, u32) {
        debug_assert_eq!(self.entry_size, 16);
        // SAFETY: an aligned `xdp_desc` slot inside the mapping (see
        // `slot`); it is plain integers, so any bit pattern is valid.
        let d = unsafe { std::ptr::read_volatile(self.slot(index).cast::<libc::xdp_desc>()) };
        (d.addr, d.len, d.options)
    }

    #[inline]
    pub fn write_desc(&self, index: u32, addr: u64, len: u32) {
        debug_assert_eq!(self.entry_size, 16);
        let d = libc::xdp_desc {
            addr,
            len,
            options: 0,
        };
        // SAFETY: an aligned slot inside the mapping (see `slot`); no
        // reference into the mapping exists to be invalidated.
        unsafe { std::ptr::write_volatile(self.slot(index).cast::<libc::xdp_desc>(), d) }
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe a mapping this value created; no
        // reference into it exists (none is ever handed out).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

// --- bpf(2) ---------------------------------------------------------------

/// `enum bpf_cmd` (<linux/bpf.h>).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
/// `enum bpf_map_type`: `BPF_MAP_TYPE_XSKMAP`.
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// `enum bpf_prog_type`: `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;

/// The `bpf_attr` prefix of `BPF_MAP_CREATE`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// The `bpf_attr` prefix of `BPF_MAP_*_ELEM`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The `bpf_attr` prefix of `BPF_PROG_LOAD`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `bpf(cmd, attr, sizeof attr)`; the kernel zero-extends a short
/// `bpf_attr`, so each command passes only the prefix it uses.
fn bpf<T: Copy>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a `#[repr(C)]` prefix of `union bpf_attr` for
    // `cmd`, valid for reads and writes of its size for the whole call;
    // every pointer inside it is set by the caller to memory that outlives
    // the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Takes ownership of a descriptor `bpf()` returned.
fn owned_fd(rc: libc::c_long) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(rc).map_err(|_| io::Error::other("bpf returned a bad descriptor"))?;
    // SAFETY: a descriptor the kernel just created (`bpf()` returns a new
    // fd for map and program creation) and nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn name16(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    // At most 15 bytes: the kernel wants a NUL-terminated name.
    for (dst, &src) in out.iter_mut().zip(name.as_bytes().iter().take(15)) {
        *dst = src;
    }
    out
}

/// Creates an XSKMAP of `entries` slots (keys: queue ids).
pub(super) fn create_xskmap(name: &str, entries: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: name16(name),
        ..MapCreateAttr::default()
    };
    owned_fd(bpf(BPF_MAP_CREATE, &mut attr)?)
}

/// Puts XDP socket `xsk` in slot `key` of XSKMAP `map`.
pub(super) fn xskmap_set(map: BorrowedFd<'_>, key: u32, xsk: BorrowedFd<'_>) -> io::Result<()> {
    let value: u32 = xsk.as_raw_fd() as u32;
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        // BPF_ANY
        flags: 0,
        ..MapElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Loads an XDP program of encoded instructions `insns` (8 bytes each).
/// On a verifier refusal, the error carries the verifier's log.
pub(super) fn load_xdp_program(name: &str, insns: &[u8], license: &str) -> io::Result<OwnedFd> {
    assert!(
        insns.len().is_multiple_of(8),
        "eBPF instructions are 8 bytes"
    );
    let license = std::ffi::CString::new(license)
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let load = |log: Option<&mut Vec<u8>>| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: (insns.len() / 8) as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name16(name),
            ..ProgLoadAttr::default()
        };
        if let Some(buf) = log {
            attr.log_level = 1;
            attr.log_size = buf.len() as u32;
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        bpf(BPF_PROG_LOAD, &mut attr)
    };
    match load(None) {
        Ok(rc) => owned_fd(rc),
        Err(e) => {
            // Load again with a log to say why.
            let mut log = vec![0u8; 64 << 10];
            let _ = load(Some(&mut log));
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(
                e.kind(),
                format!("{e}; verifier: {}", text.trim()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uapi_layouts_match_linux() {
        assert_eq!(size_of::<libc::xdp_desc>(), 16);
        assert_eq!(size_of::<libc::sockaddr_xdp>(), 16);
        assert_eq!(size_of::<libc::xdp_umem_reg>(), 32);
        assert_eq!(size_of::<libc::xdp_mmap_offsets>(), 128);
        assert_eq!(size_of::<MapCreateAttr>(), 44);
        assert_eq!(size_of::<MapElemAttr>(), 32);
        assert_eq!(size_of::<ProgLoadAttr>(), 72);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(libc::AF_XDP, 44);
    }

    #[test]
    fn names_are_cut_and_terminated() {
        let n = name16("a-name-longer-than-sixteen");
        assert_eq!(&n[..15], b"a-name-longer-t");
        assert_eq!(n[15], 0);
    }

    #[test]
    fn umem_copies_stay_inside() {
        let u = Umem::map(8192, false).unwrap();
        u.copy_in(4096, b"caracal");
        let mut out = [0u8; 7];
        u.copy_out(4096, &mut out);
        assert_eq!(&out, b"caracal");
        let r = std::panic::catch_unwind(|| u.copy_out(8190, &mut [0u8; 4]));
        assert!(r.is_err(), "a copy past the end panics");
    }
}
