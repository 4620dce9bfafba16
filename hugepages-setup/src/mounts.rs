//! hugetlbfs mounts: reading them from `/proc/mounts`, deciding whether a
//! directory already has the right one, and mounting one with `mount(8)`
//! (which keeps this crate free of `unsafe`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::size::PageSize;

/// The mount program; an absolute path so `PATH` cannot substitute another.
const MOUNT_PROGRAM: &str = "/bin/mount";

/// One line of `/proc/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub options: Vec<String>,
}

impl MountEntry {
    /// For a hugetlbfs mount, the size of its pages: its `pagesize=`
    /// option, or the default size when the option is absent. `None` for
    /// other file systems.
    pub fn hugetlbfs_size(&self, default_size: Option<PageSize>) -> Option<PageSize> {
        if self.fstype != "hugetlbfs" {
            return None;
        }
        match self
            .options
            .iter()
            .find_map(|o| o.strip_prefix("pagesize="))
        {
            Some(value) => value.parse().ok(),
            None => default_size,
        }
    }
}

/// Parses the text of `/proc/mounts` (fstab format, with spaces and other
/// awkward bytes in paths escaped as octal `\040`). Malformed lines are
/// skipped.
pub fn parse_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let source = unescape(fields.next()?);
            let target = PathBuf::from(unescape(fields.next()?));
            let fstype = fields.next()?.to_owned();
            let options = fields.next()?.split(',').map(str::to_owned).collect();
            Some(MountEntry {
                source,
                target,
                fstype,
                options,
            })
        })
        .collect()
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(b) = bytes.get(i + 1..i + 4).and_then(octal_byte) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte written as three octal digits, if they are that.
fn octal_byte(digits: &[u8]) -> Option<u8> {
    let value = digits.iter().try_fold(0u32, |acc, &d| {
        (b'0'..=b'7')
            .contains(&d)
            .then(|| acc * 8 + u32::from(d - b'0'))
    })?;
    u8::try_from(value).ok()
}

/// Usable hugetlbfs mount points of pages of `size`, in mount order; a
/// mount hidden by a later one on the same directory is left out.
pub fn hugetlbfs_mount_points(
    mounts: &[MountEntry],
    size: PageSize,
    default_size: Option<PageSize>,
) -> Vec<PathBuf> {
    mounts
        .iter()
        .enumerate()
        .filter(|(i, m)| !mounts[i + 1..].iter().any(|later| later.target == m.target))
        .filter(|(_, m)| m.hugetlbfs_size(default_size) == Some(size))
        .map(|(_, m)| m.target.clone())
        .collect()
}

/// What is mounted at the directory we were asked to mount on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountState {
    /// Nothing: mount there.
    Absent,
    /// hugetlbfs of the wanted size: nothing to do.
    Mounted,
    /// Something else; mounting over it would hide it, so we refuse.
    Occupied(String),
}

/// Looks at the mount on top of `dir` (the last entry for it, since later
/// mounts hide earlier ones). `dir` must be absolute and free of symlinks,
/// as the kernel writes paths in `/proc/mounts`.
pub fn mount_state(
    mounts: &[MountEntry],
    dir: &Path,
    size: PageSize,
    default_size: Option<PageSize>,
) -> MountState {
    let Some(top) = mounts.iter().rev().find(|m| m.target == dir) else {
        return MountState::Absent;
    };
    match top.hugetlbfs_size(default_size) {
        Some(s) if s == size => MountState::Mounted,
        Some(s) => MountState::Occupied(format!("hugetlbfs with {s} pages")),
        None if top.fstype == "hugetlbfs" => {
            MountState::Occupied("hugetlbfs of an unknown page size".to_owned())
        }
        None => MountState::Occupied(top.fstype.clone()),
    }
}

