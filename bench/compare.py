"""Runs tfm and PyTorch side by side on the same models and prints a markdown table.

Each side runs in its own process (so peak RSS is its own), alternating tfm and PyTorch for each
repetition; the table reports the best (lowest median) of the repetitions of each side. The two
sides must report the same parameter count, or the run fails.

Models (`--models`, comma-separated; a configuration name works too):
    gpt-a    nanogpt-cpu     GPT, 4 layers, 128 wide, context 64, batch 12      (tokens/s)
    gpt-b    medium-cpu      GPT, 6 layers, 384 wide, context 256, batch 8      (tokens/s)
    vit      vit-mnist       ViT, 1 x 28 x 28, patch 4, 6 layers, 128 wide, batch 128 (images/s)
    seq2seq  seq2seq-small   post-LN encoder-decoder, 3 + 3 layers, 256 wide, 16 + 16 tokens,
                             batch 64 (target tokens/s)
    all      every one of the above

Modes:
    python3 bench/compare.py train [--models gpt-a,gpt-b,vit,seq2seq] [--reps 2] [--no-build]
    python3 bench/compare.py check [--runs 10]      # times `tfm check` on specs/ and each 7B spec
    python3 bench/compare.py gpu [--config gpt2] [--reps 2] [--tfm-cmd ".stage/cuda/run.sh tfm-bench"]
                                  [--python python3] [--peak-tflops N]
        # on a GPU machine: GPT-2 small (124M, context 1024) training steps, tfm (CUDA, fp32)
        # against PyTorch eager and torch.compile (fp32, and bf16 autocast for reference):
        # tokens/s, MFU, peak GPU memory. tfm-bench comes staged by scripts/stage-cuda.sh.

Run from anywhere; paths are relative to the repository root. PyTorch comes from .venv-bench
(made by bench/setup.sh). Prints results only; nothing is written to the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ROOT / ".venv-bench" / "bin" / "python"
TORCH_SCRIPT = ROOT / "bench" / "torch_gpt.py"
TORCH_MODELS_SCRIPT = ROOT / "bench" / "torch_models.py"

# Short names for --models.
ALIASES = {"gpt-a": "nanogpt-cpu", "gpt-b": "medium-cpu", "vit": "vit-mnist", "seq2seq": "seq2seq-small"}
# Configurations timed by bench/torch_models.py (the rest by bench/torch_gpt.py).
NON_GPT = {"vit-mnist", "seq2seq-small"}

# Steps per configuration: enough for a stable median in a reasonable time on 2 cores.
STEPS = {"nanogpt-cpu": (3, 20), "medium-cpu": (2, 6), "gpt2": (3, 10),
         "vit-mnist": (2, 8), "seq2seq-small": (2, 10)}

# FLOPs per step, per model family (see crates/tfm-bench/src/lib.rs).
FLOPS_NOTES = {
    "gpt": "GPT: (6 * N + 12 * L * T * d) * B * T, N = parameters less the position table.",
    "vit": "ViT: B * (6 * (N_patch * P + (N_layers + N_norm) * T + N_head) + 12 * L * T^2 * d), "
           "P patches, T = P + 1 positions.",
    "seq2seq": "encoder-decoder: B * (6 * (N_enc * S + (N_dec - N_cross_kv) * T + N_cross_kv * S + V * d * T) "
               "+ 12 * L * (S^2 + T^2 + T * S) * d).",
}

# The 7B specs timed by `check` mode, where they exist.
SEVEN_B = ["llama2_7b.tfm", "mistral_7b.tfm"]


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    log("$ " + " ".join(str(c) for c in cmd))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stderr}")
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise RuntimeError(f"no JSON line from {' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1])


def build(bin_name: str, package: str) -> Path:
    cmd = ["cargo", "build", "--release", "-p", package, "--bin", bin_name]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True)
    return target_dir() / "release" / bin_name


def pin_prefix(args: argparse.Namespace) -> list[str]:
    """`taskset -c CPUS` when --pin is given: emulates a small machine on a larger one."""
    return ["taskset", "-c", args.pin] if args.pin else []


def measure_peak(args: argparse.Namespace, python: str) -> float:
    res = run_json([*pin_prefix(args), python, str(TORCH_SCRIPT), "--measure-peak", "--threads", str(args.threads)])
    return float(res["gflops"])


def best_of(sides: list[tuple[str, list[str]]], reps: int) -> dict[str, dict]:
    """Runs every side once per repetition, in reverse order on odd ones (so neither side always
    runs on a warmer or cooler machine), and keeps each side's fastest result (lowest median)."""
    best: dict[str, dict] = {}
    for rep in range(reps):
        for label, cmd in (sides if rep % 2 == 0 else list(reversed(sides))):
            try:
                res = run_json(cmd)
            except RuntimeError as e:
                log(str(e))
                continue
            if label not in best or res["ms_per_step"] < best[label]["ms_per_step"]:
                best[label] = res
    return best


