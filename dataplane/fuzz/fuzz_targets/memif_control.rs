//! A memif peer that says anything on the control socket: arbitrary
//! messages (decoded, re-encoded and fed to the server and client
//! handshakes) with sealed or unsealed memory files and eventfds attached;
//! a handshake that completes is then driven through a few bursts.

#![no_main]

use caracal_dataplane::port::memif::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzzing::control(data));
