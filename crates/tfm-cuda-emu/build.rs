//! Compiles `kernels.cu` (from tfm-kernels) as host C++ under the emulation header.

fn main() {
    let kernels = "../tfm-kernels/src/kernels.cu";
    for f in [kernels, "src/emu.h", "src/emu.cpp"] {
        println!("cargo:rerun-if-changed={f}");
    }
    cc::Build::new()
        .cpp(true)
        .std("c++20")
        .file("src/emu.cpp")
        .include("../tfm-kernels/src")
        .flag("-pthread")
        // the kernels' arithmetic as written: no fused multiply-adds, no reassociation
        .flag("-ffp-contract=off")
        .warnings(true)
        .opt_level(2)
        .compile("tfm_cuda_emu");
    println!("cargo:rustc-link-lib=pthread");
}
