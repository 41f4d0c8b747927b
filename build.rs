//! Build glue for libtorch from the project venv (see scripts/setup.sh and .cargo/config.toml).
//! - an rpath to the venv's torch/lib so `cargo run`/`cargo test` need no LD_LIBRARY_PATH
//!   (an LD_LIBRARY_PATH still wins, which is how the GPU machines run the binary on their own torch);
//! - libtorch_cuda linked with --no-as-needed: nothing references it directly, so the linker would
//!   drop it and `--device cuda` would report no CUDA at run time;
//! - csrc/torch_ext.cpp compiled against the same libtorch's headers (what tch does not expose:
//!   autocast with a dtype, the float32 matmul precision, fused AdamW; see src/torch_ext.rs);
//! - the real CLIP BPE vocabulary embedded, so the binary tokenises without any file beside it.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let vocab = root.join("assets/bpe_simple_vocab_16e6.txt.gz");
    println!("cargo:rerun-if-changed={}", vocab.display());
    if !vocab.exists() {
        panic!(
            "\n\n{} is missing: run `bash scripts/setup.sh` first (it installs torch 2.11.0 into .venv \
             and extracts the CLIP vocabulary from the open-clip-torch wheel).\n\n",
            vocab.display()
        );
    }
    println!("cargo:rustc-env=CLIPDOOR_VOCAB_GZ={}", vocab.display());

    let libtorch = std::env::var("LIBTORCH")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv/libtorch"));
    let lib = std::fs::canonicalize(libtorch.join("lib")).unwrap_or_else(|_| {
        panic!(
            "\n\nlibtorch not found at {}: run `bash scripts/setup.sh` first.\n\n",
            libtorch.display()
        )
    });
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    compile_torch_ext(&libtorch);
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// Compile the C++ shim with the flags torch-sys uses for its own glue (C++17, the wheel's CXX11 ABI).
fn compile_torch_ext(libtorch: &std::path::Path) {
    println!("cargo:rerun-if-changed=csrc/torch_ext.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let include = libtorch.join("include");
    if !include.join("ATen/autocast_mode.h").exists() {
        panic!(
            "\n\nthe libtorch headers are missing from {}: the torch wheel ships them; rerun `bash scripts/setup.sh`.\n\n",
            include.display()
        );
    }
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    cc::Build::new()
        .cpp(true)
        .file("csrc/torch_ext.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("clipdoor_torch_ext");
    // After the static library, so its references to libtorch resolve.
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
