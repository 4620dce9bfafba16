//! A memif peer that writes anything into its rings: arbitrary ring
//! headers, indices, descriptors and buffer bytes, received and
//! transmitted over as a server and as a client, in Ethernet and IP mode.
//!
//! Every access to shared memory is bounds-checked by the driver and
//! panics if a check is missing, so a crash here is an out-of-region read
//! or write (or a lost buffer, or a packet longer than a buffer).

#![no_main]

use caracal_dataplane::port::memif::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzzing::rings(data));
