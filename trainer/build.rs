//! Link-time fixes for libtorch from the PyTorch wheel, and the C++ shim (issue 4, item 6).
//! torch-sys passes its libtorch folder to us as `DEP_TCH_LIBTORCH_LIB` (its `links = "tch"`);
//! from it we add:
//! - a RUNPATH to that folder, so our binaries, tests and examples find `libtorch_cpu.so`
//!   without `LD_LIBRARY_PATH`;
//! - `libtorch_cuda` linked with `--no-as-needed`: nothing references its symbols directly, so
//!   the default as-needed link drops it and CUDA is never seen at run time. The CUDA wheel ships
//!   it even where there is no GPU, and it still runs on CPU there;
//! - `csrc/` (what tch does not expose: autocast, channels-last, fused optimizers, CUDA memory
//!   and graphs), compiled against the same headers and C++ ABI as libtorch. Its CUDA half is
//!   compiled in only when the CUDA runtime headers and `libcudart` are found (the wheel's
//!   `nvidia/*` packages, `CUDA_HOME` or `/usr/local/cuda`; `STACKHIVE_ACCEL_NO_CUDA=1` skips
//!   it); otherwise those calls fail at run time with a message saying so. This script must not
//!   fail a build for a missing GPU.
//!
//! The wheel's `nvidia/cu13` runtime headers lack the two compiler-side headers
//! `cuda_runtime.h` needs (`crt/host_config.h`, `crt/host_defines.h`, shipped with nvcc). When
//! they are missing we take the `crt/` folder of another CUDA header set installed beside torch
//! (`nvidia/*/include`, then Triton's bundled CUDA headers), copied alone into `OUT_DIR` so no
//! other header of that set can shadow the runtime's. For host-only C++ these two files only
//! define platform and attribute macros, so a minor-version mismatch is harmless.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SHIM_FILES: [&str; 4] = [
    "csrc/accel.h",
    "csrc/guard.h",
    "csrc/accel.cpp",
    "csrc/accel_cuda.cpp",
];

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=STACKHIVE_ACCEL_NO_CUDA");
    for f in SHIM_FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let Some(lib) = env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        // torch-sys only reports its folder on Linux and macOS.
        panic!("the accel shim needs libtorch's headers: expected torch-sys to report its libtorch folder (DEP_TCH_LIBTORCH_LIB), found nothing (only Linux and macOS are supported)");
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let torch_cuda = lib.join("libtorch_cuda.so").exists();
    if torch_cuda {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    let skip_cuda = env::var("STACKHIVE_ACCEL_NO_CUDA").is_ok_and(|v| v == "1");
    let cuda = if torch_cuda && !skip_cuda {
        find_cuda(&lib)
    } else {
        None
    };
    compile_shim(&lib, cuda.as_ref(), skip_cuda);
}

/// The CUDA runtime's include folders and the folder and file name of its shared library.
struct Cuda {
    include: Vec<PathBuf>,
    lib_dir: PathBuf,
    cudart: String,
}

