//! With the `cuda` feature: compiles `cuda/ops.cu` to PTX for `ops::cuda`
//! (the driver compiles PTX for the GPU it finds when the module loads).
//! With `cuda-emulation`: compiles the same source as C++ for the host, so
//! that the tests run the kernels without a GPU (`cuda/host`).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=cuda");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo::rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        compile_ptx();
    }
    #[cfg(feature = "cuda-emulation")]
    compile_for_host();
}

/// The kernels as a static library of host functions with the same names.
#[cfg(feature = "cuda-emulation")]
fn compile_for_host() {
    cc::Build::new()
        .cpp(true)
        // g++ for its _Float16 (Debian 12's clang has none on x86-64).
        .compiler(std::env::var("CXX").unwrap_or_else(|_| "g++".into()))
        .include("cuda/host")
        .flag("-std=c++17")
        // No fused multiply-adds the GPU code does not ask for.
        .flag("-ffp-contract=off")
        // A .cu file is C++ here.
        .flag("-xc++")
        .file("cuda/ops.cu")
        .file("cuda/host/emulation.cpp")
        .compile("vigil_ops_emulated");
}

fn compile_ptx() {
    // The oldest GPUs CUDA 13 supports (Turing), unless the build names one,
    // as candle's own kernels are built for.
    let arch = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "75".into());
    // The oldest GPU this build runs on, for `device::cuda_built_for`.
    println!("cargo::rustc-env=VIGIL_CUDA_COMPUTE_CAP={arch}");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("ops.ptx");
    let status = std::process::Command::new(&nvcc)
        .args(["--ptx", "-O3", "-std=c++17"])
        .arg(format!("-arch=compute_{arch}"))
        .arg("-o")
        .arg(&out)
        .arg("cuda/ops.cu")
        .status()
        .unwrap_or_else(|e| panic!("running {nvcc} (the CUDA compiler, for --features cuda): {e}"));
    assert!(status.success(), "{nvcc} failed on cuda/ops.cu");
}
