//! Hugepage sizes: parsing what people type (`2M`, `1G`, `2048kB`), what
//! the kernel writes in `/proc/mounts` (`pagesize=1024M`) and in sysfs
//! directory names (`hugepages-2048kB`), and printing them back.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

const KIB_PER_MIB: u64 = 1024;
const KIB_PER_GIB: u64 = 1024 * 1024;

/// The size of one hugepage, in KiB (the unit sysfs and `/proc/meminfo`
/// use). Always a power of two of at least 4 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageSize {
    kib: u64,
}

impl PageSize {
    #[cfg(test)]
    pub const SIZE_2M: PageSize = PageSize {
        kib: 2 * KIB_PER_MIB,
    };
    pub const SIZE_1G: PageSize = PageSize { kib: KIB_PER_GIB };

    /// A size from a KiB count, `None` unless it is a power of two ≥ 4 KiB.
    pub fn from_kib(kib: u64) -> Option<PageSize> {
        (kib >= 4 && kib.is_power_of_two()).then_some(PageSize { kib })
    }

    pub fn kib(self) -> u64 {
        self.kib
    }

    /// Name of this size's directory under `.../hugepages/`.
    pub fn sysfs_dir_name(self) -> String {
        format!("hugepages-{}kB", self.kib)
    }

    /// Parses a sysfs directory name such as `hugepages-2048kB`.
    pub fn from_sysfs_dir_name(name: &str) -> Option<PageSize> {
        let kib = name.strip_prefix("hugepages-")?.strip_suffix("kB")?;
        PageSize::from_kib(kib.parse().ok()?)
    }
}

/// Prints the largest whole unit: `2M`, `1G`, `64K`. The output parses
/// back, and is what hugetlbfs accepts in `pagesize=`.
impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A power of two is a whole number of GiB (MiB) once it is at
        // least one.
        if self.kib >= KIB_PER_GIB {
            write!(f, "{}G", self.kib / KIB_PER_GIB)
        } else if self.kib >= KIB_PER_MIB {
            write!(f, "{}M", self.kib / KIB_PER_MIB)
        } else {
            write!(f, "{}K", self.kib)
        }
    }
}

impl Serialize for PageSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hugepage size {0:?}: expected a power of two with a unit, e.g. 2M, 1G, 2048kB")]
pub struct BadPageSize(String);

/// Accepts a number followed by `K`, `M` or `G`, optionally followed by `B`
/// (`kB` as sysfs writes it is fine too); case-insensitive. A bare number
/// is refused: whether it meant bytes or KiB is a guess.
impl FromStr for PageSize {
    type Err = BadPageSize;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPageSize(s.to_owned());
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = t.split_at(digits_end);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let unit = unit.to_ascii_lowercase();
        let unit = unit.strip_suffix('b').unwrap_or(&unit);
        let kib_per_unit = match unit {
            "k" => 1,
            "m" => KIB_PER_MIB,
            "g" => KIB_PER_GIB,
            _ => return Err(bad()),
        };
        number
            .checked_mul(kib_per_unit)
            .and_then(PageSize::from_kib)
            .ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_spellings() {
        for s in ["2M", "2m", "2MB", "2048k", "2048kB", "2048KB", " 2M "] {
            assert_eq!(s.parse::<PageSize>(), Ok(PageSize::SIZE_2M), "{s}");
        }
        for s in ["1G", "1g", "1GB", "1024M", "1048576kB"] {
            assert_eq!(s.parse::<PageSize>(), Ok(PageSize::SIZE_1G), "{s}");
        }
        assert_eq!("64K".parse::<PageSize>().map(PageSize::kib), Ok(64));
    }

    #[test]
    fn refuses_nonsense() {
        for s in [
            "",
            "2",
            "M",
            "3M",
            "2T",
            "2 M",
            "-2M",
            "0K",
            "2MiB",
            "2.5M",
            "99999999999999999999G",
        ] {
            assert!(s.parse::<PageSize>().is_err(), "{s:?} parsed");
        }
    }

    #[test]
    fn display_round_trips() {
        for kib in [
            4,
            64,
            2048,
            32 * 1024,
            512 * 1024,
            1024 * 1024,
            16 * 1024 * 1024,
        ] {
            let size = PageSize::from_kib(kib).unwrap();
            assert_eq!(size.to_string().parse::<PageSize>(), Ok(size));
        }
        assert_eq!(PageSize::SIZE_2M.to_string(), "2M");
        assert_eq!(PageSize::SIZE_1G.to_string(), "1G");
        assert_eq!(PageSize::from_kib(64).unwrap().to_string(), "64K");
    }

    #[test]
    fn sysfs_names() {
        assert_eq!(PageSize::SIZE_2M.sysfs_dir_name(), "hugepages-2048kB");
        assert_eq!(
            PageSize::from_sysfs_dir_name("hugepages-1048576kB"),
            Some(PageSize::SIZE_1G)
        );
        assert_eq!(PageSize::from_sysfs_dir_name("hugepages-2048"), None);
        assert_eq!(PageSize::from_sysfs_dir_name("nr_hugepages"), None);
    }

    #[test]
    fn serializes_as_text() {
        assert_eq!(serde_json::to_string(&PageSize::SIZE_1G).unwrap(), "\"1G\"");
    }
}
