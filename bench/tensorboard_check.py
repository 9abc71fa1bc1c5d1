"""Reads a tfm run's TensorBoard event files with TensorBoard's own loader and checks them
against the run's `metrics.jsonl`, scalar by scalar.

    python bench/tensorboard_check.py RUN_LOG_DIR
    python bench/tensorboard_check.py --same-losses RUN_A RUN_B

Every (tag, step) that `metrics.jsonl` records must be in the event files with the same value
(to f32 precision), and the event files must hold nothing that `metrics.jsonl` lacks. Exits 1 on
the first disagreement. With `--same-losses`, checks instead that two runs logged the same
losses bit for bit (a resumed run against an uninterrupted one). `scripts/check-tensorboard.sh`
installs TensorBoard and runs both on fresh training runs.
"""

import json
import math
import pathlib
import sys

from tensorboard.backend.event_processing import event_accumulator

# metrics.jsonl key -> TensorBoard tag
STEP_TAGS = {
    "loss": "train/loss",
    "lr": "lr",
    "grad_norm": "grad_norm",
    "tokens_per_sec": "tokens_per_sec",
}
EVAL_TAGS = {"val_loss": "val/loss"}


def expected(metrics_path):
    """(tag, step) -> value from metrics.jsonl; a later line for the same step wins, as a
    resumed run logs again the steps after its last checkpoint."""
    want = {}
    for line in metrics_path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        keys = EVAL_TAGS if "val_loss" in rec else STEP_TAGS
        for key, tag in keys.items():
            if key in rec:
                want[(tag, rec["step"])] = float(rec[key])
    return want


def found(log_dir):
    """(tag, step) -> value as TensorBoard reads the folder (all event files, newest last)."""
    acc = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    got = {}
    for tag in acc.Tags()["scalars"]:
        for ev in acc.Scalars(tag):
            got[(tag, ev.step)] = ev.value
    return got, acc.Tags()["scalars"]


def close(a, b):
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def losses(metrics_path):
    """(step, is_validation) -> the loss exactly as metrics.jsonl writes it."""
    out = {}
    for line in metrics_path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[(rec["step"], "val_loss" in rec)] = rec.get("loss", rec.get("val_loss"))
    return out


def same_losses(a_dir, b_dir):
    a = losses(pathlib.Path(a_dir) / "metrics.jsonl")
    b = losses(pathlib.Path(b_dir) / "metrics.jsonl")
    differ = sorted(k for k in a if b.get(k) != a[k])
    if differ or a.keys() != b.keys():
        first = f", first at step {differ[0][0]}" if differ else ""
        sys.exit(f"FAIL: {len(differ)} of {len(a)} losses differ{first} ({len(b)} logged in {b_dir})")
    print(f"OK: all {len(a)} training and validation losses are equal, bit for bit")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--same-losses":
        return same_losses(sys.argv[2], sys.argv[3])
    if len(sys.argv) != 2:
        sys.exit("usage: tensorboard_check.py RUN_LOG_DIR | --same-losses RUN_A RUN_B")
    log_dir = pathlib.Path(sys.argv[1])
    metrics = log_dir / "metrics.jsonl"
    if not metrics.is_file():
        sys.exit(f"{metrics}: not found; pass the run's log folder (`logging.dir`)")
    want = expected(metrics)
    got, tags = found(log_dir)
    print(f"TensorBoard read {len(got)} scalars under tags {sorted(tags)}")
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [(k, want[k], got[k]) for k in want if k in got and not close(want[k], got[k])]
    for k in missing[:5]:
        print(f"missing from the event files: {k[0]} at step {k[1]}")
    for k in extra[:5]:
        print(f"in the event files but not in metrics.jsonl: {k[0]} at step {k[1]}")
    for k, w, g in wrong[:5]:
        print(f"{k[0]} at step {k[1]}: metrics.jsonl {w}, TensorBoard {g}")
    if missing or extra or wrong:
        print(f"FAIL: {len(missing)} missing, {len(extra)} extra, {len(wrong)} different")
        sys.exit(1)
    per_tag = {}
    for tag, _ in want:
        per_tag[tag] = per_tag.get(tag, 0) + 1
    summary = ", ".join(f"{t} {n}" for t, n in sorted(per_tag.items()))
    print(f"OK: every scalar in metrics.jsonl is in the event files with the same value ({summary})")
    for tag in ("train/loss", "val/loss"):
        pts = sorted((s, v) for (t, s), v in got.items() if t == tag)
        if pts:
            print(f"{tag}: step {pts[0][0]} {pts[0][1]:.4f} -> step {pts[-1][0]} {pts[-1][1]:.4f}")


if __name__ == "__main__":
    main()
