//! The CNI specification versions the plugin speaks, and what each one
//! allows: which commands exist in it and which result format it uses.
//!
//! The runtime picks the version (from the configuration's `cniVersion` and
//! `cniVersions`, SPEC §1 "Version considerations") and passes the chosen
//! one as `cniVersion`; the plugin answers in exactly that version or fails
//! with code 1.

use std::fmt;

/// A CNI specification version the plugin supports. Ordered by release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    /// Rich results (`interfaces`, `ips[].version`), plugin chaining.
    V0_3_0,
    /// 0.3.0 with typo fixes only.
    V0_3_1,
    /// Adds CHECK and `prevResult` on DEL.
    V0_4_0,
    /// Drops `ips[].version`.
    V1_0_0,
    /// Adds STATUS, GC, interface `mtu` / `socketPath` / `pciID`.
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first, as VERSION reports them.
    pub const SUPPORTED: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest version; used for output when the request names none.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// Parses an exact version string such as `"1.0.0"`. Versions before
    /// 0.3.0 (a different result format) and unreleased ones are `None`.
    pub fn parse(s: &str) -> Option<CniVersion> {
        CniVersion::SUPPORTED.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// The supported versions as strings, for VERSION and error details.
    pub fn supported_strs() -> Vec<&'static str> {
        CniVersion::SUPPORTED.iter().map(|v| v.as_str()).collect()
    }

    /// Whether ADD results carry `ips[].version` (`"4"` / `"6"`), as in
    /// every version before 1.0.0.
    pub fn ips_carry_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// Whether ADD results may carry the interface `mtu` and `socketPath`.
    ///
    /// The fields are defined by 1.1.0, but 1.0.0 and 1.1.0 share one result
    /// type (libcni reads both with the same struct, and 1.0.0 readers skip
    /// unknown keys), so both get them; a 0.x result has no place for them.
    pub fn has_interface_extras(self) -> bool {
        self >= CniVersion::V1_0_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_the_supported_versions() {
        for v in CniVersion::SUPPORTED {
            assert_eq!(CniVersion::parse(v.as_str()), Some(v));
        }
        for bad in ["0.1.0", "0.2.0", "1.2.0", "1.0", "v1.0.0", "", " 1.0.0"] {
            assert_eq!(CniVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reports_versions_oldest_first() {
        assert_eq!(
            CniVersion::supported_strs(),
            ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        );
        assert_eq!(CniVersion::LATEST, *CniVersion::SUPPORTED.last().unwrap());
    }

    #[test]
    fn result_format_splits_at_1_0_0() {
        assert!(CniVersion::V0_4_0.ips_carry_version());
        assert!(!CniVersion::V1_0_0.ips_carry_version());
        assert!(!CniVersion::V0_4_0.has_interface_extras());
        assert!(CniVersion::V1_0_0.has_interface_extras());
        assert!(CniVersion::V1_1_0.has_interface_extras());
    }
}
