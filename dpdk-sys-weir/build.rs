//! Links the system's DPDK (pkg-config `libdpdk`, >= 22.11), compiles `shim.c`
//! (exported wrappers for DPDK's inline burst and mbuf functions) and generates
//! bindings for the small allowlisted API weir uses.

use std::env;
use std::path::PathBuf;

fn main() {
    // Without the `link` feature the crate is empty (a plain workspace build).
    if env::var_os("CARGO_FEATURE_LINK").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-changed=wrapper.h");
    let dpdk = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .expect("libdpdk >= 22.11 not found by pkg-config (Debian: apt-get install dpdk-dev)");

    // DPDK's cflags carry `-include rte_config.h` and `-march=...`; the shim gets
    // all of them so struct layouts match the installed libraries.
    let out = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .expect("running pkg-config --cflags libdpdk");
    let raw = String::from_utf8(out.stdout).expect("pkg-config output is UTF-8");
    let flags: Vec<String> = raw.split_whitespace().map(str::to_owned).collect();

    let mut build = cc::Build::new();
    build.file("shim.c").warnings(false);
    for f in &flags {
        build.flag(f);
    }
    build.compile("weir_dpdk_shim");

    // The shim calls into these; link them after it.
    for lib in &dpdk.libs {
        println!("cargo:rustc-link-lib={lib}");
    }

    let mut clang_args: Vec<String> = flags
        .iter()
        .filter(|f| !f.starts_with("-march"))
        .cloned()
        .collect();
    for p in &dpdk.include_paths {
        clang_args.push(format!("-I{}", p.display()));
    }
    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(clang_args)
        .allowlist_function("rte_eal_init")
        .allowlist_function("rte_eal_cleanup")
        .allowlist_function("rte_dev_probe")
        .allowlist_function("rte_dev_remove")
        .allowlist_function("rte_eth_dev_adjust_nb_rx_tx_desc")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_eth_dev_configure")
        .allowlist_function("rte_eth_dev_start")
        .allowlist_function("rte_eth_dev_stop")
        .allowlist_function("rte_eth_dev_close")
        .allowlist_function("rte_eth_dev_count_avail")
        .allowlist_function("rte_eth_dev_get_port_by_name")
        .allowlist_function("rte_eth_dev_info_get")
        .allowlist_function("rte_eth_dev_socket_id")
        .allowlist_function("rte_eth_rx_queue_setup")
        .allowlist_function("rte_eth_tx_queue_setup")
        .allowlist_function("rte_eth_promiscuous_enable")
        .allowlist_function("rte_eth_link_get_nowait")
        .allowlist_function("rte_eth_macaddr_get")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_mempool_free")
        .allowlist_function("weir_.*")
        .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_ETH_LINK_UP")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .opaque_type("rte_mbuf")
        .opaque_type("rte_mempool")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("generating DPDK bindings");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("writing DPDK bindings");
}
