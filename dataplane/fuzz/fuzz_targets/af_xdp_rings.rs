//! A kernel that writes anything into the AF_XDP rings: arbitrary
//! producer and consumer indices, rx descriptors and completion
//! addresses, over anonymous memory laid out as the kernel lays it out.
//!
//! Every UMEM access is bounds-checked and panics if a check is missing,
//! and ring slots are masked, so a crash here is an access outside the
//! UMEM or a frame (or an uncounted bad descriptor, or a lost frame or
//! buffer).

#![no_main]

use caracal_dataplane::port::af_xdp::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzzing::rings(data));
