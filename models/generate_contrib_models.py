"""Generate transformer models rewritten by onnxruntime's transformer optimizer (com.microsoft ops).

Run from the repository root:  python models/generate_contrib_models.py

Needs torch (2.13.0, CPU) and onnxruntime (its ``onnxruntime.transformers.optimizer``).  Why these
models: users deploy encoders *after* ``optimize_model``, whose fused ``com.microsoft`` ops
(``Attention``, ``MultiHeadAttention``, ``SkipLayerNormalization``, ``BiasGelu``, ``FastGelu``,
``EmbedLayerNormalization``) replace the decomposed graph the other generators export.

* ``bert_optimized_attention``: a BERT-style encoder written the way Hugging Face's ``BertModel``
  is (``view`` + ``permute`` head split, additive mask ``(1.0 - mask.float()) * -10000``: the form the
  optimizer's fusion recognises), exported with dynamic batch ``N`` and sequence ``S``, then
  ``optimize_model(model_type="bert")``: packed-QKV ``Attention`` (weights ``[64, 192]``, bias
  ``[192]``, ``num_heads=4``), ``SkipLayerNormalization``, ``BiasGelu``, ``EmbedLayerNormalization``.
* ``bert_optimized_mha``: the same export with ``use_multi_head_attention``: separate Q/K/V
  ``MatMul`` feeding ``MultiHeadAttention`` with a packed bias ``[192]``.
* ``gpt_block_optimized``: ``gpt_block_dynamic.onnx`` through ``optimize_model(model_type="gpt2")``:
  the decomposed causal attention stays, the FFN becomes ``FastGelu`` (with bias) and the residual
  adds ``SkipLayerNormalization``.

Every file is full-checked and compared (rtol 1e-4, atol 1e-4) with torch (BERT) or with its source file
(GPT) at several batch sizes and sequence lengths under both onnxruntime optimization levels. The optimizer
omits the `com.microsoft` opset import that the ONNX checker requires; the generator adds it.
"""

from __future__ import annotations

import io
import math
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
from onnxruntime.transformers.fusion_options import FusionOptions
from onnxruntime.transformers.optimizer import optimize_model

import _common as C

GENERATOR = "generate_contrib_models.py"
SEED = 1234
HIDDEN, HEADS, FFN, LAYERS, VOCAB, MAX_POS = 64, 4, 128, 2, 100, 16
CASES = [(2, 8), (3, 5), (1, 16)]


class HFSelfAttention(nn.Module):
    """Hugging Face BertSelfAttention + BertSelfOutput's dense, eager attention."""

    def __init__(self) -> None:
        super().__init__()
        self.d = HIDDEN // HEADS
        self.query, self.key, self.value = (nn.Linear(HIDDEN, HIDDEN) for _ in range(3))
        self.dense = nn.Linear(HIDDEN, HIDDEN)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size()[:-1] + (HEADS, self.d)).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d) + mask
        context = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).contiguous()
        return self.dense(context.view(context.size()[:-2] + (HIDDEN,)))


class HFLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = HFSelfAttention()
        self.ln1 = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.intermediate = nn.Linear(HIDDEN, FFN)
        self.output = nn.Linear(FFN, HIDDEN)
        self.ln2 = nn.LayerNorm(HIDDEN, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.ln1(self.attention(x, mask) + x)
        return self.ln2(self.output(nn.functional.gelu(self.intermediate(x))) + x)


class HFBert(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word = nn.Embedding(VOCAB, HIDDEN)
        self.position = nn.Embedding(MAX_POS, HIDDEN)
        self.register_buffer("position_ids", torch.arange(MAX_POS).unsqueeze(0), persistent=False)
        self.ln = nn.LayerNorm(HIDDEN, eps=1e-12)
        self.layers = nn.ModuleList(HFLayer() for _ in range(LAYERS))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        s = input_ids.shape[1]
        x = self.word(input_ids) + self.position(self.position_ids[:, :s])
        x = self.ln(x)
        mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        return x


def bert_feed(rng: np.random.Generator, b: int, s: int) -> dict[str, np.ndarray]:
    """Random ids; right padding of random length per row (row 0 unpadded)."""
    lengths = rng.integers(1, s + 1, size=b)
    lengths[0] = s
    return {"input_ids": rng.integers(0, VOCAB, size=(b, s)).astype(np.int64),
            "attention_mask": (np.arange(s)[None, :] < lengths[:, None]).astype(np.int64)}


def export_bert(module: nn.Module, path: Path) -> None:
    example = {k: torch.from_numpy(v) for k, v in bert_feed(np.random.default_rng(SEED), 2, 8).items()}
    names = [*example, "last_hidden_state"]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, tuple(example.values()), buf, dynamo=False, opset_version=C.OPSET,
                          input_names=list(example), output_names=["last_hidden_state"],
                          dynamic_axes={n: {0: C.BATCH_AXIS, 1: "S"} for n in names}, do_constant_folding=True)
    path.write_bytes(buf.getvalue())


def optimized(source: Path, model_type: str, heads: int, hidden: int, mha: bool = False) -> onnx.ModelProto:
    options = FusionOptions(model_type)
    options.use_multi_head_attention = mha
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = optimize_model(str(source), model_type=model_type, num_heads=heads, hidden_size=hidden,
                                optimization_options=options, opt_level=0)
    model = result.model
    if not any(o.domain == "com.microsoft" for o in model.opset_import):  # onnxruntime runs without it; the
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))  # ONNX checker does not
    return model


