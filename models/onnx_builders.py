"""Torch-free builders for large models that tests and benchmarks write at run time (never committed).

Why: memory and shape-probe benchmarks need a 32k-vocabulary KV-cache decoder
and a ~90 MB encoder, which are too large for ``models/``, while the tests must
not need torch. Each builder starts from a committed torch export and only
resizes weights, so the op patterns are exactly the exporter's:

* ``build_llama_kv_decoder``: ``llama_kv_decoder.onnx`` with the embedding
  table and the lm_head resized to ``vocab`` (run-time causal mask, RoPE,
  GQA Expand/Reshape and KV-cache Concat untouched);
* ``build_bert_encoder``: ``bert_encoder_dynamic.onnx`` widened from hidden 32
  / FFN 64 to hidden ``H`` / FFN ``2H`` (head count 4 stays; its head split
  computes ``hidden // heads`` from ``Shape`` at run time, so no shape
  constant changes).

Weights are seeded random numbers with the scale of the weights they
replace. ``generate_shape_models.py`` has torch builders with the same names
that export the same architectures from torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

MODELS_DIR = Path(__file__).resolve().parent

BERT_HIDDEN, BERT_FFN, BERT_HEADS = 32, 64, 4


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _replace(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
            return
    raise KeyError(name)


def _set_output_dim(model: onnx.ModelProto, output: str, axis: int, value: int) -> None:
    for vi in model.graph.output:
        if vi.name == output:
            vi.type.tensor_type.shape.dim[axis].dim_value = value
            return
    raise KeyError(output)


def build_llama_kv_decoder(path: str | Path, vocab: int = 32000, seed: int = 0) -> Path:
    """Write the committed Llama KV-cache decoder with a ``vocab``-row embedding and lm_head (32k: ~33 MB)."""
    model = onnx.load(str(MODELS_DIR / "llama_kv_decoder.onnx"))
    inits = _initializers(model)
    rng = np.random.default_rng(seed)
    emb = next(n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits
               and len(inits[n.input[0]].dims) == 2)
    hidden = int(inits[emb].dims[1])
    head = next(n.input[1] for n in model.graph.node if n.op_type == "MatMul" and n.output[0] == "logits")
    _replace(model, emb, rng.standard_normal((vocab, hidden)))
    bound = 1.0 / math.sqrt(hidden)
    _replace(model, head, rng.uniform(-bound, bound, (hidden, vocab)))
    _set_output_dim(model, "logits", 2, vocab)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "onnx_builder": f"build_llama_kv_decoder(vocab={vocab}, seed={seed})"})
    path = Path(path)
    onnx.save(model, str(path))
    return path


def bert_hidden_for(target_mb: float) -> int:
    """Hidden width (multiple of 64) whose widened 2-layer encoder weighs about ``target_mb`` MB.

    Weights: per layer 4 H^2 (q, k, v, o) + 2 * 2 H^2 (FFN) = 8 H^2, two layers,
    plus the H^2 pooler: about 17 H^2 float32 values.
    """
    hidden = math.sqrt(target_mb * 1e6 / (17 * 4))
    return max(64, int(round(hidden / 64)) * 64)


def build_bert_encoder(path: str | Path, target_mb: float = 90, seed: int = 0) -> Path:
    """Write ``bert_encoder_dynamic.onnx`` widened to hidden H (FFN 2H) so the file is about ``target_mb`` MB."""
    hidden = bert_hidden_for(target_mb)
    model = onnx.load(str(MODELS_DIR / "bert_encoder_dynamic.onnx"))
    widths = {BERT_HIDDEN: hidden, BERT_FFN: 2 * hidden}
    rng = np.random.default_rng(seed)
    for name, tensor in _initializers(model).items():
        old = numpy_helper.to_array(tensor)
        if old.dtype != np.float32 or not any(d in widths for d in old.shape):
            continue
        shape = tuple(widths.get(d, d) for d in old.shape)
        if old.ndim == 1:  # LayerNorm scale / offset, biases: keep the value pattern
            new = np.resize(old, shape)
        else:
            new = rng.standard_normal(shape) * float(old.std()) * math.sqrt(old.shape[0] / shape[0])
        _replace(model, name, new)
    for vi in model.graph.output:
        for dim in vi.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value in widths:
                dim.dim_value = widths[dim.dim_value]
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        "onnx_builder": f"build_bert_encoder(target_mb={target_mb}, seed={seed})"})
    path = Path(path)
    onnx.save(model, str(path))
    return path
