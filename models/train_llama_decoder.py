"""Train a tiny Llama (transformers ``LlamaForCausalLM``: GQA, RoPE, RMSNorm, SwiGLU) on the docstrings of
Python's standard library and export it twice: without a KV cache and with one.

Why: perplexity-based pruning benchmarks need a model whose perplexity *means* something; random weights
would make any criterion look alike.  Byte-level tokens (vocabulary 256) need no tokenizer files, and the
docstrings of the stdlib are text every Python install has, offline.  Held-out modules (not seen in
training) give the calibration and test token ids.

Produces (run from the repo root, needs torch 2.13.0 + transformers 4.57.6):
- ``llama_tiny.onnx``: input ``input_ids`` int64 [batch, seq] -> ``logits`` [batch, seq, 256];
- ``llama_tiny_kv.onnx``: inputs ``input_ids`` [batch, seq], ``attention_mask`` [batch, 'past_seq + seq'],
  ``position_ids`` [batch, seq], ``past_key_values.{i}.key/value`` [batch, 2, past_seq, 16]; outputs
  ``logits`` and ``present.{i}.key/value`` (optimum's names);
- ``llama_text_calib.npz`` / ``llama_text_test.npz``: ``input_ids`` int64 [n, 128] of held-out text.

250 steps of batch 16 (a few minutes on 2 CPU threads).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

GENERATOR = "train_llama_decoder.py"
SEED = 1234
SEQ = 128
CONFIG = dict(vocab_size=256, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
              num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
              rope_theta=10000.0, tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
TRAIN_STEPS = 250
HELD_OUT = ("json", "csv", "argparse", "logging", "unittest", "email", "http", "xml", "sqlite3", "zipfile")


def stdlib_text(names: list[str]) -> str:
    """Docstrings of the modules ``names`` and of their public classes and functions (deterministic order)."""
    parts = []
    for name in names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - platform-specific modules
            continue
        parts.append(inspect.getdoc(module) or "")
        for attr in sorted(vars(module)):
            obj = getattr(module, attr, None)
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            doc = inspect.getdoc(obj)
            if doc:
                parts.append(f"{attr}: {doc}")
    return "\n\n".join(p for p in parts if p)


def corpora() -> tuple[np.ndarray, np.ndarray]:
    """Byte ids of the training text and of the held-out text."""
    stdlib = sorted(m for m in sys.stdlib_module_names if not m.startswith("_") and m not in
                    ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "ensurepip"))
    train = [m for m in stdlib if m not in HELD_OUT]
    encode = lambda text: np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8).astype(np.int64)  # noqa: E731
    return encode(stdlib_text(train)), encode(stdlib_text(list(HELD_OUT)))


def windows(ids: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` non-overlapping windows of SEQ tokens, in a seeded order."""
    starts = np.arange(0, len(ids) - SEQ, SEQ)
    starts = np.random.default_rng(seed).permutation(starts)[:count]
    return np.stack([ids[s:s + SEQ] for s in np.sort(starts)])


def train(train_ids: np.ndarray):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG, attn_implementation="eager"))
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    rng = np.random.default_rng(SEED)
    start, step = time.time(), 0
    model.train()
    while step < TRAIN_STEPS:
        offsets = rng.integers(0, len(train_ids) - SEQ - 1, 16)
        batch = torch.from_numpy(np.stack([train_ids[o:o + SEQ] for o in offsets]))
        loss = model(input_ids=batch, labels=batch).loss
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in optim.param_groups:
            group["lr"] = 3e-3 * min(1.0, (step + 1) / 25) * (0.1 + 0.9 * (1 + np.cos(np.pi * step / TRAIN_STEPS)) / 2)
        optim.step()
        if step % 50 == 0:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - start:.0f} s)")
        step += 1
    return model.eval(), step


def additive_mask(padding, seq):
    """4-D additive causal + padding mask ``[b, 1, seq, total]`` from plain tensor ops.

    transformers 4.57 builds masks with ``torch.vmap``, which the TorchScript exporter cannot trace; a 4-D
    mask is used as given, so the export sees the form optimum's exports of earlier versions had
    (causal comparison of run-time ranges, padding from ``attention_mask``, ``Where`` to the float minimum).
    """
    import torch

    total = padding.shape[1]
    q_pos = torch.arange(seq).unsqueeze(1) + (total - seq)
    allowed = (torch.arange(total).unsqueeze(0) <= q_pos).unsqueeze(0) & padding.bool().unsqueeze(1)
    zero = torch.zeros((), dtype=torch.float32)
    low = torch.full((), torch.finfo(torch.float32).min)
    return torch.where(allowed, zero, low).unsqueeze(1)


class NoCache:
    """``input_ids -> logits`` (the full-sequence model perplexity is measured on)."""

    def __new__(cls, model):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids):
                mask = additive_mask(torch.ones_like(input_ids), input_ids.shape[1])
                return self.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits

        return Wrapped()


