//! Finds the system DPDK with pkg-config, generates bindings for the parts
//! Caracal uses (EAL, rte_acl, rte_lpm, rte_lpm6, rte_malloc statistics)
//! with bindgen, and compiles the C shim for DPDK's inline functions.
//!
//! Only the libraries whose symbols the bindings name are linked
//! (`rte_eal`, `rte_acl`, `rte_lpm`); their own dependencies (`rte_hash`,
//! `rte_rcu`, `rte_ring`, ...) come in through the shared objects'
//! `DT_NEEDED` entries, not through the forty libraries
//! `pkg-config --libs libdpdk` lists.

use std::path::PathBuf;

/// Oldest DPDK whose ABI the bindings were written against (Debian 12).
const MIN_VERSION: &str = "22.11";
const LIBS: [&str; 3] = ["rte_eal", "rte_acl", "rte_lpm"];

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    let dpdk = pkg_config::Config::new()
        .atleast_version(MIN_VERSION)
        .cargo_metadata(false)
        .probe("libdpdk")
        .unwrap_or_else(|e| {
            panic!("caracal-dpdk-sys needs the system DPDK >= {MIN_VERSION} (libdpdk-dev): {e}")
        });
    for dir in &dpdk.link_paths {
        println!("cargo:rustc-link-search=native={}", dir.display());
    }
    for lib in LIBS {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }

    // DPDK's headers expect its build configuration to be included first
    // (`pkg-config --cflags` says `-include rte_config.h`; the pkg-config
    // crate keeps only the include paths and defines).
    let mut cflags: Vec<String> = dpdk
        .include_paths
        .iter()
        .map(|p| format!("-I{}", p.display()))
        .collect();
    for (k, v) in &dpdk.defines {
        cflags.push(
            v.as_ref()
                .map_or_else(|| format!("-D{k}"), |v| format!("-D{k}={v}")),
        );
    }
    cflags.extend(["-include".into(), "rte_config.h".into()]);

    let mut shim = cc::Build::new();
    shim.file("csrc/shim.c").include("csrc").warnings(true);
    for f in &cflags {
        shim.flag(f);
    }
    // rte_lpm.h pulls in SSE4.1 inline functions; DPDK itself is built
    // for this baseline (`-march=corei7` in its pkg-config file).
    shim.flag_if_supported("-msse4.2");
    shim.compile("caracal_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("csrc/wrapper.h")
        .clang_args(&cflags)
        .clang_arg("-Icsrc")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .allowlist_function("rte_eal_init|rte_eal_cleanup|rte_strerror|rte_get_tsc_hz")
        .allowlist_function("rte_socket_count|rte_socket_id_by_idx|rte_malloc_get_socket_stats")
        .allowlist_function("rte_acl_(create|free|add_rules|reset_rules|build|classify|classify_alg|set_ctx_classify)")
        .allowlist_function("rte_lpm_(create|free|add|delete|delete_all|is_rule_present)")
        .allowlist_function("rte_lpm6_(create|free|add|delete|delete_all|lookup|lookup_bulk_func|is_rule_present)")
        .allowlist_function("caracal_.*")
        .allowlist_type("rte_acl_(param|config|field_def|field|field_types|rule_data)")
        .allowlist_type("rte_lpm6?_config|rte_malloc_socket_stats")
        .allowlist_var("RTE_ACL_.*|RTE_LPM6?_.*|CARACAL_.*|SOCKET_ID_ANY")
        .allowlist_item("rte_acl_classify_alg|RTE_ACL_FIELD_TYPE_.*|RTE_ACL_(MAX|MIN)_PRIORITY")
        // Reached through pointers only; its 64 MiB tbl24 is not ours to lay out.
        .opaque_type("rte_lpm")
        .opaque_type("rte_acl_ctx")
        .opaque_type("rte_lpm6")
        // The headers' comments are not Rust docs (their indented lines
        // would run as doctests); read them in /usr/include/dpdk.
        .generate_comments(false)
        .wrap_unsafe_ops(true)
        .derive_default(true)
        .layout_tests(true)
        .generate()
        .expect("bindgen over the DPDK headers");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing bindings.rs");
}
