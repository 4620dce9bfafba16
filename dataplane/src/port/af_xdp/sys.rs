//! The system calls of the AF_XDP driver: the XDP socket and its options
//! (`XDP_UMEM_REG`, the four ring sizes, `XDP_MMAP_OFFSETS`,
//! `XDP_OPTIONS`, `XDP_STATISTICS`), the UMEM and ring mappings, `bind`,
//! the tx kick and rx wakeup, and the three `bpf()` commands the redirect
//! program needs (map create, program load, map update). This is the only
//! module of the driver with `unsafe`.
//!
//! The UMEM is a [`SharedMemory`] and each ring a [`SlotRing`]: no Rust
//! reference into shared memory is ever handed out; ring indices are
//! atomics (the ring protocol), ring entries are volatile loads and stores
//! at masked slots of a mapping whose layout was checked when it was
//! mapped, and packet bytes move by raw copies at offsets checked against
//! the UMEM first.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

use crate::port::shm::{MapOptions, Plain, SharedMemory, SlotRing};
use crate::port::sys::{self, check};

/// A close-on-exec XDP socket (not bound yet).
pub(super) fn xdp_socket() -> io::Result<OwnedFd> {
    sys::socket(libc::AF_XDP, libc::SOCK_RAW, 0)
}

/// `setsockopt(SOL_XDP, opt)` with a plain-data value (an int or an
/// `xdp_umem_reg`).
fn set_xdp_opt<T: Copy>(sock: BorrowedFd<'_>, opt: libc::c_int, value: &T) -> io::Result<()> {
    sys::setsockopt(sock, libc::SOL_XDP, opt, value)
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
pub(super) fn register_umem(
    sock: BorrowedFd<'_>,
    umem: &SharedMemory,
    frame_size: u32,
) -> io::Result<()> {
    let reg = libc::xdp_umem_reg {
        addr: umem.addr(),
        len: umem.len() as u64,
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
    sys::bind(sock, &sxdp)
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
    match sys::flush_tx(sock) {
        Ok(()) => Ok(Kick::Done),
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) => Ok(Kick::Again),
            _ => Err(e),
        },
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

/// One ring of an XDP socket, mapped; unmapped on drop. Its layout comes
/// from `XDP_MMAP_OFFSETS` and is checked once, in [`RingMemory::new`]
/// (see [`SlotRing`]); the entries are `u64` addresses (fill,
/// completion) or `xdp_desc`s (rx, tx).
#[derive(Debug)]
pub(super) struct RingMemory<T: Plain>(SlotRing<T, 3>);

/// The control words of a ring, by position in its [`SlotRing`].
const PRODUCER: usize = 0;
const CONSUMER: usize = 1;
const FLAGS: usize = 2;

impl<T: Plain> RingMemory<T> {
    /// A ring of `entries` (a power of two) over `mem`, laid out as `o`
    /// says; also how the fuzz driver lays rings over anonymous memory.
    pub fn new(mem: SharedMemory, o: &libc::xdp_ring_offset, entries: u32) -> io::Result<Self> {
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("XDP_MMAP_OFFSETS: {what}"),
            )
        };
        let off = |off: u64, what: &str| usize::try_from(off).map_err(|_| bad(what));
        let words = [
            off(o.producer, "producer")?,
            off(o.consumer, "consumer")?,
            off(o.flags, "flags")?,
        ];
        let ring = SlotRing::new(mem, words, off(o.desc, "entries")?, entries).map_err(bad)?;
        Ok(RingMemory(ring))
    }

    /// Maps ring `kind` of `sock`, which has `entries` (a power of two)
    /// entries of `T` (`kind.entry_size()` bytes), at the offsets the
    /// kernel reported.
    pub fn map(
        sock: BorrowedFd<'_>,
        kind: RingKind,
        entries: u32,
        offsets: &libc::xdp_mmap_offsets,
    ) -> io::Result<Self> {
        assert_eq!(size_of::<T>(), kind.entry_size(), "{kind:?} ring entries");
        let o = kind.offsets(offsets);
        let len = usize::try_from(o.desc)
            .ok()
            .and_then(|desc| {
                (entries as usize)
                    .checked_mul(size_of::<T>())?
                    .checked_add(desc)
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("XDP_MMAP_OFFSETS of the {kind:?} ring: size"),
                )
            })?;
        let opts = MapOptions {
            flags: libc::MAP_SHARED | libc::MAP_POPULATE,
            offset: kind.page_offset(),
            mapped: len,
        };
        let mem = SharedMemory::map_with(Some(sock), len, opts)?;
        Self::new(mem, &o, entries)
            .map_err(|e| io::Error::new(e.kind(), format!("the {kind:?} ring: {e}")))
    }

    /// The producer index, with acquire ordering: entries it covers are
    /// visible once it is read.
    #[inline]
    pub fn load_producer(&self) -> u32 {
        self.0.word(PRODUCER).load(Ordering::Acquire)
    }

    /// Publishes entries written before it (release ordering).
    #[inline]
    pub fn store_producer(&self, value: u32) {
        self.0.word(PRODUCER).store(value, Ordering::Release)
    }

    #[inline]
    pub fn load_consumer(&self) -> u32 {
        self.0.word(CONSUMER).load(Ordering::Acquire)
    }

    /// Gives entries read before it back (release ordering: the reads
    /// are done before the kernel may overwrite them).
    #[inline]
    pub fn store_consumer(&self, value: u32) {
        self.0.word(CONSUMER).store(value, Ordering::Release)
    }

    /// The ring's flags word (`XDP_RING_NEED_WAKEUP`).
    #[inline]
    pub fn load_flags(&self) -> u32 {
        self.0.word(FLAGS).load(Ordering::Relaxed)
    }

    /// Sets the flags word, as the kernel does (the fuzz driver).
    pub fn store_flags(&self, value: u32) {
        self.0.word(FLAGS).store(value, Ordering::Relaxed)
    }

    /// The entry at ring index `index`.
    #[inline]
    pub fn read(&self, index: u32) -> T {
        self.0.read(index)
    }

    #[inline]
    pub fn write(&self, index: u32, value: T) {
        self.0.write(index, value)
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
}