fn compile_shim(lib: &Path, cuda: Option<&Cuda>, skip_cuda: bool) {
    let include = lib.join("../include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi()))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .files(["csrc/accel.cpp", "csrc/accel_cuda.cpp"]);
    if let Some(cuda) = cuda {
        build.includes(&cuda.include).define("SHK_WITH_CUDA", None);
    } else if skip_cuda {
        println!("cargo:warning=accel shim: built without CUDA (STACKHIVE_ACCEL_NO_CUDA=1); CUDA memory queries and graphs will fail at run time");
    } else {
        println!("cargo:warning=accel shim: no CUDA runtime headers or libcudart found; CUDA memory queries and graphs will fail at run time");
    }
    build.compile("stackhive_accel");
    // After the static library, so the linker resolves its references with these.
    if let Some(cuda) = cuda {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-search=native={}", cuda.lib_dir.display());
        println!("cargo:rustc-link-lib=dylib:+verbatim={}", cuda.cudart);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", cuda.lib_dir.display());
    }
}

/// libtorch's `_GLIBCXX_USE_CXX11_ABI`: `LIBTORCH_CXX11_ABI` when set, else what the Python
/// torch says when torch-sys takes libtorch from it (`LIBTORCH_USE_PYTORCH`), else 1 (every
/// PyTorch release since 2.7 is built with the C++11 ABI).
fn cxx11_abi() -> String {
    if let Ok(abi) = env::var("LIBTORCH_CXX11_ABI") {
        return abi;
    }
    if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        // The interpreter torch-sys itself asks.
        let python = if env::var_os("VIRTUAL_ENV").is_some() {
            "python"
        } else {
            "python3"
        };
        let out = Command::new(python)
            .args([
                "-c",
                "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
            ])
            .output();
        match out {
            Ok(out) if out.status.success() => {
                let abi = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if abi == "0" || abi == "1" {
                    return abi;
                }
                panic!("`{python}` printed {abi:?} for torch's C++11 ABI flag, expected 0 or 1");
            }
            Ok(out) => panic!(
                "`{python}` could not report torch's C++11 ABI flag: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("cannot run `{python}` to ask torch's C++11 ABI flag: {e}"),
        }
    }
    "1".to_string()
}

/// Looks next to the wheel's libtorch (`site-packages/nvidia/*/`), then in `CUDA_HOME` and
/// `/usr/local/cuda`, for `cuda_runtime_api.h` with a `libcudart.so*` beside it, and for the
/// `crt/` headers `cuda_runtime.h` includes.
fn find_cuda(torch_lib: &Path) -> Option<Cuda> {
    let site = torch_lib.join("../..");
    let mut nvidia: Vec<PathBuf> = std::fs::read_dir(site.join("nvidia"))
        .map(|dirs| dirs.flatten().map(|d| d.path()).collect())
        .unwrap_or_default();
    nvidia.sort();
    let mut roots = nvidia.clone();
    if let Some(home) = env::var_os("CUDA_HOME") {
        roots.push(PathBuf::from(home));
    }
    roots.push(PathBuf::from("/usr/local/cuda"));
    let (include, lib_dir, cudart) = roots.into_iter().find_map(|root| {
        let include = root.join("include");
        if !include.join("cuda_runtime_api.h").exists() {
            return None;
        }
        ["lib", "lib64"].iter().find_map(|l| {
            let lib_dir = root.join(l);
            let cudart = cudart_name(&lib_dir)?;
            Some((include.clone(), lib_dir, cudart))
        })
    })?;
    let mut includes = vec![include.clone()];
    if !include.join("crt/host_config.h").exists() {
        let mut donors: Vec<PathBuf> = nvidia.iter().map(|r| r.join("include")).collect();
        donors.push(site.join("triton/backends/nvidia/include"));
        let donor = donors.into_iter().find(|d| {
            d.join("crt/host_config.h").exists() && d.join("crt/host_defines.h").exists()
        });
        let Some(donor) = donor else {
            println!("cargo:warning=accel shim: {} has no crt/host_config.h and no other CUDA header set beside torch has one; building without CUDA", include.display());
            return None;
        };
        let out = PathBuf::from(env::var_os("OUT_DIR")?).join("cuda-crt");
        if let Err(e) = copy_dir(&donor.join("crt"), &out.join("crt")) {
            println!(
                "cargo:warning=accel shim: cannot copy {}/crt: {e}; building without CUDA",
                donor.display()
            );
            return None;
        }
        includes.push(out);
    }
    Some(Cuda {
        include: includes,
        lib_dir,
        cudart,
    })
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// `libcudart.so` if present, else the wheel's versioned `libcudart.so.N`.
fn cudart_name(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n == "libcudart.so" || n.starts_with("libcudart.so."))
        .collect();
    names.sort_by_key(|n| n.len());
    names.into_iter().next()
}
