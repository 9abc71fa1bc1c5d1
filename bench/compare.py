"""Runs tfm and PyTorch side by side on the same GPT configurations and prints a markdown table.

Each side runs in its own process (so peak RSS is its own), alternating tfm and PyTorch for each
repetition; the table reports the best (lowest median) of the repetitions of each side.

Modes:
    python3 bench/compare.py train [--configs nanogpt-cpu,medium-cpu] [--reps 2] [--no-build]
    python3 bench/compare.py check [--runs 10]      # times `tfm check` on specs/ and each 7B spec

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

# Steps per configuration: enough for a stable median in a reasonable time on 2 cores.
STEPS = {"nanogpt-cpu": (3, 20), "medium-cpu": (2, 6), "gpt2": (3, 10)}

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


def fmt(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"


def train_mode(args: argparse.Namespace) -> None:
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
    for cfg in args.configs.split(","):
        warmup, steps = STEPS.get(cfg, (3, 10))
        if args.steps:
            steps = args.steps
        common = ["--config", cfg, "--warmup", str(warmup), "--steps", str(steps),
                  "--threads", str(args.threads), "--peak-gflops", f"{peak:.3f}"]
        best: dict[str, dict] = {}
        for rep in range(args.reps):
            pin = pin_prefix(args)
            sides = [("tfm", [*pin, str(tfm_bin), *common]),
                     ("pytorch", [*pin, python, str(TORCH_SCRIPT), *common, "--attn", args.attn])]
            if rep % 2 == 1:
                sides.reverse()
            for side, cmd in sides:
                try:
                    res = run_json(cmd)
                except RuntimeError as e:
                    log(str(e))
                    continue
                if side not in best or res["ms_per_step"] < best[side]["ms_per_step"]:
                    best[side] = res
        results[cfg] = best
        for side, res in best.items():
            log(json.dumps(res))

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
    print("FLOPs per step = (6 * N + 12 * L * T * d) * B * T, N = parameters less the position table.")
    print()
    print("| config | side | ms/step | tokens/s | GFLOP/s | share of peak | peak RSS MiB | tfm/PyTorch throughput |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for cfg, best in results.items():
        t = best.get("tfm")
        p = best.get("pytorch")
        ratio = (t["tokens_per_s"] / p["tokens_per_s"]) if t and p else None
        for side in ("tfm", "pytorch"):
            r = best.get(side)
            if r is None:
                print(f"| {cfg} | {side} | failed | | | | | |")
                continue
            label = side if side == "tfm" else f"PyTorch {r.get('torch', '')} eager ({r.get('attn', '')})"
            share = r["gflops"] / peak
            ratio_cell = f"{ratio:.2f}x" if (ratio is not None and side == "tfm") else ""
            print(f"| {cfg} | {label} | {fmt(r['ms_per_step'])} | {fmt(r['tokens_per_s'], 0)} | "
                  f"{fmt(r['gflops'])} | {share * 100:.0f}% | {fmt(r.get('peak_rss_mib'), 0)} | {ratio_cell} |")


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("train", help="tfm vs PyTorch training steps")
    t.add_argument("--configs", default="nanogpt-cpu,medium-cpu")
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
    args = p.parse_args()
    if args.mode == "train":
        train_mode(args)
    else:
        check_mode(args)


if __name__ == "__main__":
    main()