/// Mounts hugetlbfs of `size` pages on `dir`, creating `dir` if needed.
pub fn mount_hugetlbfs(dir: &Path, size: PageSize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let output = Command::new(MOUNT_PROGRAM)
        .args(["-t", "hugetlbfs", "-o"])
        .arg(format!("pagesize={size}"))
        .arg("hugetlbfs")
        .arg(dir)
        .output()
        .with_context(|| format!("running {MOUNT_PROGRAM}"))?;
    if !output.status.success() {
        bail!(
            "{MOUNT_PROGRAM} -t hugetlbfs -o pagesize={size} hugetlbfs {} failed ({}): {}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0
none /mnt/huge\\0401g hugetlbfs rw,relatime,pagesize=1024M 0 0
nodev /mnt/old hugetlbfs rw,relatime 0 0
tmpfs /mnt/stack tmpfs rw 0 0
hugetlbfs /mnt/stack hugetlbfs rw,pagesize=2M 0 0
hugetlbfs /mnt/hidden hugetlbfs rw,pagesize=2M 0 0
tmpfs /mnt/hidden tmpfs rw 0 0
garbage
";

    #[test]
    fn parses_proc_mounts() {
        let mounts = parse_mounts(MOUNTS);
        assert_eq!(mounts.len(), 8);
        assert_eq!(
            mounts[1],
            MountEntry {
                source: "hugetlbfs".into(),
                target: "/dev/hugepages".into(),
                fstype: "hugetlbfs".into(),
                options: vec!["rw".into(), "relatime".into(), "pagesize=2M".into()],
            }
        );
        assert_eq!(mounts[2].target, Path::new("/mnt/huge 1g"));
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b\\011c\\012d\\134e"), "a b\tc\nd\\e");
        assert_eq!(unescape("\\04"), "\\04");
        assert_eq!(unescape("\\777x"), "\\777x");
        assert_eq!(unescape("\\08"), "\\08");
        assert_eq!(unescape("plain"), "plain");
    }

    #[test]
    fn finds_mount_points_per_size() {
        let mounts = parse_mounts(MOUNTS);
        let two_m = Some(PageSize::SIZE_2M);
        assert_eq!(
            hugetlbfs_mount_points(&mounts, PageSize::SIZE_2M, two_m),
            [
                Path::new("/dev/hugepages"),
                Path::new("/mnt/old"),
                Path::new("/mnt/stack")
            ]
        );
        assert_eq!(
            hugetlbfs_mount_points(&mounts, PageSize::SIZE_1G, two_m),
            [Path::new("/mnt/huge 1g")]
        );
        // A mount without pagesize= has the default size.
        let one_g = Some(PageSize::SIZE_1G);
        assert!(hugetlbfs_mount_points(&mounts, PageSize::SIZE_1G, one_g)
            .contains(&PathBuf::from("/mnt/old")));
    }

    #[test]
    fn decides_whether_to_mount() {
        let mounts = parse_mounts(MOUNTS);
        let state =
            |dir: &str, size| mount_state(&mounts, Path::new(dir), size, Some(PageSize::SIZE_2M));
        assert_eq!(
            state("/dev/hugepages", PageSize::SIZE_2M),
            MountState::Mounted
        );
        assert_eq!(state("/mnt/old", PageSize::SIZE_2M), MountState::Mounted);
        assert_eq!(state("/mnt/stack", PageSize::SIZE_2M), MountState::Mounted);
        assert_eq!(
            state("/mnt/elsewhere", PageSize::SIZE_2M),
            MountState::Absent
        );
        assert_eq!(state("/dev", PageSize::SIZE_2M), MountState::Absent);
        assert_eq!(
            state("/dev/hugepages", PageSize::SIZE_1G),
            MountState::Occupied("hugetlbfs with 2M pages".into())
        );
        assert_eq!(
            state("/mnt/hidden", PageSize::SIZE_2M),
            MountState::Occupied("tmpfs".into())
        );
        assert_eq!(
            state("/sys", PageSize::SIZE_2M),
            MountState::Occupied("sysfs".into())
        );
        let unknown = mount_state(&mounts, Path::new("/mnt/old"), PageSize::SIZE_2M, None);
        assert_eq!(
            unknown,
            MountState::Occupied("hugetlbfs of an unknown page size".into())
        );
    }
}
