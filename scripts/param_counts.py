#!/usr/bin/env python3
"""Independent parameter counts for the reference specs in specs/.

Each model is decomposed into the weights its spec declares, written out by hand from the
published architectures (not from the tfm checker), and compared with the reference figure
that the spec's `expect params == N` states. Run: python3 scripts/param_counts.py
"""


def linear(i, o, bias=True):
    return i * o + (o if bias else 0)


def layer_norm(d, bias=True):
    return d + (d if bias else 0)


def rms_norm(d):
    return d


def attention(d, heads, kv_heads=None, head_dim=None, bias=True, out_bias=None, kv_dim=None):
    """q, k, v, o projections (fused or not, the count is the same)."""
    kv_heads = heads if kv_heads is None else kv_heads
    head_dim = d // heads if head_dim is None else head_dim
    out_bias = bias if out_bias is None else out_bias
    kv_dim = d if kv_dim is None else kv_dim
    q = linear(d, heads * head_dim, bias)
    k = linear(kv_dim, kv_heads * head_dim, bias)
    v = linear(kv_dim, kv_heads * head_dim, bias)
    o = linear(heads * head_dim, d, out_bias)
    return q + k + v + o


def mlp(d, hidden, gated=False, bias=True):
    n = linear(d, hidden, bias) + linear(hidden, d, bias)
    return n + (linear(d, hidden, bias) if gated else 0)


def whisper_attention(d):
    """OpenAI Whisper: query, value and out have a bias; key has none."""
    return linear(d, d) + linear(d, d, bias=False) + linear(d, d) + linear(d, d)


def gpt2(vocab=50257, context=1024, d=768, layers=12, heads=12):
    block = layer_norm(d) + attention(d, heads) + layer_norm(d) + mlp(d, 4 * d)
    return {
        "tok (embedding, tied with the head)": vocab * d,
        "pos (embedding)": context * d,
        f"blocks: {layers} x pre_ln_decoder_layer ({block})": layers * block,
        "ln_f": layer_norm(d),
    }


def bert_base(vocab=30522, context=512, types=2, d=768, layers=12, heads=12, ffn=3072):
    block = attention(d, heads) + layer_norm(d) + mlp(d, ffn) + layer_norm(d)
    return {
        "tok": vocab * d,
        "pos": context * d,
        "seg (token types)": types * d,
        "ln_emb": layer_norm(d),
        f"layers: {layers} x post_ln_encoder_layer ({block})": layers * block,
        "pooler": linear(d, d),
    }


def t5_small(vocab=32128, d=512, layers=6, heads=8, d_kv=64, ffn=2048, buckets=32):
    enc = rms_norm(d) + attention(d, heads, head_dim=d_kv, bias=False) + rms_norm(d) + mlp(d, ffn, bias=False)
    dec = enc + rms_norm(d) + attention(d, heads, head_dim=d_kv, bias=False)
    return {
        "shared (embedding, tied with the head)": vocab * d,
        "enc_rel (relative_bias)": buckets * heads,
        f"encoder: {layers} x t5_encoder_layer ({enc})": layers * enc,
        "enc_norm": rms_norm(d),
        "dec_rel (relative_bias)": buckets * heads,
        f"decoder: {layers} x t5_decoder_layer ({dec})": layers * dec,
        "dec_norm": rms_norm(d),
    }


def vit_encoder_layer(d, heads, ffn):
    return layer_norm(d) + attention(d, heads) + layer_norm(d) + mlp(d, ffn)


