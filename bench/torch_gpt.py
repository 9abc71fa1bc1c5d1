"""Reference GPT in PyTorch eager: times training steps and prints one JSON line of results.

The model is the one the tfm side builds from `examples/shakespeare_char.tfm`: GPT-2 style,
pre-LayerNorm, learned positions, fused QKV with bias, GELU (tanh form), LM head tied to the token
embedding, no dropout, AdamW. Inputs are uniformly random token ids (speed does not depend on
the data).

FLOPs per training step (the standard estimate of Kaplan et al. / PaLM appendix B, as used by
nanoGPT's `estimate_mfu`):

    flops_per_token = 6 * N + 12 * L * T * d
    flops_per_step  = flops_per_token * B * T

where N is the number of parameters taking part in matrix products (all parameters except the
position table; the token table counts once, as the tied LM head), L layers, T context, d width.
6N is forward (2N) plus backward (4N); 12*L*T*d is the attention scores and weighted sum (QK^T and
AV, forward and backward, full T x T without halving for the causal mask).

Examples:
    python bench/torch_gpt.py --config nanogpt-cpu
    python bench/torch_gpt.py --config medium-cpu --steps 5
    python bench/torch_gpt.py --measure-peak
    python bench/torch_gpt.py --config gpt2 --device cuda --compile --dtype bf16 --peak-tflops 989
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    # nanoGPT's shakespeare_char CPU settings.
    "nanogpt-cpu": dict(vocab=65, layers=4, heads=4, d_model=128, context=64, batch=12),
    # A 6-layer, 384-wide, context-256 character model (nanoGPT shakespeare_char on GPU).
    "medium-cpu": dict(vocab=65, layers=6, heads=6, d_model=384, context=256, batch=8),
    # GPT-2 small (124M with the tied head), for the GPU benchmark.
    "gpt2": dict(vocab=50257, layers=12, heads=12, d_model=768, context=1024, batch=8),
}


class Block(nn.Module):
    def __init__(self, d: int, heads: int, attn: str, bias: bool = True, gelu: str = "tanh"):
        super().__init__()
        self.heads = heads
        self.attn_impl = attn
        self.gelu = gelu
        self.ln1 = nn.LayerNorm(d, bias=bias)
        self.qkv = nn.Linear(d, 3 * d, bias=bias)
        self.proj = nn.Linear(d, d, bias=bias)
        self.ln2 = nn.LayerNorm(d, bias=bias)
        self.fc = nn.Linear(d, 4 * d, bias=bias)
        self.fc_proj = nn.Linear(4 * d, d, bias=bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        h = self.heads
        q, k, v = self.qkv(x).split(c, dim=2)
        q = q.view(b, t, h, c // h).transpose(1, 2)
        k = k.view(b, t, h, c // h).transpose(1, 2)
        v = v.view(b, t, h, c // h).transpose(1, 2)
        if self.attn_impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // h))
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.proj(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        x = x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate=self.gelu))
        return x


class GPT(nn.Module):
    def __init__(
        self, vocab: int, layers: int, heads: int, d_model: int, context: int, attn: str,
        bias: bool = True, gelu: str = "tanh",
    ):
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, attn, bias, gelu) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d_model, bias=bias)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        _, t = idx.shape
        pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied LM head
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


def count_params(cfg: dict) -> dict:
    v, l, d, t = cfg["vocab"], cfg["layers"], cfg["d_model"], cfg["context"]
    per_layer = 2 * (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    total = v * d + t * d + l * per_layer + 2 * d
    return {"total": total, "matmul": total - t * d}


def flops_per_step(cfg: dict) -> float:
    n = count_params(cfg)["matmul"]
    l, t, d, b = cfg["layers"], cfg["context"], cfg["d_model"], cfg["batch"]
    return (6 * n + 12 * l * t * d) * b * t


def peak_rss_mib() -> float:
    """Peak resident set size of this process (VmHWM), MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_peak(args: argparse.Namespace) -> dict:
    """Best fp32 (or --dtype) GFLOP/s of a large square matrix product: the machine's practical peak."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    n = args.peak_size
    a = torch.randn(n, n, device=args.device, dtype=dtype)
    b = torch.randn(n, n, device=args.device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(args.device)
    best = float("inf")
    reps = 5 if args.device == "cpu" else 50
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        sync(args.device)
        best = min(best, time.perf_counter() - t0)
    return {
        "side": "pytorch",
        "kind": "matmul-peak",
        "device": args.device,
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "size": n,
        "gflops": 2 * n**3 / best / 1e9,
    }


def run(args: argparse.Namespace) -> dict:
    cfg = dict(CONFIGS[args.config])
    for key in ("vocab", "layers", "heads", "d_model", "context", "batch"):
        val = getattr(args, key)
        if val is not None:
            cfg[key] = val
    torch.manual_seed(args.seed)
    device = args.device
    model = GPT(cfg["vocab"], cfg["layers"], cfg["heads"], cfg["d_model"], cfg["context"], args.attn).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    expected = count_params(cfg)["total"]
    if n_params != expected:
        raise SystemExit(f"parameter count {n_params} differs from the formula {expected}")

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt_kwargs = {}
    if device.startswith("cuda"):
        opt_kwargs["fused"] = True
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.99),  # as the tfm side
        **opt_kwargs,
    )
    step_model = torch.compile(model) if args.compile else model
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]

    g = torch.Generator().manual_seed(args.seed)
    b, t = cfg["batch"], cfg["context"]
    batches = [
        torch.randint(0, cfg["vocab"], (b, t + 1), generator=g).to(device) for _ in range(4)
    ]

    def step(i: int) -> float:
        data = batches[i % len(batches)]
        x, y = data[:, :-1], data[:, 1:]
        if amp_dtype is not None:
            with torch.autocast(device_type=device.split(":")[0], dtype=amp_dtype):
                loss = step_model(x, y)
        else:
            loss = step_model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    first_loss = None
    t_warm = time.perf_counter()
    for i in range(args.warmup):
        loss = step(i)
        if first_loss is None:
            first_loss = float(loss)
    sync(device)
    warmup_s = time.perf_counter() - t_warm

    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        loss = step(args.warmup + i)
        sync(device)
        times.append(time.perf_counter() - t0)
    last_loss = float(loss)

    med = statistics.median(times)
    flops = flops_per_step(cfg)
    tokens = b * t
    out = {
        "side": "pytorch",
        "torch": torch.__version__,
        "config": args.config,
        "device": device,
        "dtype": args.dtype,
        "compile": args.compile,
        "attn": args.attn,
        "threads": torch.get_num_threads(),
        **cfg,
        "params": n_params,
        "warmup": args.warmup,
        "steps": args.steps,
        "warmup_s": warmup_s,
        "ms_per_step": med * 1e3,
        "ms_per_step_mean": statistics.mean(times) * 1e3,
        "ms_per_step_min": min(times) * 1e3,
        "tokens_per_s": tokens / med,
        "flops_per_step": flops,
        "gflops": flops / med / 1e9,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "peak_rss_mib": peak_rss_mib(),
    }
    if args.peak_gflops:
        out["peak_gflops"] = args.peak_gflops
        out["share_of_peak"] = out["gflops"] / args.peak_gflops
    if args.peak_tflops:
        out["mfu"] = flops / med / (args.peak_tflops * 1e12)
    if device.startswith("cuda"):
        out["peak_gpu_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
        free, total = torch.cuda.mem_get_info()
        out["gpu_mem_used_mib"] = (total - free) / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="nanogpt-cpu")
    for key in ("vocab", "layers", "heads", "d_model", "context", "batch"):
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=None, help=f"override {key}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype")
    p.add_argument("--attn", choices=["manual", "sdpa"], default="manual",
                   help="manual: explicit masked softmax (what tfm computes); sdpa: F.scaled_dot_product_attention")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--peak-gflops", type=float, default=None, help="machine peak for the share-of-peak column")
    p.add_argument("--peak-tflops", type=float, default=None, help="accelerator peak for MFU (e.g. 989 for H100 bf16 dense)")
    p.add_argument("--measure-peak", action="store_true", help="time a large matrix product instead of training")
    p.add_argument("--peak-size", type=int, default=2048)
    args = p.parse_args()

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    res = measure_peak(args) if args.measure_peak else run(args)
    res["machine"] = platform.machine()
    res["loadavg_1m"] = os.getloadavg()[0]
    res["cpu_count"] = os.cpu_count()
    print(json.dumps(res))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
