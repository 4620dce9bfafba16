//! The buffer arena and its pool: the one place that turns buffer indices
//! into memory.
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;

use super::{
    BufferIndex, Meta, Packet, DATA_SIZE, DATA_SIZE_ALIGN, HEADROOM, MAX_DATA_SIZE, META_SIZE,
};

/// Start of the next pool's index range. Ranges are never reused, so an
/// index names at most one slot in the whole process.
static NEXT_INDEX_BASE: AtomicU32 = AtomicU32::new(0);

/// Buffers moved between a worker cache and the shared free list at once.
const CACHE_BATCH: usize = 256;
/// Capacity of a worker cache.
const CACHE_CAPACITY: usize = 2 * CACHE_BATCH;

/// How a pool is sized and backed.
#[derive(Debug, Clone)]
pub struct BufferPoolConfig {
    /// Number of buffers.
    pub buffers: u32,
    /// Try hugepages first (falls back to ordinary pages with a warning).
    pub hugepages: bool,
}

impl Default for BufferPoolConfig {
    fn default() -> Self {
        BufferPoolConfig {
            buffers: 16 * 1024,
            hugepages: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BufferPoolError {
    #[error("a buffer pool needs between 1 and 2^24 buffers, not {0}")]
    BadSize(u32),
    #[error("a buffer's data room is {DATA_SIZE_ALIGN} to {MAX_DATA_SIZE} bytes, not {0}")]
    BadDataSize(usize),
    #[error("buffer index space exhausted")]
    IndexSpaceExhausted,
    #[error("cannot map {bytes} bytes of buffer memory: {source}")]
    Map {
        bytes: usize,
        source: std::io::Error,
    },
}

/// A snapshot of a pool's accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub total: u32,
    /// In the shared free list plus in every live worker cache.
    pub free: u32,
    pub hugepages: bool,
}

impl PoolStats {
    pub fn in_use(&self) -> u32 {
        self.total - self.free
    }
}

/// The arena mapping; unmapped on drop.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    bytes: usize,
    hugepages: bool,
}

// SAFETY: the mapping is plain memory; which thread may touch which slot is
// governed by `BufferIndex` ownership, not by the mapping itself.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(bytes: usize, try_huge: bool) -> Result<Self, BufferPoolError> {
        const HUGE_2M: usize = 2 << 20;
        if try_huge {
            let rounded = bytes.div_ceil(HUGE_2M) * HUGE_2M;
            match Self::map_memfd(rounded, libc::MFD_HUGETLB) {
                Ok(m) => return Ok(m),
                Err(e) => tracing::warn!(
                    "no hugepages for {rounded} bytes of packet buffers ({e}); using ordinary pages \
                     (reserve some with hugepages-setup)"
                ),
            }
        }
        Self::map_memfd(bytes, 0).map_err(|source| BufferPoolError::Map { bytes, source })
    }

    fn map_memfd(bytes: usize, flags: libc::c_uint) -> std::io::Result<Self> {
        let name = c"caracal-buffers";
        // SAFETY: `name` is a valid NUL-terminated string; flags are valid.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh memfd we own; closed below on every path.
        let result = unsafe {
            if libc::ftruncate(fd, bytes as libc::off_t) != 0 {
                Err(std::io::Error::last_os_error())
            } else {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd,
                    0,
                );
                if p == libc::MAP_FAILED {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(p)
                }
            }
        };
        // SAFETY: we own `fd`; the mapping keeps the memory alive.
        unsafe { libc::close(fd) };
        let p = result?;
        // A shared hugetlb mapping reserves its pages at mmap time, so a
        // short reservation fails above rather than faulting later.
        Ok(Mapping {
            base: NonNull::new(p.cast()).expect("mmap returned null"),
            bytes,
            hugepages: flags & libc::MFD_HUGETLB != 0,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`bytes` describe a mapping we created and nobody
        // references any more (the pool is being dropped).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

/// A fixed set of packet buffers shared by all workers.
///
/// Allocation and freeing go through a per-worker [`BufferCache`], which
/// refills from and spills to a lock-free shared list in batches.
#[derive(Debug)]
pub struct BufferPool {
    map: Mapping,
    /// First index of this pool's range.
    index_base: u32,
    count: u32,
    /// Bytes of packet data per buffer (a multiple of [`DATA_SIZE_ALIGN`]).
    data_size: usize,
    /// Distance between two slots: `META_SIZE + HEADROOM + data_size`.
    slot_size: usize,
    free: ArrayQueue<u32>,
    /// Lengths of the live worker caches, published once per poll loop.
    cache_counts: Mutex<Vec<Arc<AtomicUsize>>>,
}

impl BufferPool {
    /// A pool of buffers with the default data room, [`DATA_SIZE`].
    pub fn new(config: &BufferPoolConfig) -> Result<Arc<Self>, BufferPoolError> {
        Self::with_data_size(config, DATA_SIZE)
    }

    /// A pool whose buffers hold `data_size` bytes of packet after their
    /// headroom (rounded up to [`DATA_SIZE_ALIGN`]), e.g. 9216 for jumbo
    /// frames; like DPDK's `data_room_size`, fixed for the pool's life.
    pub fn with_data_size(
        config: &BufferPoolConfig,
        data_size: usize,
    ) -> Result<Arc<Self>, BufferPoolError> {
        let count = config.buffers;
        if count == 0 || count > 1 << 24 {
            return Err(BufferPoolError::BadSize(count));
        }
        if !(DATA_SIZE_ALIGN..=MAX_DATA_SIZE).contains(&data_size) {
            return Err(BufferPoolError::BadDataSize(data_size));
        }
        let data_size = data_size.next_multiple_of(DATA_SIZE_ALIGN);
        let slot_size = META_SIZE + HEADROOM + data_size;
        let index_base = NEXT_INDEX_BASE
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_add(count)
            })
            .map_err(|_| BufferPoolError::IndexSpaceExhausted)?;
        let map = Mapping::new(count as usize * slot_size, config.hugepages)?;
        let free = ArrayQueue::new(count as usize);
        for i in 0..count {
            free.push(index_base + i)
                .expect("free list sized to the pool");
        }
        Ok(Arc::new(BufferPool {
            map,
            index_base,
            count,
            data_size,
            slot_size,
            free,
            cache_counts: Mutex::new(Vec::new()),
        }))
    }

    /// Whether the arena sits on hugepages.
    pub fn hugepages(&self) -> bool {
        self.map.hugepages
    }

    pub fn total(&self) -> u32 {
        self.count
    }

    /// Bytes of packet data each buffer holds after its headroom: the
    /// longest frame a port can receive into this pool.
    #[inline]
    pub fn data_size(&self) -> usize {
        self.data_size
    }

    /// Current accounting. Exact when no worker is between two polls;
    /// otherwise the worker caches are as of their last publication.
    pub fn stats(&self) -> PoolStats {
        let cached: usize = self
            .cache_counts
            .lock()
            .expect("cache list poisoned")
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum();
        PoolStats {
            total: self.count,
            free: self.free.len() as u32 + cached as u32,
            hugepages: self.map.hugepages,
        }
    }

    /// Buffers neither free nor cached: held by workers, ports or leaked.
    pub fn in_use(&self) -> u32 {
        self.stats().in_use()
    }

    /// Creates a per-worker cache drawing on this pool.
    pub fn cache(self: &Arc<Self>) -> BufferCache {
        let published = Arc::new(AtomicUsize::new(0));
        self.cache_counts
            .lock()
            .expect("cache list poisoned")
            .push(published.clone());
        BufferCache {
            pool: self.clone(),
            len: 0,
            slots: [0; CACHE_CAPACITY],
            published,
        }
    }

    #[inline]
    fn slot_ptr(&self, index: u32) -> *mut u8 {
        let i = index.wrapping_sub(self.index_base);
        // A token from another pool falls outside this range: indices are
        // unique per process, so this is a logic error, not a data race.
        assert!(
            i < self.count,
            "buffer {index} does not belong to this pool"
        );
        // SAFETY: `i < count`, so the offset stays inside the mapping
        // (`count * slot_size` bytes).
        unsafe { self.map.base.as_ptr().add(i as usize * self.slot_size) }
    }

    /// The packet held by `b`.
    #[inline]
    pub fn packet<'a>(&'a self, b: &'a mut BufferIndex) -> Packet<'a> {
        let slot = self.slot_ptr(b.0);
        // SAFETY: the slot lies inside the mapping (checked above), is
        // 64-byte aligned (page-aligned base, `slot_size` a multiple of
        // 64), and `b` is the unique token for it, borrowed mutably for 'a,
        // so no other reference to this slot exists. Meta and the data
        // area (`HEADROOM + data_size` bytes, the rest of the slot) are
        // disjoint parts of it. Any bit pattern is a valid `Meta` (plain
        // integers) and a valid byte.
        unsafe {
            let meta = &mut *(slot as *mut Meta);
            let area =
                std::slice::from_raw_parts_mut(slot.add(META_SIZE), self.slot_size - META_SIZE);
            Packet::new(meta, area)
        }
    }

    /// Hints the CPU to fetch the slot of a buffer we will touch soon.
    /// `index` grants no access; an index outside the pool is ignored.
    #[inline]
    pub fn prefetch(&self, index: u32) {
        let i = index.wrapping_sub(self.index_base);
        if i < self.count {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: prefetch never faults and the address is in-range.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                let p = self.map.base.as_ptr().add(i as usize * self.slot_size);
                _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(p.add(META_SIZE + HEADROOM) as *const i8);
            }
        }
    }
}

