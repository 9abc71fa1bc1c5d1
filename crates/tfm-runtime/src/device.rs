//! Setting up a device: the NVIDIA driver check and building dfdx's `Cuda` without its panic when
//! no GPU is present, and the GPU memory in use (what the command line and the benchmark report).

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
pub fn cuda_device(seed: u64) -> Result<dfdx::prelude::Cuda, String> {
    check_driver()?;
    match quietly(|| dfdx::prelude::Cuda::try_build(0, seed)) {
        Ok(Ok(dev)) => Ok(dev),
        Ok(Err(e)) => Err(no_device(&format!("{e:?}"))),
        Err(what) => Err(no_device(&what)),
    }
}

/// The message for a failed device start, from cudarc's error (or its panic's text).
#[cfg(feature = "cuda")]
fn no_device(what: &str) -> String {
    let what = what.trim_start_matches("called `Result::unwrap()` on an `Err` value: ");
    if what.contains("CUDA_ERROR_NO_DEVICE") {
        let visible = match std::env::var("CUDA_VISIBLE_DEVICES") {
            Ok(v) => format!(" (CUDA_VISIBLE_DEVICES is `{v}`: it hides every GPU it does not list)"),
            Err(_) => String::new(),
        };
        return format!("no CUDA device found: the NVIDIA driver reports no GPU{visible}");
    }
    format!("no CUDA device found: {what}")
}

/// Runs `f`, turning a panic into its message (nothing printed): for calls into dfdx and cudarc,
/// which unwrap some driver results instead of returning them.
pub fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    out.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string())
    })
}

/// `(free, total)` bytes of the current GPU, as the driver counts them.
#[cfg(feature = "cuda")]
pub fn gpu_memory_info() -> Option<(u64, u64)> {
    let (free, total) = cudarc::driver::result::mem_get_info().ok()?;
    Some((free as u64, total as u64))
}

/// What to change when a run does not fit in GPU memory.
pub const OUT_OF_MEMORY_HINT: &str = "lower the batch (`--batch`) or the context, or train a smaller model";

/// Whether a driver or dfdx error message reports the GPU out of memory.
pub fn is_out_of_memory(message: &str) -> bool {
    message.contains("OUT_OF_MEMORY")
}

/// The device memory a training step holds, from `tfm summary`'s f32 accounting (weights,
/// gradients, AdamW moments, activations): `(fixed, activations)`, the part that does not grow
/// with the batch and the part that does. In mixed precision (`half`) the step also holds a
/// half-precision copy of the weights and half-precision gradients beside the f32 master
/// weights, f32 gradients and moments, and its activations take half the bytes.
pub fn training_memory(weights: u128, gradients: u128, optimizer: u128, activations: u128, half: bool) -> (u128, u128) {
    let fixed = weights + gradients + optimizer;
    if half {
        (fixed + weights / 2 + gradients / 2, activations / 2)
    } else {
        (fixed, activations)
    }
}

/// Whether a training run can start with `free` of `total` bytes of device memory, from
/// `tfm summary`'s estimate: `fixed` bytes of weights, gradients and AdamW moments, and
/// `activations` bytes kept for the backward pass at `batch` sequences of `context`. The error
/// says what to change. The estimate is a floor (the run also keeps temporaries), so only a run
/// certain not to fit is refused.
pub fn check_fits(
    fixed: u128,
    activations: u128,
    free: u64,
    total: u64,
    batch: usize,
    context: usize,
) -> Result<(), String> {
    let need = fixed.saturating_add(activations);
    let free_b = u128::from(free);
    if need <= free_b {
        return Ok(());
    }
    let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
    let hint = if fixed >= free_b {
        "the weights, gradients and optimizer state alone do not fit: train a smaller model (`--set d_model=...`, `--set layers=...`) or on a larger GPU".to_string()
    } else {
        // activations grow with the batch; the rest does not
        let per_row = (activations / batch.max(1) as u128).max(1);
        match (free_b - fixed) / per_row {
            0 => format!("not even one sequence of {context} fits beside the weights: lower the context, or train a smaller model"),
            rows => format!("lower the batch (`--batch {rows}` or less) or the context ({context} now)"),
        }
    };
    Err(format!(
        "the model does not fit in GPU memory: training at batch {batch}, context {context} needs about {:.2} GiB (weights, gradients, AdamW moments and activations), and the GPU has {:.2} GiB free of {:.2} GiB; hint: {hint}",
        gib(need),
        gib(free_b),
        gib(u128::from(total)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(quietly(|| 7), Ok(7));
        assert_eq!(quietly(|| -> u8 { panic!("driver said {}", "no") }), Err("driver said no".to_string()));
        assert_eq!(quietly(|| -> u8 { panic!("static") }), Err("static".to_string()));
    }

    #[test]
    fn a_run_that_cannot_fit_is_refused_with_what_to_change() {
        let gib = 1u128 << 30;
        let g = 1u64 << 30;
        assert!(check_fits(gib, 2 * gib, 4 * g, 80 * g, 8, 1024).is_ok());
        let e = check_fits(0, 40 * gib, 10 * g, 80 * g, 8, 1024).unwrap_err();
        assert!(e.contains("needs about 40.00 GiB"), "{e}");
        assert!(e.contains("10.00 GiB free of 80.00 GiB"), "{e}");
        // 5 GiB per row, 10 GiB free: two rows fit
        assert!(e.contains("`--batch 2` or less"), "{e}");
        // the weights' share does not shrink with the batch: 1 GiB per row in the 2 GiB left
        let e = check_fits(4 * gib, 8 * gib, 6 * g, 80 * g, 8, 1024).unwrap_err();
        assert!(e.contains("`--batch 2` or less"), "{e}");
        let e = check_fits(3 * gib, 37 * gib, 2 * g, 80 * g, 1, 1024).unwrap_err();
        assert!(e.contains("train a smaller model"), "{e}");
        assert!(e.contains("alone do not fit"), "{e}");
        // the weights fit, one sequence's activations do not
        let e = check_fits(gib, 39 * gib, 2 * g, 80 * g, 1, 1024).unwrap_err();
        assert!(e.contains("lower the context"), "{e}");
    }

    #[test]
    fn mixed_precision_memory_adds_half_copies_and_halves_activations() {
        // GPT-2 small's 124M weights: 496 MB each of weights and gradients, 992 MB of moments
        let (w, g, o, a) = (496u128, 496u128, 992u128, 8000u128);
        assert_eq!(training_memory(w, g, o, a, false), (1984, 8000));
        assert_eq!(training_memory(w, g, o, a, true), (1984 + 248 + 248, 4000));
    }

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
