//! Memory shared with someone we do not control: a memif peer's regions,
//! the AF_PACKET rings, the AF_XDP UMEM and rings. The only mapping type of
//! the ports, with their one `unsafe` for touching shared memory.
//!
//! [`SharedMemory`] never hands out a Rust reference into the mapping (the
//! other side may write any byte at any time, which no `&[u8]` may
//! observe); every access is a volatile or atomic load/store, or a raw
//! copy, at an offset it checks against the mapping's length first. A
//! failed check is a bug in the caller's validation, not something a peer
//! can cause, and panics.
//!
//! [`SlotRing`] is for rings whose layout is checked once, when they are
//! mapped (AF_XDP): its control words are offsets proven in bounds and its
//! entry indices are masked, so its accessors need no check per call.
#![allow(unsafe_code)]

use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

/// Marker for types that may live in memory shared with an untrusted peer.
///
/// # Safety
/// Implementors are `#[repr(C)]` (or primitive) with no padding, no
/// pointers and no invariants: every bit pattern of their size is a valid
/// value, so a volatile read of whatever the peer wrote is sound.
pub unsafe trait Plain: Copy + Send + Sync + 'static {}

// SAFETY: primitive integers; every bit pattern is a value.
unsafe impl Plain for u16 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}
// SAFETY: `struct xdp_desc` is three integers (u64, u32, u32) with no
// padding; every bit pattern is a value.
unsafe impl Plain for libc::xdp_desc {}

/// How to make a mapping.
#[derive(Debug, Clone, Copy)]
pub struct MapOptions {
    /// `MAP_*` flags beside the protection, which is always read-write.
    pub flags: libc::c_int,
    /// Offset in the file (page aligned; selects an AF_XDP ring).
    pub offset: libc::off_t,
    /// Bytes mapped: at least the accessible length, e.g. rounded up to a
    /// huge page (hugetlbfs only maps and unmaps whole pages).
    pub mapped: usize,
}

/// A read-write mapping, unmapped on drop; `len` bytes of it may be
/// accessed.
#[derive(Debug)]
pub struct SharedMemory {
    base: NonNull<u8>,
    /// Bytes that may be accessed.
    len: usize,
    /// Bytes mapped (at least `len`).
    mapped: usize,
}

