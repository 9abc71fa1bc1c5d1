//! Compiles `kernels.cu` (from tfm-kernels) as host C++ under the emulation header.

fn main() {
    let kernels = "../tfm-kernels/src/kernels.cu";
    for f in [kernels, "src/emu.h", "src/emu.cpp"] {
        println!("cargo:rerun-if-changed={f}");
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("src/emu.cpp")
        .include("../tfm-kernels/src")
        .flag("-pthread")
        // the kernels' arithmetic as written: no fused multiply-adds, no reassociation
        .flag("-ffp-contract=off")
        .warnings(true)
        // swapcontext counts as "returns twice", but each swap returns exactly once (to the
        // state it saved), so no local can be clobbered
        .flag("-Wno-clobbered")
        .opt_level(2)
        .compile("tfm_cuda_emu");
    println!("cargo:rustc-link-lib=pthread");
}
