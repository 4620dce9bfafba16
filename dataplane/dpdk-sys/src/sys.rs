//! Raw bindings: bindgen's output over `csrc/wrapper.h` (the allowlist is
//! in `build.rs`) and the C shim's functions (`csrc/shim.h`). Nothing here
//! is checked; the safe API is in the sibling modules.

// Generated code: C names, and bindgen's own helpers, which carry no
// `// SAFETY:` comments.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    missing_debug_implementations,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
