"""Reference ViT and encoder-decoder in PyTorch eager: times training steps, prints one JSON line.

The models are the ones the tfm side builds from `bench/specs/vit_mnist.tfm` and
`bench/specs/seq2seq_small.tfm` (the GPT lives in `bench/torch_gpt.py`):

- `vit-mnist`: a ViT classifier on 1 x 28 x 28 images: a 4 x 4 patch embedding (a strided
  convolution), a class token, learned positions, 6 pre-LayerNorm encoder layers (separate q, k,
  v, o projections with biases, exact GELU, LayerNorm eps 1e-6), a final LayerNorm and a linear
  head on the class token; cross-entropy over 10 classes. Inputs: random f32 images and labels.
- `seq2seq-small`: the original Transformer's structure at translation-example scale: 3 + 3
  post-LayerNorm layers, 256 wide, 4 heads, ReLU feed-forward 1,024, fixed sinusoidal positions,
  one 8,000 x 256 embedding shared by the encoder input, the decoder input and the output
  projection, embeddings scaled by sqrt(d_model), a source padding mask (id 0; random ids are
  drawn from 1, so nothing is padded but the mask is applied as tfm applies it), causal decoder
  self-attention. Source 16 and target 16 tokens; the decoder reads the first 16 of 17 random
  target ids and is scored against the last 16 (explicit targets).

No dropout, fp32, AdamW (lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on every weight of two or
more dimensions, as the tfm side groups them). The parameter count is asserted against the
formula (the same one `crates/tfm-bench` checks the built tfm model against).

FLOPs per step (6 per parameter per position it is applied to, plus 12 * q * k * d per layer for
attention over q query and k key positions, the full square):

    vit:     B * (6 * (N_patch * P + (N_layers + N_norm) * T + N_head) + 12 * L * T^2 * d)
    seq2seq: B * (6 * (N_enc * S + (N_dec - N_cross_kv) * T + N_cross_kv * S + V * d * T)
                  + 12 * L * (S^2 + T^2 + T * S) * d)

Examples:
    python bench/torch_models.py --config vit-mnist --steps 5
    python bench/torch_models.py --config seq2seq-small --attn sdpa
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_gpt import peak_rss_mib, sync

CONFIGS = {
    "vit-mnist": dict(family="vit", image=28, patch=4, channels=1, layers=6, heads=4, d_model=128,
                      ffn=512, classes=10, batch=128),
    "seq2seq-small": dict(family="seq2seq", vocab=8000, layers=3, heads=4, d_model=256, ffn=1024,
                          src_len=16, tgt_len=16, batch=64),
}

# Rows of the fixed sinusoidal table (the spec's `context`; a buffer, not a parameter).
SEQ2SEQ_CONTEXT = 64
EPS = 1e-6


class Attention(nn.Module):
    """tfm's `attention` primitive, unfused: q, k, v, o projections with biases."""

    def __init__(self, d: int, heads: int, causal: bool, impl: str):
        super().__init__()
        self.heads, self.causal, self.impl = heads, causal, impl
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        src = x if memory is None else memory
        s = src.shape[1]
        h, hd = self.heads, c // self.heads
        q = self.q(x).view(b, t, h, hd).transpose(1, 2)
        k = self.k(src).view(b, s, h, hd).transpose(1, 2)
        v = self.v(src).view(b, s, h, hd).transpose(1, 2)
        allowed = None  # bool [b or 1, 1, t, s], true where a query may attend to a key
        if key_mask is not None:
            allowed = key_mask[:, None, None, :]
        if self.causal:
            causal = torch.ones(t, s, dtype=torch.bool, device=x.device).tril()
            allowed = causal if allowed is None else (allowed & causal)
        if self.impl == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
            if allowed is not None:
                att = att.masked_fill(~allowed, float("-inf"))
            y = att.softmax(dim=-1) @ v
        return self.o(y.transpose(1, 2).contiguous().view(b, t, c))


class Mlp(nn.Module):
    """tfm's `mlp` primitive: `down(act(up(x)))` with biases."""

    def __init__(self, d: int, hidden: int, act: str):
        super().__init__()
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        h = F.gelu(h) if self.act == "gelu_exact" else F.relu(h)
        return self.down(h)


# ---------------------------------------------------------------------------------------------
# ViT


class PreLnEncoderLayer(nn.Module):
    """std.pre_ln_encoder_layer: h = x + attn(ln_1(x)); y = h + mlp(ln_2(h))."""

    def __init__(self, d: int, heads: int, ffn: int, impl: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=EPS)
        self.attn = Attention(d, heads, causal=False, impl=impl)
        self.ln_2 = nn.LayerNorm(d, eps=EPS)
        self.mlp = Mlp(d, ffn, "gelu_exact")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.attn(self.ln_1(x))
        return h + self.mlp(self.ln_2(h))


