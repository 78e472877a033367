//! Link-time fixes for libtorch from the PyTorch wheel (issue 4, item 6). torch-sys passes its
//! libtorch folder to us as `DEP_TCH_LIBTORCH_LIB` (its `links = "tch"`); from it we add:
//! - a RUNPATH to that folder, so our binaries, tests and examples find `libtorch_cpu.so`
//!   without `LD_LIBRARY_PATH`;
//! - `libtorch_cuda` linked with `--no-as-needed`: nothing references its symbols directly, so
//!   the default as-needed link drops it and CUDA is never seen at run time. The CUDA wheel ships
//!   it even where there is no GPU, and it still runs on CPU there.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Some(lib) = env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        // torch-sys only reports its folder on Linux and macOS.
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