def fmt(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"


def train_mode(args: argparse.Namespace) -> None:
    models = resolve_models(args.models)
    python = args.python or str(VENV_PY)
    if not args.python and not VENV_PY.exists():
        sys.exit("error: .venv-bench is missing; hint: run `bash bench/setup.sh` first, or pass --python")
    tfm_bin = Path(args.tfm_bin) if args.tfm_bin else target_dir() / "release" / "tfm-bench"
    if not args.no_build and not args.tfm_bin:
        tfm_bin = build("tfm-bench", "tfm-bench")
    peak_measured = measure_peak(args, python)
    peak = args.peak_gflops or peak_measured
    log(f"matmul peak (PyTorch, {args.threads} threads, 2048^2 fp32): {peak_measured:.1f} GFLOP/s")

    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, dict]] = {}
    mismatches: list[str] = []
    for cfg in models:
        warmup, steps = STEPS.get(cfg, (3, 10))
        if args.steps:
            steps = args.steps
        common = ["--config", cfg, "--warmup", str(warmup), "--steps", str(steps),
                  "--threads", str(args.threads), "--peak-gflops", f"{peak:.3f}"]
        pin = pin_prefix(args)
        script = TORCH_MODELS_SCRIPT if cfg in NON_GPT else TORCH_SCRIPT
        best = best_of([("tfm", [*pin, str(tfm_bin), *common]),
                        ("pytorch", [*pin, python, str(script), *common, "--attn", args.attn])], args.reps)
        results[cfg] = best
        for side, res in best.items():
            log(json.dumps(res))
        if "tfm" in best and "pytorch" in best and best["tfm"]["params"] != best["pytorch"]["params"]:
            mismatches.append(f"{cfg}: tfm has {best['tfm']['params']:,} parameters, "
                              f"PyTorch {best['pytorch']['params']:,}")

    cpu = cpu_name()
    print()
    pinned = f", each side pinned to CPUs {args.pin}" if args.pin else ""
    print(f"Machine: {cpu}, {os.cpu_count()} cores, {args.threads} threads per side{pinned}; "
          f"load average before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}.")
    busy = max(load_before, os.getloadavg()[0])
    if busy > 0.5 * (os.cpu_count() or 1):
        print(f"WARNING: the machine was busy (load average {busy:.1f} on {os.cpu_count()} cores); "
              "these timings are not representative.")
    print(f"Peak: {peak_measured:.1f} GFLOP/s measured (PyTorch fp32 2048x2048 matmul); "
          f"share of peak below uses {peak:.1f}.")
    families = []
    for best in results.values():
        for r in best.values():
            fam = r.get("family", "gpt")
            if fam not in families:
                families.append(fam)
    print("FLOPs per step: " + " ".join(FLOPS_NOTES.get(f, "") for f in families))
    print()
    print("| config | side | params | ms/step | throughput | GFLOP/s | share of peak | peak RSS MiB | tfm/PyTorch throughput |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for cfg, best in results.items():
        t = best.get("tfm")
        p = best.get("pytorch")
        ratio = (throughput(t) / throughput(p)) if t and p else None
        for side in ("tfm", "pytorch"):
            r = best.get(side)
            if r is None:
                print(f"| {cfg} | {side} | | failed | | | | | |")
                continue
            label = side if side == "tfm" else f"PyTorch {r.get('torch', '')} eager ({r.get('attn', '')})"
            share = r["gflops"] / peak
            ratio_cell = f"{ratio:.2f}x" if (ratio is not None and side == "tfm") else ""
            unit = r.get("unit", "tokens")
            print(f"| {cfg} | {label} | {r['params']:,} | {fmt(r['ms_per_step'])} | "
                  f"{fmt(throughput(r), 0)} {unit}/s | "
                  f"{fmt(r['gflops'])} | {share * 100:.0f}% | {fmt(r.get('peak_rss_mib'), 0)} | {ratio_cell} |")
    if mismatches:
        print()
        for m in mismatches:
            print(f"ERROR: the models differ: {m}")
        sys.exit(1)


def resolve_models(spec: str) -> list[str]:
    """`gpt-a,vit` or configuration names (or `all`) to configuration names, in order."""
    out: list[str] = []
    for name in (n.strip() for n in spec.split(",")):
        if not name:
            continue
        names = list(ALIASES.values()) if name == "all" else [ALIASES.get(name, name)]
        for n in names:
            if n not in STEPS:
                sys.exit(f"error: expected a model, found `{name}`; hint: use one of "
                         f"{', '.join([*ALIASES, 'all', *STEPS])}")
            if n not in out:
                out.append(n)
    return out


def throughput(r: dict) -> float:
    """Items per second: tokens (GPT), images (ViT) or target tokens (encoder-decoder)."""
    return float(r.get("items_per_s", r.get("tokens_per_s")))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def time_cmd(cmd: list[str], runs: int) -> dict:
    """Wall time of a command: hyperfine where installed, else a timing loop here."""
    if shutil.which("hyperfine"):
        out = ROOT / ".stage" / "hyperfine.json"
        out.parent.mkdir(exist_ok=True)
        subprocess.run(["hyperfine", "--warmup", "2", "--runs", str(runs), "-N", "-i",
                        "--export-json", str(out), " ".join(cmd)],
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        r = json.loads(out.read_text())["results"][0]
        return {"mean_ms": r["mean"] * 1e3, "min_ms": r["min"] * 1e3, "runs": runs, "via": "hyperfine"}
    times = []
    for _ in range(2):
        subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return {"mean_ms": sum(times) / len(times) * 1e3, "min_ms": min(times) * 1e3, "runs": runs, "via": "loop"}


def check_mode(args: argparse.Namespace) -> None:
    tfm = Path(args.tfm_bin) if args.tfm_bin else target_dir() / "release" / "tfm"
    if not args.no_build and not args.tfm_bin:
        tfm = build("tfm", "tfm-cli")
    specs = ROOT / "specs"
    targets = [("specs/ (all)", [str(tfm), "check", "specs"])]
    for name in SEVEN_B:
        found = sorted(specs.rglob(name))
        for f in found:
            targets.append((str(f.relative_to(ROOT)), [str(tfm), "check", str(f.relative_to(ROOT))]))
    print("| target | mean ms | min ms | runs |")
    print("|---|---:|---:|---:|")
    for label, cmd in targets:
        probe = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        r = time_cmd(cmd, args.runs)
        note = "" if probe.returncode == 0 else f" (exit {probe.returncode})"
        print(f"| `{label}`{note} | {r['mean_ms']:.1f} | {r['min_ms']:.1f} | {r['runs']} ({r['via']}) |")


# Dense peak TFLOP/s by GPU name (fp32 without tensor cores; bf16 tensor cores), for MFU.
GPU_PEAKS = {"H100": {"fp32": 67.0, "bf16": 989.0}, "H200": {"fp32": 67.0, "bf16": 989.0},
             "A100": {"fp32": 19.5, "bf16": 312.0}}


def gpu_peak(name: str, dtype: str) -> float | None:
    for key, peaks in GPU_PEAKS.items():
        if key in name:
            return peaks.get(dtype)
    return None


def gpu_mode(args: argparse.Namespace) -> None:
    """tfm on CUDA against PyTorch eager and torch.compile on the same GPU, alternating per rep."""
    python = args.python or (str(VENV_PY) if VENV_PY.exists() else sys.executable)
    tfm_cmd = args.tfm_cmd.split()
    warmup, steps = 3, args.steps
    common = ["--config", args.config, "--warmup", str(warmup), "--steps", str(steps)]
    sides = [("tfm (CUDA, fp32)", [*tfm_cmd, *common, "--device", "cuda"]),
             ("PyTorch eager (fp32)", [python, str(TORCH_SCRIPT), *common, "--device", "cuda", "--attn", "manual"]),
             ("PyTorch eager (fp32, sdpa)", [python, str(TORCH_SCRIPT), *common, "--device", "cuda", "--attn", "sdpa"]),
             ("torch.compile (fp32)", [python, str(TORCH_SCRIPT), *common, "--device", "cuda", "--attn", "sdpa",
                                       "--compile"]),
             ("torch.compile (bf16 autocast)", [python, str(TORCH_SCRIPT), *common, "--device", "cuda",
                                                "--attn", "sdpa", "--compile", "--dtype", "bf16"])]
    best = best_of(sides, args.reps)
    for res in best.values():
        log(json.dumps(res))
    gpu = next((r["gpu"] for r in best.values() if r.get("gpu")), "unknown GPU")
    print(f"GPU: {gpu}; configuration {args.config}; best of {args.reps} alternating repetitions, "
          f"{steps} timed steps each.")
    print("FLOPs per step: " + FLOPS_NOTES["gpt"] + " MFU = achieved FLOP/s over the dense peak of the "
          "dtype (fp32 without tensor cores, bf16 with them).")
    print()
    print("| side | params | ms/step | tokens/s | TFLOP/s | MFU | peak GPU MiB (allocator) | GPU MiB in use (driver) | tfm / side |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    tfm = best.get(sides[0][0])
    for label, _ in sides:
        r = best.get(label)
        if r is None:
            print(f"| {label} | | failed | | | | | | |")
            continue
        dtype = "bf16" if r.get("dtype") == "bf16" else "fp32"
        peak = args.peak_tflops or gpu_peak(gpu, dtype)
        tflops = r["flops_per_step"] / (r["ms_per_step"] / 1e3) / 1e12
        mfu = f"{tflops / peak * 100:.1f}%" if peak else "-"
        ratio = f"{throughput(tfm) / throughput(r):.3f}x" if tfm and r is not tfm else ""
        print(f"| {label} | {r['params']:,} | {fmt(r['ms_per_step'])} | {fmt(throughput(r), 0)} | "
              f"{tflops:.1f} | {mfu} | {fmt(r.get('peak_gpu_mem_mib'), 0)} | "
              f"{fmt(r.get('gpu_mem_used_mib'), 0)} | {ratio} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train", help="tfm vs PyTorch training steps")
    t.add_argument("--models", "--configs", dest="models", default="gpt-a,gpt-b",
                   help="comma-separated: gpt-a, gpt-b, vit, seq2seq, all, or configuration names")
    t.add_argument("--reps", type=int, default=2, help="alternating repetitions per side")
    t.add_argument("--steps", type=int, default=None, help="timed steps (default per config)")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--attn", choices=["manual", "sdpa"], default="manual")
    t.add_argument("--peak-gflops", type=float, default=None, help="use this peak instead of the measured one")
    t.add_argument("--no-build", action="store_true")
    t.add_argument("--tfm-bin", default=None, help="a prebuilt tfm-bench binary (skips the build)")
    t.add_argument("--python", default=None, help="a python with torch (default .venv-bench)")
    t.add_argument("--pin", default=None, help="run each side under `taskset -c PIN`, e.g. 0,1")
    c = sub.add_parser("check", help="time `tfm check` on specs/")
    c.add_argument("--runs", type=int, default=10)
    c.add_argument("--no-build", action="store_true")
    c.add_argument("--tfm-bin", default=None, help="a prebuilt tfm binary (skips the build)")
    g = sub.add_parser("gpu", help="tfm on CUDA vs PyTorch eager and torch.compile (GPU machine)")
    g.add_argument("--config", default="gpt2", help="a GPT configuration (default gpt2: GPT-2 small)")
    g.add_argument("--reps", type=int, default=2)
    g.add_argument("--steps", type=int, default=10)
    g.add_argument("--tfm-cmd", default=".stage/cuda/run.sh tfm-bench",
                   help="how to run a CUDA build of tfm-bench (default: the staged one)")
    g.add_argument("--python", default=None, help="a python with a CUDA torch (default .venv-bench, else this one)")
    g.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak for MFU (default by GPU name)")
    args = p.parse_args()
    if args.mode == "train":
        train_mode(args)
    elif args.mode == "gpu":
        gpu_mode(args)
    else:
        check_mode(args)


if __name__ == "__main__":
    main()
