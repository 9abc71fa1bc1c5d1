//! Choosing the device (`--device cpu|cuda`) and running a command generically over it: the CPU
//! always, CUDA when built with the `cuda` feature, after checking the driver and catching
//! cudarc's panic when no GPU is present.

#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use clap::ValueEnum;
use dfdx::prelude::Cpu;
use tfm_runtime::AnyPrecision;
use tfm_train::config::DeviceKind;

/// `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

impl From<DeviceArg> for DeviceKind {
    fn from(d: DeviceArg) -> DeviceKind {
        match d {
            DeviceArg::Cpu => DeviceKind::Cpu,
            DeviceArg::Cuda => DeviceKind::Cuda,
        }
    }
}

/// Work that runs on any back end; `run` is instantiated once per device type.
pub trait DeviceJob {
    fn run<D: AnyPrecision>(self, dev: D) -> u8;
}

/// Exit code of a usage problem.
#[cfg_attr(feature = "cuda", allow(dead_code))]
const USAGE: u8 = 2;
/// Exit code of a failed command.
const FAILED: u8 = 1;

/// Runs `job` on the device `kind`, or prints why that device cannot be used and returns the
/// exit code (2 when this build lacks CUDA, 1 when the machine lacks a usable GPU).
pub fn dispatch(kind: DeviceKind, seed: u64, job: impl DeviceJob) -> u8 {
    match kind {
        DeviceKind::Cpu => job.run(Cpu::seed_from_u64(seed)),
        DeviceKind::Cuda => run_cuda(seed, job),
    }
}

#[cfg(not(feature = "cuda"))]
fn run_cuda(_seed: u64, _job: impl DeviceJob) -> u8 {
    eprintln!("error: this tfm was built without CUDA support; rebuild with `cargo build --release --features cuda`");
    eprintln!("  = help: or run on the CPU with `--device cpu`");
    USAGE
}

#[cfg(feature = "cuda")]
fn run_cuda(seed: u64, job: impl DeviceJob) -> u8 {
    match tfm_runtime::device::cuda_device(seed) {
        Ok(dev) => run_guarded(move || job.run(dev)),
        Err(message) => {
            eprintln!("error: {message}");
            eprintln!("  = help: run on the CPU with `--device cpu`");
            FAILED
        }
    }
}

/// Runs a CUDA job, turning a panic inside dfdx or cudarc (some of their allocations and copies
/// unwrap the driver's result) into an error message and exit code 1. Checkpoints already
/// written stay as they are: they are renamed into place only when complete.
#[cfg(feature = "cuda")]
fn run_guarded(f: impl FnOnce() -> u8) -> u8 {
    match tfm_runtime::device::quietly(f) {
        Ok(code) => code,
        Err(what) => {
            eprintln!("error: the CUDA back end failed: {what}");
            if tfm_runtime::device::is_out_of_memory(&what) {
                eprintln!("  = help: the GPU ran out of memory; {}", tfm_runtime::device::OUT_OF_MEMORY_HINT);
            } else {
                eprintln!("  = help: the last checkpoint written is intact; `--resume` continues from it, or run on the CPU with `--device cpu`");
            }
            FAILED
        }
    }
}
