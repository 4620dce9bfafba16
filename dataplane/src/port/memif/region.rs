//! Shared-memory regions: the memory files that hold rings and packet
//! buffers.
//!
//! As a client we create them ([`Region::create`]): a memfd on hugepages
//! (`MFD_HUGETLB`) when the kernel has some reserved, else on ordinary
//! pages, sealed against shrinking (`F_SEAL_SHRINK`) as libmemif, VPP and
//! DPDK seal theirs, and sent to the server with `ADD_REGION`.
//!
//! As a server we map what the client sends ([`Region::map_peer`]). The
//! client is untrusted, and a mapping of a file that later shrinks faults
//! (`SIGBUS`) on access, so a peer region is only mapped when the file is
//! a regular file at least as long as announced and sealed against
//! shrinking, and not on hugetlbfs; every access then stays within the
//! announced size ([`SharedMemory`] checks it). A hole the peer punches in
//! a hugetlbfs file (`fallocate`, which shrink seals do not stop) faults
//! with `SIGBUS` when we touch it while the huge page pool is empty, so
//! such regions are refused; libmemif, DPDK (copy mode) and VPP by
//! default send ordinary memfds. DPDK's zero-copy client sends unsealed
//! hugetlbfs files and is refused on both counts. (Our own client's
//! hugepage regions are for peers that trust us.)

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use std::sync::Arc;

use super::sys;
use crate::port::shm::SharedMemory;

/// Size of the huge pages `MFD_HUGETLB` gives by default on x86-64 and
/// aarch64 with 4 KiB base pages, bytes.
const HUGE_PAGE: usize = 2 << 20;
/// Ordinary page size, bytes.
const PAGE: usize = 4096;
/// Largest region a peer may announce: descriptor and ring offsets are
/// 32-bit, so nothing past 4 GiB is reachable anyway.
pub const MAX_REGION_SIZE: u64 = 1 << 32;

/// Why a peer's region is refused.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("region size {0} is not between 1 and 4 GiB")]
    BadSize(u64),
    #[error("region file: {0}")]
    Stat(io::Error),
    #[error("region file is not a regular memory file")]
    NotAFile,
    #[error("region file holds {file} bytes, fewer than the {announced} announced")]
    TooShort { file: u64, announced: u64 },
    #[error("region file is not sealed against shrinking (F_SEAL_SHRINK)")]
    NotSealed,
    #[error("region file is on hugetlbfs, which a peer can make fault")]
    Hugetlbfs,
    #[error("cannot map region: {0}")]
    Map(io::Error),
}

/// A mapped region and the descriptor of its memory file.
#[derive(Debug)]
pub struct Region {
    mem: Arc<SharedMemory>,
    fd: OwnedFd,
    hugepages: bool,
}

impl Region {
    /// Creates a zeroed region of at least `size` bytes (rounded up to
    /// whole pages; [`Region::size`] is what the peer is told).
    pub fn create(name: &CStr, size: usize, try_hugepages: bool) -> io::Result<Region> {
        if try_hugepages {
            match Self::create_on(name, size, true) {
                Ok(r) => return Ok(r),
                Err(e) => tracing::debug!(
                    "no hugepages for a {size} byte memif region ({e}); using ordinary pages"
                ),
            }
        }
        Self::create_on(name, size, false)
    }

    fn create_on(name: &CStr, size: usize, hugepages: bool) -> io::Result<Region> {
        let page = if hugepages { HUGE_PAGE } else { PAGE };
        let size = size
            .max(1)
            .checked_next_multiple_of(page)
            .filter(|&s| s as u64 <= MAX_REGION_SIZE)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = sys::memfd_create(name, hugepages)?;
        File::from(fd.try_clone()?).set_len(size as u64)?;
        sys::add_seals(fd.as_fd(), libc::F_SEAL_SHRINK)?;
        // A shared hugetlb mapping reserves its pages now, so a short
        // reservation fails here rather than faulting later.
        let mem = SharedMemory::map(fd.as_fd(), size, page)?;
        Ok(Region {
            mem: Arc::new(mem),
            fd,
            hugepages,
        })
    }

