//! Finds librkv for linking, std only (no crates.io: the pkg-config crate is
//! replaced by running the `pkg-config` program):
//!   1. RKV_LIB_DIR: the folder holding librkv.so;
//!   2. else `pkg-config librkv` (PKG_CONFIG overrides the program). In the
//!      build tree, bindings/CMakeLists.txt puts librkv-uninstalled.pc on
//!      PKG_CONFIG_PATH, which pkg-config prefers.
//! Dependent build scripts get the header folder as DEP_RKV_INCLUDE.
use std::env;
use std::process::Command;

fn pkg_config(args: &[&str]) -> Result<String, String> {
    let program = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let output = Command::new(&program)
        .args(args)
        .arg("librkv")
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn main() {
    for var in ["RKV_LIB_DIR", "RKV_INCLUDE_DIR", "PKG_CONFIG", "PKG_CONFIG_PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Ok(dir) = env::var("RKV_LIB_DIR") {
        println!("cargo:rustc-link-search=native={dir}");
        if let Ok(include) = env::var("RKV_INCLUDE_DIR") {
            println!("cargo:include={include}");
        }
    } else {
        let libs = pkg_config(&["--libs-only-L"]).unwrap_or_else(|e| {
            panic!(
                "librkv not found: set RKV_LIB_DIR to the folder with librkv.so, or make \
                 `pkg-config librkv` work (PKG_CONFIG_PATH); pkg-config said: {e}"
            )
        });
        for dir in libs.split_whitespace().filter_map(|flag| flag.strip_prefix("-L")) {
            println!("cargo:rustc-link-search=native={dir}");
        }
        if let Ok(cflags) = pkg_config(&["--cflags-only-I"]) {
            if let Some(include) = cflags.split_whitespace().find_map(|f| f.strip_prefix("-I")) {
                println!("cargo:include={include}");
            }
        }
    }
    println!("cargo:rustc-link-lib=dylib=rkv");
}