class ViT(nn.Module):
    def __init__(self, cfg: dict, impl: str):
        super().__init__()
        d, p = cfg["d_model"], cfg["patch"]
        patches = (cfg["image"] // p) ** 2
        self.embed = nn.Conv2d(cfg["channels"], d, kernel_size=p, stride=p)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, patches + 1, d) * 0.02)
        self.encoder = nn.ModuleList(PreLnEncoderLayer(d, cfg["heads"], cfg["ffn"], impl)
                                     for _ in range(cfg["layers"]))
        self.ln = nn.LayerNorm(d, eps=EPS)
        self.head = nn.Linear(d, cfg["classes"])
        init_weights(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b = images.shape[0]
        x = self.embed(images).flatten(2).transpose(1, 2)  # [b, patches, d]
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1) + self.pos
        for layer in self.encoder:
            x = layer(x)
        logits = self.head(self.ln(x)[:, 0])
        return F.cross_entropy(logits, labels)


def vit_params(cfg: dict) -> dict:
    c, p, d, f, k = cfg["channels"], cfg["patch"], cfg["d_model"], cfg["ffn"], cfg["classes"]
    t = (cfg["image"] // p) ** 2 + 1
    patch = d * c * p * p + d
    per_layer = 2 * (2 * d) + 4 * (d * d + d) + (d * f + f) + (f * d + d)
    head = d * k + k
    matmul = patch + cfg["layers"] * per_layer + 2 * d + head
    return {"total": matmul + d + t * d, "matmul": matmul, "patch": patch, "per_layer": per_layer, "head": head}


def vit_flops(cfg: dict) -> float:
    n = vit_params(cfg)
    p = (cfg["image"] // cfg["patch"]) ** 2
    t = p + 1
    enc = cfg["layers"] * n["per_layer"] + 2 * cfg["d_model"]
    lin = n["patch"] * p + enc * t + n["head"]
    attn = 12 * cfg["layers"] * t * t * cfg["d_model"]
    return float((6 * lin + attn) * cfg["batch"])


# ---------------------------------------------------------------------------------------------
# Encoder-decoder


class PostLnEncoderLayer(nn.Module):
    """std.post_ln_encoder_layer: h = ln_1(x + attn(x, mask)); y = ln_2(h + mlp(h))."""

    def __init__(self, d: int, heads: int, ffn: int, impl: str):
        super().__init__()
        self.attn = Attention(d, heads, causal=False, impl=impl)
        self.ln_1 = nn.LayerNorm(d, eps=EPS)
        self.mlp = Mlp(d, ffn, "relu")
        self.ln_2 = nn.LayerNorm(d, eps=EPS)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x + self.attn(x, key_mask=mask))
        return self.ln_2(h + self.mlp(h))


class PostLnDecoderLayer(nn.Module):
    """std.post_ln_decoder_layer: causal self-attention, cross-attention, feed-forward, each post-LN."""

    def __init__(self, d: int, heads: int, ffn: int, impl: str):
        super().__init__()
        self.self_attn = Attention(d, heads, causal=True, impl=impl)
        self.ln_1 = nn.LayerNorm(d, eps=EPS)
        self.cross_attn = Attention(d, heads, causal=False, impl=impl)
        self.ln_2 = nn.LayerNorm(d, eps=EPS)
        self.mlp = Mlp(d, ffn, "relu")
        self.ln_3 = nn.LayerNorm(d, eps=EPS)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x + self.self_attn(x))
        c = self.ln_2(h + self.cross_attn(h, memory, key_mask=mask))
        return self.ln_3(c + self.mlp(c))