def compare(path: Path, reference: Callable[[dict[str, np.ndarray]], np.ndarray],
            feed: Callable[[np.random.Generator, int, int], dict[str, np.ndarray]]) -> None:
    """The optimized file equals torch at every case, under both onnxruntime optimization levels."""
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    rng = np.random.default_rng(SEED + 1)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for b, s in CASES:
            inputs = feed(rng, b, s)
            np.testing.assert_allclose(sess.run(None, inputs)[0], reference(inputs), rtol=1e-4, atol=1e-4,
                                       err_msg=f"{path.name} B={b} S={s}")


def torch_reference(module: nn.Module) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    def run(inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return module(*(torch.from_numpy(v) for v in inputs.values())).numpy()
    return run


BERT_DOC = (
    "BERT-style post-LN encoder written like Hugging Face BertModel (hidden 64, 4 heads x 16, FFN 128, 2 layers, "
    "vocab 100, 16 positions), exported with dynamic N and S, then onnxruntime.transformers "
    "optimize_model(model_type='bert', num_heads=4, hidden_size=64, opt_level=0): EmbedLayerNormalization "
    "(word/position embeddings + LayerNorm, mask_index from attention_mask), SkipLayerNormalization "
    "for both residual LayerNorms (dense/output biases folded into its bias input), BiasGelu (exact GELU with "
    "the intermediate bias), and ")

ENTRIES = {
    "bert_optimized_attention": BERT_DOC + "com.microsoft.Attention with packed QKV weights [64, 192] and bias "
    "[192] (Q, K, V column chunks of 64, head h at columns h*16..h*16+15 of each chunk), num_heads=4, "
    "mask_index from EmbedLayerNormalization; the output dense MatMul reads its [N, S, 64] output.",
    "bert_optimized_mha": BERT_DOC + "com.microsoft.MultiHeadAttention (FusionOptions.use_multi_head_attention): "
    "separate Q/K/V MatMul [64, 64] without bias feed query/key/value [N, S, 64], the three biases packed into "
    "MultiHeadAttention's bias input [192], key_padding_mask from attention_mask, num_heads=4.",
    "gpt_block_optimized": "gpt_block_dynamic.onnx (GPT-2-style decoder, hidden 64, 2 heads x 32, FFN 128, 2 pre-LN "
    "blocks, decomposed causal attention) through optimize_model(model_type='gpt2', num_heads=2, hidden_size=64, "
    "opt_level=0): the attention stays decomposed (MatMul/Split/Reshape/Transpose/Softmax), the FFN becomes "
    "MatMul -> FastGelu(X, bias [128]) -> MatMul, and residual Add + LayerNormalization pairs become "
    "SkipLayerNormalization (with bias).",
}


def main() -> None:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(SEED)
    bert = HFBert().eval()
    for m in bert.modules():  # non-trivial LayerNorm affine parameters
        if isinstance(m, nn.LayerNorm):
            m.weight.data.copy_(0.5 + torch.rand(HIDDEN, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(HIDDEN, generator=gen))
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "bert.onnx"
        export_bert(bert, raw)
        builds = {"bert_optimized_attention": (optimized(raw, "bert", HEADS, HIDDEN), torch_reference(bert), bert_feed),
                  "bert_optimized_mha": (optimized(raw, "bert", HEADS, HIDDEN, mha=True), torch_reference(bert),
                                         bert_feed)}
        gpt_source = C.MODELS_DIR / "gpt_block_dynamic.onnx"
        gpt_session = ort.InferenceSession(str(gpt_source), providers=["CPUExecutionProvider"])
        builds["gpt_block_optimized"] = (
            optimized(gpt_source, "gpt2", 2, 64), lambda feed: gpt_session.run(None, feed)[0],
            lambda rng, b, s: {"input_ids": rng.integers(0, VOCAB, size=(b, s)).astype(np.int64)})
        for name, (model, reference, feed) in builds.items():
            path = C.save_model(model, name, doc=ENTRIES[name], generator=GENERATOR)
            compare(path, reference, feed)
            C.report(name, path, C.op_histogram(model))
            assert path.stat().st_size < 500 * 1024, (name, path.stat().st_size)
            entries.append(C.manifest_entry(
                name, path, source="pytorch + onnxruntime.transformers.optimizer",
                exporter=f"{C.torch_exporter_string()}; onnxruntime {ort.__version__} optimize_model",
                exercises=ENTRIES[name], generator=GENERATOR, frameworks=("torch", "onnxruntime"),
                extra={"verified_shapes": [list(c) for c in CASES]}))
    C.update_manifest(entries)


if __name__ == "__main__":
    main()
