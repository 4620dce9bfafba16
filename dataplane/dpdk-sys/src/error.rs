//! Errors of the safe API.

use std::ffi::CStr;

use crate::sys;

/// A DPDK call that failed, or an argument refused before the call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpdkError {
    #[error("EAL initialisation ({args}) failed: {message} (rte_errno {errno})")]
    EalInit {
        args: String,
        errno: i32,
        message: String,
    },
    #[error("{call} failed: {message} (errno {errno})")]
    Call {
        call: &'static str,
        errno: i32,
        message: String,
    },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("the ACL context has no compiled rules (never built, or its last build failed)")]
    NotBuilt,
}

impl DpdkError {
    /// The error of `call`, which reported the positive error number `errno`.
    pub(crate) fn call(call: &'static str, errno: i32) -> Self {
        DpdkError::Call {
            call,
            errno,
            message: strerror(errno),
        }
    }

    /// The error of `call`, which reported failure through `rte_errno`.
    pub(crate) fn last(call: &'static str) -> Self {
        Self::call(call, rte_errno())
    }
}

/// The calling thread's `rte_errno`.
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: the shim reads a thread-local integer; no preconditions.
    unsafe { sys::caracal_rte_errno() }
}

/// DPDK's description of an error number (its own or libc's).
pub(crate) fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a
    // NUL-terminated string that stays valid until the next call on this
    // thread; it is copied out at once.
    unsafe { CStr::from_ptr(sys::rte_strerror(errno)) }
        .to_string_lossy()
        .into_owned()
}