def vit_b16(image=224, patch=16, d=768, layers=12, heads=12, ffn=3072, classes=1000):
    n = (image // patch) ** 2
    block = vit_encoder_layer(d, heads, ffn)
    return {
        "patch (patch_embed)": 3 * patch * patch * d + d,
        "cls (class token)": d,
        "pos (learned positions)": (n + 1) * d,
        f"layers: {layers} x pre_ln_encoder_layer ({block})": layers * block,
        "ln": layer_norm(d),
        "head": linear(d, classes),
    }


def clip_vit_b32(vocab=49408, context=77, width_t=512, layers_t=12, image=224, patch=32, width_v=768, layers_v=12, embed=512):
    n = (image // patch) ** 2
    tblock = layer_norm(width_t) + attention(width_t, 8) + layer_norm(width_t) + mlp(width_t, 4 * width_t)
    vblock = layer_norm(width_v) + attention(width_v, 12) + layer_norm(width_v) + mlp(width_v, 4 * width_v)
    return {
        "tok": vocab * width_t,
        "pos": context * width_t,
        f"text: {layers_t} x clip_encoder_layer ({tblock})": layers_t * tblock,
        "ln_text": layer_norm(width_t),
        "text_proj": linear(width_t, embed, bias=False),
        "patch (patch_embed, no bias)": 3 * patch * patch * width_v,
        "cls": width_v,
        "vis_pos": (n + 1) * width_v,
        "ln_pre": layer_norm(width_v),
        f"vision: {layers_v} x clip_encoder_layer ({vblock})": layers_v * vblock,
        "ln_post": layer_norm(width_v),
        "image_proj": linear(width_v, embed, bias=False),
        "logit_scale": 1,
    }


def whisper_tiny(mels=80, d=384, layers=4, vocab=51865, text_ctx=448, audio_ctx=1500):
    enc = layer_norm(d) + whisper_attention(d) + layer_norm(d) + mlp(d, 4 * d)
    dec = layer_norm(d) + whisper_attention(d) + layer_norm(d) + whisper_attention(d) + layer_norm(d) + mlp(d, 4 * d)
    return {
        "conv1": mels * d * 3 + d,
        "conv2": d * d * 3 + d,
        f"encoder: {layers} x whisper_encoder_layer ({enc})": layers * enc,
        "ln_enc": layer_norm(d),
        "tok (tied with the head)": vocab * d,
        "pos (learned, decoder)": text_ctx * d,
        f"decoder: {layers} x whisper_decoder_layer ({dec})": layers * dec,
        "ln_dec": layer_norm(d),
    }, audio_ctx * d


def llama(vocab, d, layers, heads, kv_heads, ffn):
    block = rms_norm(d) + attention(d, heads, kv_heads, bias=False) + rms_norm(d) + mlp(d, ffn, gated=True, bias=False)
    return {
        "tok": vocab * d,
        f"layers: {layers} x llama_decoder_layer ({block})": layers * block,
        "norm": rms_norm(d),
        "head (untied)": linear(d, vocab, bias=False),
    }


def transformer_base(vocab=37000, d=512, layers=6, heads=8, ffn=2048):
    enc = attention(d, heads) + layer_norm(d) + mlp(d, ffn) + layer_norm(d)
    dec = attention(d, heads) + layer_norm(d) + attention(d, heads) + layer_norm(d) + mlp(d, ffn) + layer_norm(d)
    return {
        "tok (shared by encoder, decoder and the pre-softmax projection)": vocab * d,
        f"encoder: {layers} x post_ln_encoder_layer ({enc})": layers * enc,
        f"decoder: {layers} x post_ln_decoder_layer ({dec})": layers * dec,
    }


def tiny_gpt(vocab, context, d, layers, heads):
    return gpt2(vocab=vocab, context=context, d=d, layers=layers, heads=heads)


REFERENCE = [
    ("bert_base", bert_base(), 109_482_240),
    ("gpt2", gpt2(), 124_439_808),
    ("gpt2_medium", gpt2(d=1024, layers=24, heads=16), 354_823_168),
    ("t5_small", t5_small(), 60_506_624),
    ("vit_b16", vit_b16(), 86_567_656),
    ("clip_vit_b32", clip_vit_b32(), 151_277_313),
    ("whisper_tiny", whisper_tiny()[0], 37_184_640),
    ("llama2_7b", llama(32000, 4096, 32, 32, 32, 11008), 6_738_415_616),
    ("mistral_7b", llama(32000, 4096, 32, 32, 8, 14336), 7_241_732_096),
    ("transformer_base", transformer_base(), 63_082_496),
    ("bert_large", bert_base(d=1024, layers=24, heads=16, ffn=4096), 335_141_888),
    ("vit_l16", vit_b16(d=1024, layers=24, heads=16, ffn=4096), 304_326_632),
    ("llama2_13b", llama(32000, 5120, 40, 40, 40, 13824), 13_015_864_320),
    ("transformer_big", transformer_base(d=1024, heads=16, ffn=4096), 214_245_376),
    ("examples/shakespeare_char", tiny_gpt(65, 64, 128, 4, 4), 809_856),
    ("examples/addition", tiny_gpt(16, 32, 128, 3, 4), 601_216),
]


def main():
    ok = True
    for name, parts, expected in REFERENCE:
        total = sum(parts.values())
        mark = "ok" if total == expected else "MISMATCH"
        ok &= total == expected
        print(f"{name}: {total:,} (reference {expected:,}) {mark}")
        for k, v in parts.items():
            print(f"    {v:>15,}  {k}")
    table = whisper_tiny()[1]
    print(f"whisper_tiny with its encoder table counted (as Hugging Face does): {37_184_640 + table:,}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
