//! Lets the `recsys` binary find XGBoost's shared library at run time.
//!
//! `xgboost_lib-sys` (feature `local_build`) builds `libxgboost.so` with CMake into its own
//! OUT_DIR and links it dynamically, but a `-sys` crate cannot give its dependents an rpath, so a
//! release binary would fail with "libxgboost.so.3: cannot open shared object file". This script
//! runs after that crate's build script (it is a direct dependency with `links = "xgboost"`),
//! finds the library beside our own OUT_DIR and records its directory as the binary's rpath.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR = target/<profile>/build/recsys-<hash>/out
    let Some(build_dir) = out.parent().and_then(Path::parent) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(build_dir) {
        for e in rd.flatten() {
            if !e
                .file_name()
                .to_string_lossy()
                .starts_with("xgboost_lib-sys-")
            {
                continue;
            }
            let lib = e.path().join("out/lib");
            if let Ok(m) = std::fs::metadata(lib.join("libxgboost.so")) {
                found.push((m.modified().unwrap_or(std::time::UNIX_EPOCH), lib));
            }
        }
    }
    found.sort();
    match found.pop() {
        Some((_, lib)) => {
            println!(
                "cargo:rerun-if-changed={}",
                lib.join("libxgboost.so").display()
            );
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        }
        None => println!(
            "cargo:warning=libxgboost.so not found under {}: the binary will need LD_LIBRARY_PATH",
            build_dir.display()
        ),
    }
}