def kv_names(layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


def with_cache(model):
    """Flat-tensor wrapper around ``DynamicCache`` so the TorchScript exporter sees plain inputs/outputs."""
    import torch
    from transformers import DynamicCache

    layers = model.config.num_hidden_layers

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            mask = additive_mask(attention_mask, input_ids.shape[1])
            out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            flat = []
            for i in range(layers):
                flat.extend((out.past_key_values.layers[i].keys, out.past_key_values.layers[i].values))
            return (out.logits, *flat)

    return Wrapped()


def export(model, calib: np.ndarray) -> list[Path]:
    import torch

    head_dim = CONFIG["hidden_size"] // CONFIG["num_attention_heads"]
    kv, layers = CONFIG["num_key_value_heads"], CONFIG["num_hidden_layers"]
    written = []
    ids = torch.from_numpy(calib[:2, :16].copy())
    plain = _export(NoCache(model), (ids,), ["input_ids"], ["logits"],
                    {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}})
    written.append(_save(plain, "llama_tiny", NoCache(model), [(calib[:2, :40],), (calib[2:5, :9],)]))
    inputs, outputs = kv_names(layers)
    past = tuple(torch.zeros(2, kv, 3, head_dim) for _ in range(2 * layers))
    example = (ids[:, :4], torch.ones(2, 7, dtype=torch.int64), torch.arange(3, 7).repeat(2, 1), *past)
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "past_seq + seq"},
           "position_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    dyn.update({n: {0: "batch", 2: "past_seq"} for n in inputs[3:]})
    dyn.update({n: {0: "batch", 2: "past_seq + seq"} for n in outputs[1:]})  # optimum's sum names
    cached = _export(with_cache(model), example, inputs, outputs, dyn)
    rng = np.random.default_rng(SEED + 1)
    feeds = [_kv_feed(calib[:2, 10:13], 5, rng), _kv_feed(calib[3:4, :1], 9, rng)]
    written.append(_save(cached, "llama_tiny_kv", with_cache(model), feeds))
    return written


def _kv_feed(ids: np.ndarray, past: int, rng) -> tuple:
    head_dim = CONFIG["hidden_size"] // CONFIG["num_attention_heads"]
    b, s = ids.shape
    kv = [rng.standard_normal((b, CONFIG["num_key_value_heads"], past, head_dim)).astype(np.float32)
          for _ in range(2 * CONFIG["num_hidden_layers"])]
    positions = np.tile(np.arange(past, past + s, dtype=np.int64), (b, 1))
    return (ids.astype(np.int64), np.ones((b, past + s), dtype=np.int64), positions, *kv)


def _export(module, example, inputs, outputs, dyn):
    import io

    import onnx
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, buf, opset_version=C.OPSET, input_names=inputs, output_names=outputs,
                          dynamic_axes=dyn, do_constant_folding=True, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _save(model, name: str, module, feeds: list[tuple]) -> Path:
    """Check, compare with torch (rtol 1e-4, atol 1e-4 on logits and caches), write."""
    import onnx
    import onnxruntime as ort
    import torch

    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for feed in feeds:
        got = sess.run(None, dict(zip(names, feed)))
        with torch.no_grad():
            want = module(*[torch.from_numpy(np.asarray(a)) for a in feed])
        want = want if isinstance(want, tuple) else (want,)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-4)
    return C.save_model(model, name, doc=f"tiny Llama trained on stdlib docstrings ({name})", generator=GENERATOR)


def perplexity(model, ids: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        loss = model(input_ids=torch.from_numpy(ids), labels=torch.from_numpy(ids)).loss
    return float(torch.exp(loss))


def main() -> None:
    train_ids, held_out = corpora()
    print(f"train bytes {len(train_ids)}, held-out bytes {len(held_out)}")
    calib = windows(held_out, 64, SEED)
    calib_set = {tuple(w) for w in calib.tolist()}  # test windows are the ones calibration does not hold
    test = np.stack([w for w in windows(held_out, 192, SEED + 7) if tuple(w.tolist()) not in calib_set][:96])
    model, steps = train(train_ids)
    ppl_test = perplexity(model, test)
    print(f"{steps} steps; held-out perplexity {ppl_test:.3f}")
    C.save_npz_deterministic(C.MODELS_DIR / "llama_text_calib.npz", input_ids=calib)
    C.save_npz_deterministic(C.MODELS_DIR / "llama_text_test.npz", input_ids=test)
    paths = export(model, calib)
    common = dict(source="pytorch", exporter=C.torch_exporter_string(), generator=GENERATOR,
                  frameworks=("torch", "transformers"))
    base = ("transformers LlamaForCausalLM (eager attention) trained 250 steps on stdlib docstrings, byte "
            "vocabulary 256, hidden 128, 8 query heads / 2 KV heads (GQA) x head dim 16, SwiGLU 384, 4 layers, "
            "RMSNorm as Pow/ReduceMean/Add/Sqrt/Div/Mul, RoPE cos/sin gathered by position, rotate_half by "
            "Slice with run-time bounds, repeat_kv as Unsqueeze/Expand/Reshape, causal mask built at run time")
    data = {"files": ["llama_text_calib.npz", "llama_text_test.npz"], "arrays": {"input_ids": "int64 [n, 128]"},
            "split": f"held-out modules {', '.join(HELD_OUT)}; calib 64 windows, test 96 windows",
            "test_perplexity_torch": round(ppl_test, 4), "train_steps": steps}
    entries = [
        C.manifest_entry("llama_tiny", paths[0], exercises=base + "; no cache, input_ids only.", extra={"data": data},
                         **common),
        C.manifest_entry("llama_tiny_kv", paths[1], exercises=base + "; KV cache: attention_mask (padding + "
                         "causal), position_ids, past_key_values.* in, present.* out.", extra={"data": data}, **common),
    ]
    C.update_manifest(entries)
    for path in paths:
        print(f"OK {path.name} {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    if "--steps" in sys.argv:  # a quick export check; the committed files come from the default
        TRAIN_STEPS = int(sys.argv[sys.argv.index("--steps") + 1])
    main()