    /// Maps a region a peer sent with `ADD_REGION` (see the module docs
    /// for what is checked).
    pub fn map_peer(fd: OwnedFd, size: u64) -> Result<Region, RegionError> {
        if size == 0 || size > MAX_REGION_SIZE {
            return Err(RegionError::BadSize(size));
        }
        let file = File::from(fd);
        let meta = file.metadata().map_err(RegionError::Stat)?;
        if !meta.file_type().is_file() {
            return Err(RegionError::NotAFile);
        }
        if meta.len() < size {
            return Err(RegionError::TooShort {
                file: meta.len(),
                announced: size,
            });
        }
        match sys::seals(file.as_fd()) {
            Ok(seals) if seals & libc::F_SEAL_SHRINK != 0 => {}
            _ => return Err(RegionError::NotSealed),
        }
        if sys::is_hugetlbfs(file.as_fd()).map_err(RegionError::Stat)? {
            return Err(RegionError::Hugetlbfs);
        }
        let mem = SharedMemory::map(file.as_fd(), size as usize, PAGE).map_err(RegionError::Map)?;
        Ok(Region {
            mem: Arc::new(mem),
            fd: OwnedFd::from(file),
            hugepages: false,
        })
    }

    pub fn memory(&self) -> &Arc<SharedMemory> {
        &self.mem
    }

    /// Bytes of the region.
    pub fn size(&self) -> usize {
        self.mem.len()
    }

    pub fn hugepages(&self) -> bool {
        self.hugepages
    }

    /// The memory file, to send to the peer.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_regions_are_sealed_page_multiples_a_peer_can_map() {
        let ours = Region::create(c"caracal-test", 5000, false).unwrap();
        assert_eq!(ours.size(), 8192);
        assert!(!ours.hugepages());
        let theirs = Region::map_peer(ours.fd().try_clone_to_owned().unwrap(), 8192).unwrap();
        ours.memory().copy_in(8000, b"hello");
        let mut got = [0u8; 5];
        theirs.memory().copy_out(8000, &mut got);
        assert_eq!(&got, b"hello");
        // Announcing less than the file holds is fine; only that much is used.
        let part = Region::map_peer(ours.fd().try_clone_to_owned().unwrap(), 100).unwrap();
        assert_eq!(part.size(), 100);
    }

    #[test]
    fn hugepage_regions_fall_back_to_ordinary_pages() {
        // Whatever the machine has reserved, creation succeeds.
        let r = Region::create(c"caracal-test", 1 << 20, true).unwrap();
        let page = if r.hugepages() { HUGE_PAGE } else { PAGE };
        assert_eq!(r.size() % page, 0);
        assert!(r.size() >= 1 << 20);
        if r.hugepages() {
            assert!(matches!(
                Region::map_peer(r.fd().try_clone_to_owned().unwrap(), r.size() as u64),
                Err(RegionError::Hugetlbfs)
            ));
        }
    }

    #[test]
    fn peer_regions_are_refused_unless_sealed_long_enough_files() {
        let ours = Region::create(c"caracal-test", 4096, false).unwrap();
        let fd = || ours.fd().try_clone_to_owned().unwrap();
        assert!(matches!(
            Region::map_peer(fd(), 8192),
            Err(RegionError::TooShort {
                file: 4096,
                announced: 8192
            })
        ));
        assert!(matches!(
            Region::map_peer(fd(), 0),
            Err(RegionError::BadSize(0))
        ));
        assert!(matches!(
            Region::map_peer(fd(), MAX_REGION_SIZE + 1),
            Err(RegionError::BadSize(_))
        ));

        let unsealed = sys::memfd_create(c"caracal-test", false).unwrap();
        File::from(unsealed.try_clone().unwrap())
            .set_len(4096)
            .unwrap();
        assert!(matches!(
            Region::map_peer(unsealed, 4096),
            Err(RegionError::NotSealed)
        ));

        let ev = sys::eventfd().unwrap();
        assert!(matches!(
            Region::map_peer(ev, 8),
            Err(RegionError::NotAFile)
        ));
        let dir = File::open("/").unwrap();
        assert!(matches!(
            Region::map_peer(OwnedFd::from(dir), 8),
            Err(RegionError::NotAFile)
        ));
    }
}