/// A worker's private stack of free buffers.
///
/// Alloc and free touch only this stack; it trades with the shared list
/// [`CACHE_BATCH`] buffers at a time. Dropping the cache returns everything
/// to the pool.
#[derive(Debug)]
pub struct BufferCache {
    pool: Arc<BufferPool>,
    len: usize,
    slots: [u32; CACHE_CAPACITY],
    published: Arc<AtomicUsize>,
}

impl BufferCache {
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// Takes one buffer; `None` when the whole pool is exhausted. The
    /// buffer's metadata is not initialised: set it before use.
    #[inline]
    pub fn alloc(&mut self) -> Option<BufferIndex> {
        if self.len == 0 {
            self.refill();
            if self.len == 0 {
                return None;
            }
        }
        self.len -= 1;
        Some(BufferIndex(self.slots[self.len]))
    }

    /// Gives one buffer back.
    #[inline]
    pub fn free(&mut self, b: BufferIndex) {
        if self.len == CACHE_CAPACITY {
            self.spill(CACHE_BATCH);
        }
        self.slots[self.len] = b.0;
        self.len += 1;
    }

    /// Buffers in this cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Makes this cache's length visible to [`BufferPool::stats`]. Called
    /// once per poll loop, not per packet.
    #[inline]
    pub fn publish(&self) {
        self.published.store(self.len, Ordering::Relaxed);
    }