// SAFETY: the mapping is plain memory that is shared with another process
// or the kernel anyway; every access goes through volatile/atomic
// operations or raw copies that are sound from any thread. Which thread
// uses which part is the rings' business (single producer, single
// consumer per ring).
unsafe impl Send for SharedMemory {}
// SAFETY: as above.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// `mmap(2)`s `len` accessible bytes of `fd` (anonymous memory when
    /// `None`) as `opts` says.
    pub fn map_with(fd: Option<BorrowedFd<'_>>, len: usize, opts: MapOptions) -> io::Result<Self> {
        if len == 0 || opts.mapped < len {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // SAFETY: a fresh mapping chosen by the kernel (no fixed address),
        // so no existing memory is replaced; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                opts.mapped,
                libc::PROT_READ | libc::PROT_WRITE,
                opts.flags,
                fd.map_or(-1, |fd| fd.as_raw_fd()),
                opts.offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(SharedMemory {
            base,
            len,
            mapped: opts.mapped,
        })
    }

    /// Maps the first `len` bytes of memory file `fd` shared, rounded up
    /// to `page` (a power of two: the file's page size). Only `len` bytes
    /// are ever accessed; the caller makes sure the file is at least that
    /// long and cannot shrink, so no access inside the mapping can fault.
    pub fn map(fd: BorrowedFd<'_>, len: usize, page: usize) -> io::Result<Self> {
        if !page.is_power_of_two() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mapped = len
            .checked_next_multiple_of(page)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let flags = libc::MAP_SHARED;
        Self::map_with(
            Some(fd),
            len,
            MapOptions {
                flags,
                offset: 0,
                mapped,
            },
        )
    }

    /// Private anonymous memory of `len` bytes (a multiple of the page
    /// size), with transparent hugepages advised when `hugepages` (advice
    /// only: the mapping works without).
    pub fn anonymous(len: usize, hugepages: bool) -> io::Result<Self> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        let mem = Self::map_with(
            None,
            len,
            MapOptions {
                flags,
                offset: 0,
                mapped: len,
            },
        )?;
        if hugepages {
            // SAFETY: advice on the mapping just made; it changes no
            // contents. A refusal (no THP) is harmless and ignored.
            let _ = unsafe { libc::madvise(mem.base.as_ptr().cast(), len, libc::MADV_HUGEPAGE) };
        }
        Ok(mem)
    }

    /// The mapping's first byte, for telling the kernel where it is
    /// (`XDP_UMEM_REG`); nothing may be accessed through it.
    pub fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    /// Bytes that may be accessed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `len` bytes at `off` lie inside the mapping.
    #[inline]
    pub fn contains(&self, off: usize, len: usize) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// A pointer to `len` bytes at `off`, aligned for `align`.
    #[inline]
    #[track_caller]
    fn at(&self, off: usize, len: usize, align: usize) -> *mut u8 {
        assert!(
            self.contains(off, len) && off.is_multiple_of(align),
            "shared memory access of {len} bytes at {off} outside a {} byte mapping",
            self.len
        );
        // SAFETY: `off + len <= self.len`, checked just above, so the
        // result points into (or one past the end of) the mapping.
        unsafe { self.base.as_ptr().add(off) }
    }

    /// The `u16` at `off` as an atomic (memif ring head and tail).
    #[inline]
    #[track_caller]
    fn atomic_u16(&self, off: usize) -> &AtomicU16 {
        let p = self.at(off, 2, align_of::<AtomicU16>());
        // SAFETY: `p` is in bounds and aligned (checked by `at`), lives as
        // long as `self`, and the location is only ever accessed atomically
        // (or by the peer, for which atomics are the agreed protocol).
        unsafe { AtomicU16::from_ptr(p.cast()) }
    }

    /// The `u32` at `off` as an atomic (AF_PACKET status words).
    #[inline]
    #[track_caller]
    fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        let p = self.at(off, 4, align_of::<AtomicU32>());
        // SAFETY: as `atomic_u16`.
        unsafe { AtomicU32::from_ptr(p.cast()) }
    }

    #[inline]
    #[track_caller]
    pub fn load_u16(&self, off: usize, order: Ordering) -> u16 {
        self.atomic_u16(off).load(order)
    }

    #[inline]
    #[track_caller]
    pub fn store_u16(&self, off: usize, value: u16, order: Ordering) {
        self.atomic_u16(off).store(value, order)
    }

    #[inline]
    #[track_caller]
    pub fn load_u32(&self, off: usize, order: Ordering) -> u32 {
        self.atomic_u32(off).load(order)
    }

    #[inline]
    #[track_caller]
    pub fn store_u32(&self, off: usize, value: u32, order: Ordering) {
        self.atomic_u32(off).store(value, order)
    }

    /// Reads a plain-data value at `off` with one volatile load, so the
    /// value is a snapshot the peer cannot change after it is validated.
    #[inline]
    #[track_caller]
    pub fn read<T: Plain>(&self, off: usize) -> T {
        let p = self.at(off, size_of::<T>(), align_of::<T>());
        // SAFETY: in bounds and aligned (checked by `at`); `T: Plain`
        // accepts any bit pattern, so whatever the peer wrote is a value.
        unsafe { std::ptr::read_volatile(p.cast::<T>()) }
    }

    /// Writes a plain-data value at `off` with one volatile store.
    #[inline]
    #[track_caller]
    pub fn write<T: Plain>(&self, off: usize, value: T) {
        let p = self.at(off, size_of::<T>(), align_of::<T>());
        // SAFETY: in bounds and aligned (checked by `at`); no reference
        // into the mapping exists to be invalidated by the store.
        unsafe { std::ptr::write_volatile(p.cast::<T>(), value) }
    }

    /// Copies `dst.len()` bytes at `off` out of the mapping.
    ///
    /// The peer may be writing the same bytes meanwhile; the copy then
    /// holds some mix of old and new bytes, which is what an untrusted
    /// packet may contain anyway. Nothing is ever read *through* the
    /// mapping after validation: lengths and offsets come from snapshots.
    #[inline]
    #[track_caller]
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) {
        let p = self.at(off, dst.len(), 1);
        // SAFETY: the source range is inside the mapping (checked by `at`)
        // and cannot overlap `dst`, which is our own memory.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `src` into the mapping at `off`.
    #[inline]
    #[track_caller]
    pub fn copy_in(&self, off: usize, src: &[u8]) {
        let p = self.at(off, src.len(), 1);
        // SAFETY: the destination range is inside the mapping (checked by
        // `at`) and cannot overlap `src`, which is our own memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) }
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: `base`/`mapped` describe a mapping this value created; no
        // reference into it exists (none is ever handed out).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped) };
    }
}

