//! Choosing the device (`--device cpu|cuda`) and running a command generically over it: the CPU
//! always, CUDA when built with the `cuda` feature, after checking the driver and catching
//! cudarc's panic when no GPU is present.

#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use clap::ValueEnum;
use dfdx::prelude::Cpu;
use tfm_runtime::Backend;
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
    fn run<D: Backend>(self, dev: D) -> u8;
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
    match cuda_device(seed) {
        Ok(dev) => job.run(dev),
        Err(message) => {
            eprintln!("error: {message}");
            eprintln!("  = help: run on the CPU with `--device cpu`");
            FAILED
        }
    }
}

/// The oldest NVIDIA driver the CUDA build supports (CUDA 13).
pub const MIN_DRIVER: u32 = 580;

/// The driver's major version from the text of `/proc/driver/nvidia/version`
/// (`NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  ...`).
pub fn parse_driver_version(text: &str) -> Option<(u32, String)> {
    let line = text.lines().find(|l| l.contains("NVRM version"))?;
    line.split_whitespace().find_map(|w| {
        let (major, rest) = w.split_once('.')?;
        if major.is_empty()
            || !major.bytes().all(|b| b.is_ascii_digit())
            || !rest.starts_with(|c: char| c.is_ascii_digit())
        {
            return None;
        }
        Some((major.parse().ok()?, w.to_string()))
    })
}

/// Checks the driver version before cudarc is touched.
pub fn check_driver() -> Result<(), String> {
    let path = "/proc/driver/nvidia/version";
    let text = std::fs::read_to_string(path).map_err(|_| {
        format!("no CUDA device found: no NVIDIA driver is loaded (`{path}` cannot be read)")
    })?;
    match parse_driver_version(&text) {
        Some((major, _)) if major >= MIN_DRIVER => Ok(()),
        Some((_, full)) => Err(format!(
            "expected NVIDIA driver {MIN_DRIVER} or newer (CUDA 13), found {full}; update the driver"
        )),
        None => Err(format!("cannot read the NVIDIA driver version from `{path}`")),
    }
}

/// Builds the CUDA device. cudarc 0.9 panics (`CUDA_ERROR_NO_DEVICE`) when no GPU is present, so
/// the build runs inside `catch_unwind` with a silent panic hook.
#[cfg(feature = "cuda")]
fn cuda_device(seed: u64) -> Result<dfdx::prelude::Cuda, String> {
    check_driver()?;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let built = std::panic::catch_unwind(|| dfdx::prelude::Cuda::try_build(0, seed));
    std::panic::set_hook(previous);
    match built {
        Ok(Ok(dev)) => Ok(dev),
        Ok(Err(e)) => Err(format!("no CUDA device found: {e:?}")),
        Err(payload) => {
            let what = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA driver could not be initialised".to_string());
            Err(format!("no CUDA device found: {what}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_version_is_read_from_the_nvrm_line() {
        let text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:39 UTC 2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n";
        assert_eq!(
            parse_driver_version(text),
            Some((580, "580.65.06".to_string()))
        );
        let old =
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.104.05  Release Build\n";
        assert_eq!(
            parse_driver_version(old),
            Some((535, "535.104.05".to_string()))
        );
        assert_eq!(parse_driver_version("GCC version: 12.2.0\n"), None);
    }
}
