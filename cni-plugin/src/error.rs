//! The CNI error result: a well-known code, a short message and details,
//! printed as JSON on stdout before the plugin exits non-zero (SPEC §5
//! "Error").

use serde_json::{json, Value};

use crate::version::CniVersion;

/// Error codes. 0–99 are the spec's well-known codes; 100 and up belong to
/// the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: the configuration's `cniVersion` is not supported, or the command
    /// does not exist in it.
    IncompatibleVersion,
    /// 2: a configuration field the plugin does not support; the message
    /// names the key and value.
    UnsupportedField,
    /// 3: the container is unknown or gone; the runtime need not clean up.
    UnknownContainer,
    /// 4: a missing or invalid `CNI_*` variable, named in the message.
    InvalidEnvironment,
    /// 5: an I/O failure, e.g. reading stdin.
    Io,
    /// 6: the input is not the JSON it should be.
    Decode,
    /// 7: the configuration decoded but is not valid.
    InvalidConfig,
    /// 11: a transient condition (the agent is unreachable or busy); the
    /// runtime should retry later.
    TryAgainLater,
    /// 50: STATUS only: the plugin cannot service ADD requests.
    NotAvailable,
    /// 999: anything else the agent reported; the message is the agent's.
    Plugin,
}

impl ErrorCode {
    /// The number on the wire.
    pub fn number(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::Io => 5,
            ErrorCode::Decode => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::NotAvailable => 50,
            ErrorCode::Plugin => 999,
        }
    }
}

/// One CNI error, ready to print.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: ErrorCode,
    /// Short and specific: names the variable, field or version at fault.
    pub msg: String,
    /// The underlying cause, if any; may be empty.
    pub details: String,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl ToString) -> CniError {
        self.details = details.to_string();
        self
    }

    /// The spec's error object, stamped with the protocol version in use.
    pub fn to_json(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "code": self.code.number(),
            "msg": self.msg,
            "details": self.details,
        })
    }

    /// Code 1 for `command` run with a configuration of `version`.
    pub fn command_not_in_version(command: &str, version: CniVersion) -> CniError {
        CniError::new(
            ErrorCode::IncompatibleVersion,
            format!("{command} is not defined in CNI {version}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_spec_error_object() {
        let e = CniError::new(ErrorCode::InvalidConfig, "name is missing").with_details("x");
        assert_eq!(
            e.to_json("1.1.0"),
            json!({"cniVersion": "1.1.0", "code": 7, "msg": "name is missing", "details": "x"})
        );
        assert_eq!(e.to_string(), "name is missing: x");
        let bare = CniError::new(ErrorCode::TryAgainLater, "agent down");
        assert_eq!(bare.to_json("0.4.0")["details"], "");
        assert_eq!(bare.to_string(), "agent down");
    }

    #[test]
    fn well_known_numbers_match_the_spec_table() {
        let table = [
            (ErrorCode::IncompatibleVersion, 1),
            (ErrorCode::UnsupportedField, 2),
            (ErrorCode::UnknownContainer, 3),
            (ErrorCode::InvalidEnvironment, 4),
            (ErrorCode::Io, 5),
            (ErrorCode::Decode, 6),
            (ErrorCode::InvalidConfig, 7),
            (ErrorCode::TryAgainLater, 11),
            (ErrorCode::NotAvailable, 50),
        ];
        for (code, n) in table {
            assert_eq!(code.number(), n, "{code:?}");
        }
        assert!(ErrorCode::Plugin.number() >= 100);
    }
}
