//! Opt-in timing of a pass, op by op (`TFM_PROFILE=1`): each primitive, the backward pass and
//! the optimizer step are timed with the device synchronised before and after, so the totals
//! say where a step's time goes on a GPU, where work is otherwise queued and overlaps.
//! Synchronising after every op slows the run; the figures are for comparing ops, not for
//! throughput.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

fn table() -> &'static Mutex<BTreeMap<String, (f64, u64)>> {
    static T: OnceLock<Mutex<BTreeMap<String, (f64, u64)>>> = OnceLock::new();
    T.get_or_init(Default::default)
}

/// Whether `TFM_PROFILE` is set to something other than `0` or empty.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("TFM_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// Adds `secs` to the total of `what`.
pub fn record(what: &str, secs: f64) {
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    let e = t.entry(what.to_string()).or_insert((0.0, 0));
    e.0 += secs;
    e.1 += 1;
}

/// Runs `f`, timing it under `what` when profiling is on; `sync` waits for the device.
pub fn timed<X, Er>(what: &str, sync: impl Fn() -> Result<(), Er>, f: impl FnOnce() -> Result<X, Er>) -> Result<X, Er> {
    if !enabled() {
        return f();
    }
    sync()?;
    let t0 = Instant::now();
    let out = f()?;
    sync()?;
    record(what, t0.elapsed().as_secs_f64());
    Ok(out)
}

/// The totals so far, largest first: (what, seconds, calls); then clears them.
pub fn take() -> Vec<(String, f64, u64)> {
    let mut t = table().lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<_> = std::mem::take(&mut *t).into_iter().map(|(k, (s, n))| (k, s, n)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn timed_passes_results_and_errors_through() {
        let ok: Result<u32, String> = super::timed("x", || Ok(()), || Ok(3));
        assert_eq!(ok, Ok(3));
        let err: Result<u32, String> = super::timed("x", || Ok(()), || Err("bad".to_string()));
        assert_eq!(err, Err("bad".to_string()));
    }
}