def sinusoidal_table(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(n, d)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table


class Seq2seq(nn.Module):
    def __init__(self, cfg: dict, impl: str):
        super().__init__()
        d = cfg["d_model"]
        self.scale = math.sqrt(d)
        self.tok = nn.Embedding(cfg["vocab"], d)
        self.register_buffer("pe", sinusoidal_table(SEQ2SEQ_CONTEXT, d), persistent=False)
        self.encoder = nn.ModuleList(PostLnEncoderLayer(d, cfg["heads"], cfg["ffn"], impl)
                                     for _ in range(cfg["layers"]))
        self.decoder = nn.ModuleList(PostLnDecoderLayer(d, cfg["heads"], cfg["ffn"], impl)
                                     for _ in range(cfg["layers"]))
        init_weights(self)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        s, t = src.shape[1], tgt.shape[1]
        mask = src != 0  # pad_mask(src, 0)
        x = self.tok(src) * self.scale + self.pe[:s]
        for layer in self.encoder:
            x = layer(x, mask)
        y = self.tok(tgt) * self.scale + self.pe[:t]
        for layer in self.decoder:
            y = layer(y, x, mask)
        logits = y @ self.tok.weight.t()  # the shared embedding as the output projection
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def seq2seq_params(cfg: dict) -> dict:
    v, d, f, l = cfg["vocab"], cfg["d_model"], cfg["ffn"], cfg["layers"]
    attn = 4 * (d * d + d)
    ffn = (d * f + f) + (f * d + d)
    enc = attn + ffn + 2 * (2 * d)
    dec = 2 * attn + ffn + 3 * (2 * d)
    total = v * d + l * (enc + dec)
    return {"total": total, "matmul": total, "enc": enc, "dec": dec}


def seq2seq_flops(cfg: dict) -> float:
    n = seq2seq_params(cfg)
    s, t, d, l, v = cfg["src_len"], cfg["tgt_len"], cfg["d_model"], cfg["layers"], cfg["vocab"]
    cross_kv = l * 2 * (d * d + d)
    lin = l * n["enc"] * s + (l * n["dec"] - cross_kv) * t + cross_kv * s + v * d * t
    attn = 12 * l * (s * s + t * t + t * s) * d
    return float((6 * lin + attn) * cfg["batch"])


# ---------------------------------------------------------------------------------------------


def init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)


def run(args: argparse.Namespace) -> dict:
    cfg = dict(CONFIGS[args.config])
    family = cfg.pop("family")
    if args.batch is not None:
        cfg["batch"] = args.batch
    torch.manual_seed(args.seed)
    device = args.device
    if family == "vit":
        model = ViT(cfg, args.attn).to(device)
        expected = vit_params(cfg)["total"]
        flops = vit_flops(cfg)
        items, unit = cfg["batch"], "images"
    else:
        model = Seq2seq(cfg, args.attn).to(device)
        expected = seq2seq_params(cfg)["total"]
        flops = seq2seq_flops(cfg)
        items, unit = cfg["batch"] * cfg["tgt_len"], "target tokens"
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != expected:
        raise SystemExit(f"parameter count {n_params} differs from the formula {expected}")

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt_kwargs = {"fused": True} if device.startswith("cuda") else {}
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.99),  # as the tfm side
        **opt_kwargs,
    )
    step_model = torch.compile(model) if args.compile else model
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]

    g = torch.Generator().manual_seed(args.seed)
    b = cfg["batch"]
    batches = []
    for _ in range(4):
        if family == "vit":
            images = torch.randn(b, cfg["channels"], cfg["image"], cfg["image"], generator=g)
            labels = torch.randint(0, cfg["classes"], (b,), generator=g)
            batches.append((images.to(device), labels.to(device)))
        else:
            src = torch.randint(1, cfg["vocab"], (b, cfg["src_len"]), generator=g)
            seq = torch.randint(1, cfg["vocab"], (b, cfg["tgt_len"] + 1), generator=g)
            batches.append((src.to(device), seq[:, :-1].contiguous().to(device),
                            seq[:, 1:].contiguous().to(device)))

    def step(i: int) -> torch.Tensor:
        data = batches[i % len(batches)]
        if amp_dtype is not None:
            with torch.autocast(device_type=device.split(":")[0], dtype=amp_dtype):
                loss = step_model(*data)
        else:
            loss = step_model(*data)
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
    out = {
        "side": "pytorch",
        "torch": torch.__version__,
        "family": family,
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
        "unit": unit,
        "items_per_s": items / med,
        ("images_per_s" if unit == "images" else "tokens_per_s"): items / med,
        "flops_per_step": flops,
        "gflops": flops / med / 1e9,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "peak_rss_mib": peak_rss_mib(),
    }
    if args.peak_gflops:
        out["peak_gflops"] = args.peak_gflops
        out["share_of_peak"] = out["gflops"] / args.peak_gflops
    if device.startswith("cuda"):
        out["peak_gpu_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="vit-mnist")
    p.add_argument("--batch", type=int, default=None, help="override the batch size")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype")
    p.add_argument("--attn", choices=["manual", "sdpa"], default="manual",
                   help="manual: explicit masked softmax (what tfm computes); sdpa: F.scaled_dot_product_attention")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--peak-gflops", type=float, default=None, help="machine peak for the share-of-peak column")
    args = p.parse_args()

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    res = run(args)
    res["machine"] = platform.machine()
    res["loadavg_1m"] = os.getloadavg()[0]
    res["cpu_count"] = os.cpu_count()
    print(json.dumps(res))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
