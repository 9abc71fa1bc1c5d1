"""The PyTorch side of the Shakespeare reference run: the same GPT as `torch_gpt.py` trained with
nanoGPT's CPU settings of `train_shakespeare_char` (4 x 128, context 64, batch 12, 2000
iterations, AdamW lr 1e-3 with betas (0.9, 0.99) and weight decay 0.1 on matrices, 100 warm-up
steps then cosine to 1e-4, gradient clipping at 1.0, dropout 0), on the first 90% of tiny
Shakespeare, validated on the last 10%.

Prints one JSON line: the validation loss over `--eval-batches` random windows at the end of
training and of the best evaluation during training, next to tfm's `examples/shakespeare_char`
figure for the same setup.

    .venv-bench/bin/python bench/torch_shakespeare.py --data ../shared/data/tinyshakespeare.txt

`--no-bias --gelu none` trains nanoGPT's model exactly instead (its `bias = False` default: no
biases in the linear layers and norms; the exact GELU of `nn.GELU()`).
"""

import argparse
import json
import math
import time

import torch

from torch_gpt import GPT


def lr_at(it: int, args: argparse.Namespace) -> float:
    # nanoGPT's get_lr
    if it < args.warmup:
        return args.lr * (it + 1) / (args.warmup + 1)
    if it > args.iters:
        return args.min_lr
    ratio = (it - args.warmup) / (args.iters - args.warmup)
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (args.lr - args.min_lr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="tinyshakespeare.txt")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-batches", type=int, default=200)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-bias", action="store_true", help="no biases in the linear layers and norms")
    p.add_argument("--gelu", choices=["tanh", "none"], default="tanh", help="GELU form ('none': exact)")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    text = open(args.data, encoding="utf-8").read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    train, val = data[:n], data[n:]

    def batch(split: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(split) - args.context, (args.batch,))
        x = torch.stack([split[i : i + args.context] for i in ix])
        y = torch.stack([split[i + 1 : i + 1 + args.context] for i in ix])
        return x, y

    model = GPT(len(chars), 4, 4, 128, args.context, "manual", bias=not args.no_bias, gelu=args.gelu)
    decay = [q for q in model.parameters() if q.dim() >= 2]
    no_decay = [q for q in model.parameters() if q.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.99),
    )

    @torch.no_grad()
    def val_loss(batches: int) -> float:
        model.eval()
        total = sum(float(model(*batch(val))) for _ in range(batches))
        model.train()
        return total / batches

    start = time.perf_counter()
    best = float("inf")
    for it in range(args.iters + 1):
        if it % args.eval_every == 0 and it > 0:
            best = min(best, val_loss(20))
        if it == args.iters:
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(it, args)
        loss = model(*batch(train))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    train_s = time.perf_counter() - start
    final = val_loss(args.eval_batches)
    print(json.dumps({
        "side": "pytorch",
        "torch": torch.__version__,
        "iters": args.iters,
        "seed": args.seed,
        "val_loss_final": round(final, 4),
        "eval_batches": args.eval_batches,
        "best_val_loss_20_batches": round(best, 4),
        "train_s": round(train_s, 1),
    }))


if __name__ == "__main__":
    main()