    #[cold]
    fn refill(&mut self) {
        while self.len < CACHE_BATCH {
            match self.pool.free.pop() {
                Some(i) => {
                    self.slots[self.len] = i;
                    self.len += 1;
                }
                None => break,
            }
        }
        self.publish();
    }

    #[cold]
    fn spill(&mut self, n: usize) {
        for _ in 0..n.min(self.len) {
            self.len -= 1;
            // Cannot fail: the queue has room for every buffer of the pool.
            let _ = self.pool.free.push(self.slots[self.len]);
        }
        self.publish();
    }
}

impl Drop for BufferCache {
    fn drop(&mut self) {
        self.spill(self.len);
        let mut counts = self.pool.cache_counts.lock().expect("cache list poisoned");
        counts.retain(|c| !Arc::ptr_eq(c, &self.published));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::PortId;

    fn small_pool(n: u32) -> Arc<BufferPool> {
        BufferPool::new(&BufferPoolConfig {
            buffers: n,
            hugepages: false,
        })
        .unwrap()
    }

    #[test]
    fn alloc_free_accounting_is_exact() {
        let pool = small_pool(1000);
        let mut cache = pool.cache();
        let mut held = Vec::new();
        for _ in 0..1000 {
            held.push(cache.alloc().expect("pool has 1000 buffers"));
        }
        assert!(cache.alloc().is_none(), "1001st allocation must fail");
        cache.publish();
        assert_eq!(pool.in_use(), 1000);
        let mut seen: Vec<u32> = held.iter().map(|b| b.get()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 1000, "every buffer handed out once");
        for b in held {
            cache.free(b);
        }
        cache.publish();
        assert_eq!(pool.in_use(), 0);
        drop(cache);
        assert_eq!(pool.stats().free, 1000);
    }

    #[test]
    fn packet_bytes_and_meta_are_per_buffer() {
        let pool = small_pool(4);
        let mut cache = pool.cache();
        let mut a = cache.alloc().unwrap();
        let mut b = cache.alloc().unwrap();
        {
            let mut p = pool.packet(&mut a);
            *p.meta_mut() = Meta::received(PortId(1), 3);
            p.data_mut().copy_from_slice(&[1, 2, 3]);
        }
        {
            let mut p = pool.packet(&mut b);
            *p.meta_mut() = Meta::received(PortId(2), 2);
            p.data_mut().copy_from_slice(&[9, 9]);
            assert!(p.prepend(4));
            assert_eq!(p.len(), 6);
            assert!(!p.prepend(1000));
            assert!(p.advance(4));
        }
        assert_eq!(pool.packet(&mut a).data(), &[1, 2, 3]);
        assert_eq!(pool.packet(&mut b).data(), &[9, 9]);
        assert_eq!(pool.packet(&mut b).meta().rx_port, PortId(2));
        cache.free(a);
        cache.free(b);
    }

    #[test]
    fn data_room_is_set_per_pool() {
        let config = BufferPoolConfig {
            buffers: 8,
            hugepages: false,
        };
        let jumbo = BufferPool::with_data_size(&config, 9000).unwrap();
        assert_eq!(jumbo.data_size(), 9024, "rounded up to a cache line");
        assert_eq!(small_pool(2).data_size(), DATA_SIZE);
        for bad in [0, DATA_SIZE_ALIGN - 1, MAX_DATA_SIZE + 1] {
            assert!(matches!(
                BufferPool::with_data_size(&config, bad),
                Err(BufferPoolError::BadDataSize(n)) if n == bad
            ));
        }
        // Every slot holds a whole jumbo frame, and neighbours do not
        // overlap: fill each buffer to the end with its own byte.
        let mut cache = jumbo.cache();
        let mut held: Vec<_> = (0..8).map(|_| cache.alloc().unwrap()).collect();
        for (tag, b) in held.iter_mut().enumerate() {
            let mut p = jumbo.packet(b);
            *p.meta_mut() = Meta::received(PortId(0), 9024);
            assert_eq!((p.data_room(), p.tailroom()), (9024, 0));
            assert!(!p.set_len(9025));
            p.data_mut().fill(tag as u8);
            assert!(p.prepend(HEADROOM));
        }
        for (tag, b) in held.iter_mut().enumerate() {
            let p = jumbo.packet(b);
            assert_eq!(p.len(), HEADROOM + 9024);
            assert!(p.data()[HEADROOM..].iter().all(|&x| x == tag as u8));
        }
        for b in held {
            cache.free(b);
        }
        drop(cache);
        assert_eq!(jumbo.in_use(), 0);
    }

    #[test]
    #[should_panic(expected = "does not belong")]
    fn foreign_token_is_refused() {
        let p1 = small_pool(2);
        let p2 = small_pool(2);
        let mut c1 = p1.cache();
        let mut b = c1.alloc().unwrap();
        let _ = p2.packet(&mut b);
    }

    #[test]
    fn caches_trade_in_batches_across_threads() {
        let pool = small_pool(4096);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let mut cache = pool.cache();
                    for _ in 0..200 {
                        let held: Vec<_> = (0..700).filter_map(|_| cache.alloc()).collect();
                        for b in held {
                            cache.free(b);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(pool.stats().free, 4096);
    }
}
