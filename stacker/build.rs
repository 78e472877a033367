//! The stacker links XGBoost's library from the xgboost-cpu wheel (`XGBOOST_LIB_DIR`, set by
//! scripts/setup.sh and .cargo/config.toml) and libtorch from the PyTorch wheel (torch-sys
//! passes its folder as `DEP_TCH_LIBTORCH_LIB`): give every binary, test and example of this
//! crate a RUNPATH to both folders, so they find them without LD_LIBRARY_PATH.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-env-changed=XGBOOST_LIB_DIR");
    if let Ok(dir) = std::env::var("XGBOOST_LIB_DIR") {
        let dir = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.into());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