/// A ring of `entries` (a power of two) slots of `T` and `W` atomic `u32`
/// control words (producer, consumer, flags), laid out in one mapping
/// and checked once, in [`SlotRing::new`]: the words are aligned and
/// inside, and so are all the slots. Slot indices are masked with
/// `entries - 1`, so no access afterwards can leave the mapping, and none
/// checks anything.
#[derive(Debug)]
pub struct SlotRing<T: Plain, const W: usize> {
    mem: SharedMemory,
    words: [usize; W],
    slots: usize,
    mask: u32,
    _entries: PhantomData<T>,
}

impl<T: Plain, const W: usize> SlotRing<T, W> {
    /// The ring in `mem` with its words at offsets `words` and `entries`
    /// slots from offset `slots`; `Err` names what does not fit.
    pub fn new(
        mem: SharedMemory,
        words: [usize; W],
        slots: usize,
        entries: u32,
    ) -> Result<Self, &'static str> {
        if !entries.is_power_of_two() {
            return Err("entries are not a power of two");
        }
        let bytes = (entries as usize)
            .checked_mul(size_of::<T>())
            .ok_or("size")?;
        if !slots.is_multiple_of(align_of::<T>()) || !mem.contains(slots, bytes) {
            return Err("entries");
        }
        for off in words {
            if !off.is_multiple_of(align_of::<AtomicU32>()) || !mem.contains(off, 4) {
                return Err("control word");
            }
        }
        Ok(SlotRing {
            mem,
            words,
            slots,
            mask: entries - 1,
            _entries: PhantomData,
        })
    }

    /// Control word `i` (a constant at the call site, so the array index
    /// is checked at compile time).
    #[inline]
    pub fn word(&self, i: usize) -> &AtomicU32 {
        let off = self.words[i];
        // SAFETY: `new` checked every word offset is aligned and inside
        // the mapping, which lives as long as `self`; the other side and
        // we access these words only atomically.
        unsafe { AtomicU32::from_ptr(self.mem.base.as_ptr().add(off).cast()) }
    }

    /// A pointer to the slot of ring index `index`.
    #[inline]
    fn slot(&self, index: u32) -> *mut T {
        let off = self.slots + (index & self.mask) as usize * size_of::<T>();
        debug_assert!(self.mem.contains(off, size_of::<T>()));
        // SAFETY: `new` checked that all `mask + 1` slots lie inside the
        // mapping, aligned for `T`, and the index is masked.
        unsafe { self.mem.base.as_ptr().add(off).cast() }
    }

    /// The entry in the slot of ring index `index`, with one volatile load.
    #[inline]
    pub fn read(&self, index: u32) -> T {
        // SAFETY: an aligned slot inside the mapping (see `slot`); `T:
        // Plain` accepts any bit pattern.
        unsafe { std::ptr::read_volatile(self.slot(index)) }
    }

    #[inline]
    pub fn write(&self, index: u32, value: T) {
        // SAFETY: an aligned slot inside the mapping (see `slot`); no
        // reference into the mapping exists to be invalidated.
        unsafe { std::ptr::write_volatile(self.slot(index), value) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_memory_is_bounds_checked() {
        let m = SharedMemory::anonymous(8192, false).unwrap();
        m.copy_in(4096, b"caracal");
        let mut out = [0u8; 7];
        m.copy_out(4096, &mut out);
        assert_eq!(&out, b"caracal");
        m.store_u32(8188, 7, Ordering::Release);
        assert_eq!(m.read::<u32>(8188), 7);
        let r = std::panic::catch_unwind(|| m.copy_out(8190, &mut [0u8; 4]));
        assert!(r.is_err(), "a copy past the end panics");
        let r = std::panic::catch_unwind(|| m.load_u32(2, Ordering::Relaxed));
        assert!(r.is_err(), "a misaligned word panics");
        assert!(SharedMemory::anonymous(0, false).is_err());
    }

    #[test]
    fn slot_rings_are_checked_once_and_masked() {
        let ring = |words, slots, entries| {
            SlotRing::<u64, 2>::new(
                SharedMemory::anonymous(4096, false).unwrap(),
                words,
                slots,
                entries,
            )
        };
        assert!(ring([0, 4], 64, 512).is_err(), "slots past the end");
        assert!(ring([0, 4], 68, 8).is_err(), "misaligned slots");
        assert!(ring([0, 4096], 64, 8).is_err(), "word past the end");
        assert!(ring([0, 2], 64, 8).is_err(), "misaligned word");
        assert!(ring([0, 4], 64, 6).is_err(), "not a power of two");
        let r = ring([0, 4], 64, 8).unwrap();
        r.write(3, 0xdead);
        assert_eq!(r.read(3 + 8 * 1000), 0xdead, "indices wrap");
        r.word(1).store(5, Ordering::Release);
        assert_eq!(r.mem.read::<u32>(4), 5);
    }
}
