"""Generate small transformer and RNN test models (random, seeded weights).

Run from the repository root:  python models/generate_transformer_models.py

Needs torch (2.13.0, CPU). Every model is exported with the TorchScript
exporter (``torch.onnx.export(..., dynamo=False)``, constant folding on) at
opset 17 in two variants:

* ``<name>_static.onnx``: every input and output dim fixed (batch 2, the
  export sequence length);
* ``<name>_dynamic.onnx``: ``dynamic_axes`` batch ``N`` and sequence ``S``
  (``vit_classifier``: batch only; the image size is fixed).

Each file is full-checked, then run in onnxruntime (with and without graph
optimizations) and compared with torch (rtol 1e-4, atol 1e-5): the static
variant on the export shapes, the dynamic variant on several batch sizes and
sequence lengths that differ from the export shapes. The manifest records,
besides the op histogram, how the exporter wrote the shape-dependent parts
(``export_forms``): whether each Reshape/Expand/Slice target is a constant or
computed at run time from ``Shape``, whether LayerNormalization is one op, how
GELU is spelled, and which initializers feed more than one node.

LayerNorm affine parameters are randomised (seeded) so that they are not
identities.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

import _common as C

GENERATOR = "generate_transformer_models.py"
SEED = 4321
BATCH, SEQ = 2, 8  # export shapes (the static variants keep them)
MAX_POS = 16  # position tables / causal mask size; the longest sequence the models accept
VOCAB = 100
RNN_VOCAB = 64


# --------------------------------------------------------------------------- helpers


def randomize_norms(module: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial LayerNorm affine params (default init is weight 1, bias 0)."""
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            n = m.normalized_shape[0]
            m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=gen))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, H*D] -> [B, H, S, D] with B and S read from the tensor (runtime sizes in the trace)."""
    b, s, hidden = x.shape
    return x.view(b, s, heads, hidden // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, S, D] -> [B, S, H*D]."""
    b, h, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, h * d)


class SelfAttention(nn.Module):
    """Separate nn.Linear Q/K/V/O projections, scaled dot product, optional additive mask."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = math.sqrt(hidden // heads)
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.o = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor | None = None) -> torch.Tensor:
        q = split_heads(self.q(x), self.heads)
        k = split_heads(self.k(x), self.heads)
        v = split_heads(self.v(x), self.heads)
        scores = q @ k.transpose(-1, -2) / self.scale
        if additive_mask is not None:
            scores = scores + additive_mask
        probs = torch.softmax(scores, dim=-1)
        return self.o(merge_heads(probs @ v))


# --------------------------------------------------------------------------- 1 bert_encoder


class BertLayer(nn.Module):
    """Post-LN: LN(x + Attn(x)), LN(x + FFN(x)); FFN Linear -> GELU(erf) -> Linear."""

    def __init__(self, hidden: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attn = SelfAttention(hidden, heads)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.act = nn.GELU()
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attn(x, additive_mask))
        return self.ln2(x + self.ffn_out(self.act(self.ffn_in(x))))


class BertEncoder(nn.Module):
    def __init__(self, hidden: int = 32, heads: int = 4, ffn: int = 64, layers: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.word_emb = nn.Embedding(VOCAB, hidden)
        self.pos_emb = nn.Embedding(MAX_POS, hidden)
        self.register_buffer("position_ids", torch.arange(MAX_POS).unsqueeze(0), persistent=False)
        self.emb_ln = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, ffn) for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = input_ids.shape[1]
        x = self.word_emb(input_ids) + self.pos_emb(self.position_ids[:, :s])
        x = self.emb_ln(x)
        additive_mask = (1 - attention_mask[:, None, None, :]) * -1e4
        for layer in self.layers:
            x = layer(x, additive_mask)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        return x, self.classifier(pooled)


# --------------------------------------------------------------------------- 2 vit_classifier


class PreLNBlock(nn.Module):
    """Pre-LN: x + Attn(LN(x)), x + MLP(LN(x)); MLP Linear -> GELU -> Linear."""

    def __init__(self, hidden: int, heads: int, ffn: int, gelu: nn.Module) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = SelfAttention(hidden, heads)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, ffn)
        self.act = gelu
        self.fc2 = nn.Linear(ffn, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


class ViT(nn.Module):
    def __init__(self, hidden: int = 48, heads: int = 3, ffn: int = 96, patch: int = 8, layers: int = 2,
                 classes: int = 10) -> None:
        super().__init__()
        tokens = (32 // patch) ** 2 + 1
        self.patch_embed = nn.Conv2d(3, hidden, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(0.5 * torch.randn(1, 1, hidden))
        self.pos_embed = nn.Parameter(0.5 * torch.randn(1, tokens, hidden))
        self.blocks = nn.ModuleList(PreLNBlock(hidden, heads, ffn, nn.GELU()) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, 16, hidden]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


# --------------------------------------------------------------------------- 3 gpt_block


class CausalSelfAttention(nn.Module):
    """GPT-2 form: one fused c_attn Linear(h, 3h) split into Q/K/V, triu mask buffer, c_proj."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads, self.hidden = heads, hidden
        self.c_attn = nn.Linear(hidden, 3 * hidden)
        self.c_proj = nn.Linear(hidden, hidden)
        self.register_buffer("causal", torch.triu(torch.ones(MAX_POS, MAX_POS, dtype=torch.bool), diagonal=1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[1]
        q, k, v = self.c_attn(x).split(self.hidden, dim=2)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.hidden // self.heads)
        scores = scores.masked_fill(self.causal[:s, :s], float("-inf"))
        return self.c_proj(merge_heads(torch.softmax(scores, dim=-1) @ v))


class GPTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads)
        self.ln_2 = nn.LayerNorm(hidden)
        self.c_fc = nn.Linear(hidden, ffn)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(ffn, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(self.act(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, hidden: int = 64, heads: int = 2, ffn: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCAB, hidden)
        self.wpe = nn.Embedding(MAX_POS, hidden)
        self.h = nn.ModuleList(GPTBlock(hidden, heads, ffn) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden)
        self.lm_head = nn.Linear(hidden, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight  # tied

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        s = input_ids.shape[1]
        pos = torch.arange(s, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# --------------------------------------------------------------------------- 4 torch_transformer_encoder


class TorchEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 5)
        # TransformerEncoder deep-copies `layer`, so both layers start with identical weights (and the exporter
        # would then deduplicate them into shared initializers). Re-initialise each layer separately, and give
        # the attention biases (zero-initialised by MultiheadAttention) random values.
        with torch.no_grad():
            for enc_layer in self.encoder.layers:
                enc_layer.self_attn._reset_parameters()  # in_proj weight; does not touch out_proj.weight
                enc_layer.self_attn.out_proj.reset_parameters()
                enc_layer.self_attn.in_proj_bias.normal_(0.0, 0.1)
                enc_layer.self_attn.out_proj.bias.normal_(0.0, 0.1)
                enc_layer.linear1.reset_parameters()
                enc_layer.linear2.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


# --------------------------------------------------------------------------- 5/6 rnns


class LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(RNN_VOCAB, 16)
        self.lstm = nn.LSTM(16, 24, num_layers=1, batch_first=True)
        self.fc = nn.Linear(24, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.lstm(self.emb(input_ids))
        return self.fc(h_n[-1])


class BiGRUClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(RNN_VOCAB, 16)
        self.gru = nn.GRU(16, 20, num_layers=1, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(40, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        _, h_n = self.gru(self.emb(input_ids))  # [2, B, 20]: forward, backward
        return self.fc(torch.cat([h_n[0], h_n[1]], dim=1))


# --------------------------------------------------------------------------- feeds


def ids_feed(vocab: int) -> Callable[[np.random.Generator, int, int], dict[str, np.ndarray]]:
    def make(rng: np.random.Generator, b: int, s: int) -> dict[str, np.ndarray]:
        return {"input_ids": rng.integers(0, vocab, size=(b, s)).astype(np.int64)}

    return make


def bert_feed(rng: np.random.Generator, b: int, s: int) -> dict[str, np.ndarray]:
    """Random ids; right padding with a random length >= 1 per row (row 0 unpadded)."""
    lengths = rng.integers(1, s + 1, size=b)
    lengths[0] = s
    mask = (np.arange(s)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": rng.integers(0, VOCAB, size=(b, s)).astype(np.int64), "attention_mask": mask}


def image_feed(rng: np.random.Generator, b: int, s: int) -> dict[str, np.ndarray]:
    del s
    return {"input": rng.standard_normal((b, 3, 32, 32)).astype(np.float32)}


def float_seq_feed(rng: np.random.Generator, b: int, s: int) -> dict[str, np.ndarray]:
    return {"input": rng.standard_normal((b, s, 32)).astype(np.float32)}


# --------------------------------------------------------------------------- export + analysis


def export(module: nn.Module, example: dict[str, torch.Tensor], output_names: Sequence[str],
           dynamic_axes: dict[str, dict[int, str]] | None, opset: int = C.OPSET) -> onnx.ModelProto:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(example.values()),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=list(example),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buf.getvalue())


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _ancestry(model: onnx.ModelProto, name: str) -> tuple[str, list[str]]:
    """('constant' | 'runtime' | 'input', op types of the subgraph computing ``name``).

    Walks back through producers; stops at initializers, graph inputs and Shape
    nodes (whose input is data, not shape arithmetic).
    """
    prod = _producers(model)
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input} - inits
    ops: set[str] = set()
    kind = "constant"
    stack, seen = [name], set()
    while stack:
        t = stack.pop()
        if t in seen or t == "" or t in inits:
            continue
        seen.add(t)
        if t in graph_inputs:
            kind = "input"
            continue
        node = prod.get(t)
        if node is None:
            continue
        ops.add(node.op_type)
        if node.op_type == "Shape":
            if kind == "constant":
                kind = "runtime"
            continue
        stack.extend(node.input)
    return kind, sorted(ops)


def export_forms(model: onnx.ModelProto) -> dict[str, Any]:
    """How the exporter wrote the shape-dependent and fusable parts of the graph."""
    ops = C.op_histogram(model)
    forms: dict[str, Any] = {}
    # shape operands: Reshape shape, Expand shape, Slice starts/ends, Range limit, ConstantOfShape input
    operand = {"Reshape": [1], "Expand": [1], "Slice": [1, 2], "Range": [1], "ConstantOfShape": [0], "Tile": [1]}
    for op, positions in operand.items():
        kinds: dict[str, int] = {}
        via: set[str] = set()
        for node in model.graph.node:
            if node.op_type != op:
                continue
            ks = []
            for p in positions:
                if p < len(node.input):
                    k, anc = _ancestry(model, node.input[p])
                    ks.append(k)
                    if k != "constant":
                        via.update(anc)
            k = "runtime" if "runtime" in ks else ("input" if "input" in ks else "constant")
            kinds[k] = kinds.get(k, 0) + 1
        if kinds:
            forms[f"{op}_shape_operand"] = {"counts": dict(sorted(kinds.items())),
                                            **({"runtime_ops": sorted(via)} if via else {})}
    if "LayerNormalization" in ops:
        forms["layernorm"] = f"LayerNormalization single op x{ops['LayerNormalization']}"
    elif "ReduceMean" in ops and "Sqrt" in ops:
        forms["layernorm"] = "decomposed ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div"
    if "Erf" in ops:
        forms["gelu"] = "exact: Div(sqrt2)/Erf/Add/Mul/Mul"
    elif any(n.op_type == "Tanh" and "/act/" in n.name for n in model.graph.node):
        forms["gelu"] = ("tanh approximation: x*x*x as two Muls, Mul(0.044715), Add, Mul(sqrt(2/pi)), Tanh, "
                         "Add(1), Mul(x), Mul(0.5)")
    fused = sorted(op for op in ops if op in {"Attention", "MultiHeadAttention", "LSTM", "GRU", "RNN",
                                               "LayerNormalization", "Gelu", "Einsum"})
    forms["single_op_blocks"] = fused
    forms["shape_nodes"] = ops.get("Shape", 0)
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    init_names = {i.name for i in model.graph.initializer}
    forms["gather_on_initializer"] = sorted(
        n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in init_names
    )
    shared = sorted(i.name for i in model.graph.initializer if uses.get(i.name, 0) > 1 and len(i.dims) > 1)
    if shared:
        forms["shared_weight_initializers"] = shared
    for node in model.graph.node:
        if node.op_type in ("GRU", "LSTM"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
            attrs = {k: ([x.decode() if isinstance(x, bytes) else x for x in v] if isinstance(v, list) else v)
                     for k, v in attrs.items()}
            forms[f"{node.op_type}_attributes"] = dict(sorted(attrs.items()))
            forms[f"{node.op_type}_inputs"] = [
                ("" if not n else ("initializer" if n in {i.name for i in model.graph.initializer}
                                   else _producers(model)[n].op_type if n in _producers(model) else "graph input"))
                for n in node.input
            ]
    return forms


def check_and_compare(path: Path, module: nn.Module, make_feed: Callable, cases: Sequence[tuple[int, int]],
                      seed: int) -> None:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    sessions = []
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = level
        opts.intra_op_num_threads = 1
        sessions.append(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]))
    rng = np.random.default_rng(seed)
    for b, s in cases:
        feed = make_feed(rng, b, s)
        with torch.no_grad():
            want = module(*(torch.from_numpy(v) for v in feed.values()))
        want = [w.numpy() for w in (want if isinstance(want, tuple) else (want,))]
        for sess in sessions:
            got = sess.run(None, feed)
            for meta, g, w in zip(sess.get_outputs(), got, want):
                assert g.shape == w.shape, (path.name, meta.name, g.shape, w.shape)
                assert np.all(np.isfinite(g)), (path.name, meta.name)
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"{path.name}:{meta.name} B={b} S={s}")


# --------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Spec:
    name: str
    build: Callable[[], nn.Module]
    feed: Callable[[np.random.Generator, int, int], dict[str, np.ndarray]]
    outputs: tuple[str, ...]
    exercises: str
    seq_dynamic: bool = True  # False: only the batch axis is dynamic
    seq_outputs: tuple[str, ...] = ()  # outputs that carry the sequence axis (dim 1)
    notes: str = ""  # export caveats, recorded in the manifest


TTE_NOTES = (
    "Fast path: under torch.no_grad() an eval TransformerEncoderLayer dispatches to "
    "aten::_transformer_encoder_layer_fwd, which the TorchScript exporter rejects (UnsupportedOperatorError at "
    "opset 17); the generator calls torch.backends.mha.set_fastpath_enabled(False) and builds the encoder with "
    "enable_nested_tensor=False, so F.multi_head_attention_forward is traced (no fused attention op in the file). "
    "Sequence length: the TorchScript exporter bakes the export-time sequence length (8) into the attention "
    "Reshape shapes (q.view(tgt_len, bsz*heads, head_dim) gets a constant tgt_len; pytorch/pytorch#110347, "
    "#117209), so a dim_param on the sequence axis would fail at run time for S != 8; the dynamic variant is "
    "therefore dynamic in the batch axis N only."
)

SPECS: tuple[Spec, ...] = (
    Spec("bert_encoder", BertEncoder, bert_feed, ("last_hidden_state", "logits"), seq_outputs=("last_hidden_state",),
         exercises=
         "BERT-style post-LN encoder, hidden 32, 4 heads x 8, FFN 64, 2 layers, vocab 100, 16 positions. "
         "word_emb Gather + pos_emb Gather (indices = position_ids buffer sliced [:, :S]: a Constant in the static "
         "file, a Slice with a Shape-computed end in the dynamic one) -> Add -> embedding LayerNormalization; "
         "separate Q/K/V/O nn.Linear as MatMul([in,out] initializer onnx::MatMul_*) + Add(bias); head split "
         "x.view(B,S,H,D).transpose(1,2) as Reshape -> Transpose(0,2,1,3); scores MatMul(q, Transpose(k)) -> "
         "Div(sqrt(D)); additive padding mask (1 - attention_mask[:,None,None,:]) * -1e4 from the int64 input as "
         "Unsqueeze x2 -> Sub -> Cast(float) -> Mul, Add onto the scores; Softmax(-1); MatMul(probs, v); merge "
         "Transpose(0,2,1,3) -> Reshape(B,S,H*D); o projection; residual Add + LayerNormalization; FFN "
         "MatMul -> exact GELU (Div/Erf/Add/Mul/Mul) -> MatMul; residual Add + LayerNormalization. The final "
         "hidden states are graph output last_hidden_state AND feed the pooler: Gather(index 0, axis 1) -> "
         "Gemm -> Tanh -> Gemm classifier -> logits [B,3]. Head Reshape targets: 8 constants in the static file, "
         "8 Shape->Gather->Unsqueeze->Concat (with Div/Mul for hidden//heads, H*D) subgraphs in the dynamic file."),
    Spec("vit_classifier", ViT, image_feed, ("logits",), seq_dynamic=False, exercises=
         "ViT-style pre-LN classifier, hidden 48, 3 heads x 16, FFN 96, 2 blocks: patch embedding Conv(3->48, "
         "8x8, stride 8) on 3x32x32 -> flatten(2) as Reshape whose shape comes from Shape(conv)->Slice->Concat "
         "(also in the static file) -> Transpose(0,2,1) -> Concat(axis 1) after the class token Parameter "
         "[1,1,48] Expanded to the batch (Expand shape: an unfolded constant-only ConstantOfShape/Mul/Equal/Where "
         "subgraph in the static file, Shape-computed in the dynamic one) -> Add position embedding [1,17,48]; "
         "blocks x + Attn(LN(x)), x + MLP(LN(x)) with separate Q/K/V/O MatMul+Add, Reshape->Transpose head "
         "split, Div(sqrt(16)), no mask, exact GELU (Erf); final LayerNormalization -> Gather(class token, "
         "axis 1) -> Gemm head [B,10]. Conv output channels are the token hidden dim. Only the batch axis is "
         "dynamic."),
    Spec("gpt_block", GPT, ids_feed(VOCAB), ("logits",), seq_outputs=("logits",), exercises=
         "GPT-2-style decoder, hidden 64, 2 heads x 32, FFN 128, 2 pre-LN blocks, vocab 100, 16 positions, "
         "no KV cache: token Gather(wte) + position Gather(wpe, Range(0,S)); fused QKV c_attn Linear(64,192) as "
         "MatMul+Add -> Split(3 x 64, axis -1) -> Reshape->Transpose heads; scores Div(sqrt(32)); causal mask "
         "= bool triu buffer applied with masked_fill(-inf) as Where(mask, -inf, scores); Softmax; c_proj; FFN "
         "c_fc -> tanh-GELU (nn.GELU(approximate='tanh') as Mul(x,x), Mul(.,x), Mul(0.044715), Add, "
         "Mul(sqrt(2/pi)), Tanh, Add(1), Mul(x), Mul(0.5)) -> c_proj; final LayerNormalization; LM head "
         "MatMul -> logits [B,S,100]. The LM head is tied to wte in torch, but constant folding writes its "
         "transposed weight as a separate initializer onnx::MatMul_* [64,100] (= wte.weight.T), so the file has "
         "no shared tensor. Static file: the position embedding Gather over a constant Range is folded away "
         "(wpe.weight is replaced by a [8,64] initializer added to the token embeddings) and the causal mask is "
         "a Constant bool [8,8]. Dynamic file: Range(0, Shape-computed S), the [16,16] mask is a Constant "
         "sliced twice (Slice ends from Shape) then Cast to bool, head Reshape targets built at run time."),
    Spec("torch_transformer_encoder", TorchEncoder, float_seq_feed, ("output",), seq_dynamic=False, notes=TTE_NOTES,
         exercises=
         "torch.nn.TransformerEncoder(TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, "
         "batch_first=True, dropout=0.0), num_layers=2, enable_nested_tensor=False) (post-LN, ReLU FFN; each "
         "layer re-initialised so the deep-copied layers differ, attention biases random) on a float input "
         "[B,8,32], Linear head -> [B,8,5]. Exported through F.multi_head_attention_forward (no fused attention "
         "op): Transpose(1,0,2) to sequence-first; fused in_proj MatMul([32,96] initializer) + Add(in_proj_bias); "
         "unflatten(-1,(3,32)) as Reshape with a shape computed from Shape/Mod/Slice/Concat (in the static "
         "file too) -> Unsqueeze(0) -> Transpose(3,1,2,0,4) -> Squeeze -> Gather(0/1/2, axis 0) = Q/K/V; each "
         "Reshape [S,B*H,D] -> Transpose -> Reshape [B,H,S,D]; SDPA decomposed: scale 1/sqrt(D) computed "
         "from Shape->Slice->Cast->Sqrt->Div, and Sqrt(scale) multiplied onto q and onto Transpose(k) (Mul x2), "
         "MatMul, Softmax, MatMul; Transpose(2,0,1,3) -> Reshape [S*B,32] -> out_proj Gemm(transB=1, "
         "[32,32] weight) -> Reshape [S,B,32] -> Transpose back; residual Add + LayerNormalization; linear1 "
         "MatMul+Add -> Relu -> linear2 MatMul+Add; residual Add + LayerNormalization. The sequence length is "
         "fixed (see notes)."),
    Spec("lstm_classifier", LSTMClassifier, ids_feed(RNN_VOCAB), ("logits",), exercises=
         "Embedding(64,16) Gather -> Transpose(1,0,2) (batch_first) -> one ONNX LSTM op (hidden 24, forward, "
         "W [1,96,16], R [1,96,24], B [1,192] initializers in ONNX gate order i,o,f,c; sequence_lens empty; "
         "zero initial_h/initial_c built from the batch size at run time: ConstantOfShape(Shape->Gather->"
         "Unsqueeze->Concat) in the dynamic file, Expand of a zero Constant in the static file) -> Y_h -> "
         "Gather(0, axis 0) (h_n[-1]) -> Gemm [B,4]."),
    Spec("bigru_classifier", BiGRUClassifier, ids_feed(RNN_VOCAB), ("logits",), exercises=
         "Embedding(64,16) Gather -> Transpose(1,0,2) -> one ONNX GRU op, direction bidirectional, hidden 20, "
         "linear_before_reset=1, W [2,60,16], R [2,60,20], B [2,120] initializers in ONNX gate order z,r,h; "
         "zero initial_h from the batch size (ConstantOfShape dynamic / Expand static) -> Y_h [2,B,20] -> "
         "Gather(0) and Gather(1) (forward and backward final states) -> Concat(axis 1) [B,40] -> Gemm [B,4]."),
)  # fmt: skip


def build_one(spec: Spec) -> list[dict]:
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    module = spec.build()
    with torch.no_grad():
        randomize_norms(module, gen)
    module.eval()
    example = {k: torch.from_numpy(v) for k, v in spec.feed(np.random.default_rng(SEED), BATCH, SEQ).items()}
    entries = []
    for variant in ("static", "dynamic"):
        name = f"{spec.name}_{variant}"
        if variant == "static":
            dyn = None
            cases = [(BATCH, SEQ)]
        else:
            axes = {0: C.BATCH_AXIS, 1: "S"} if spec.seq_dynamic else {0: C.BATCH_AXIS}
            dyn = {k: dict(axes) for k in example}
            for out in spec.outputs:  # [B,S,...] outputs get both axes; pooled/classifier outputs [B,k] only N
                dyn[out] = dict(axes) if out in spec.seq_outputs else {0: C.BATCH_AXIS}
            cases = [(3, 5), (1, 12), (4, MAX_POS)] if spec.seq_dynamic else [(1, SEQ), (3, SEQ), (5, SEQ)]
        model = export(module, example, spec.outputs, dyn)
        forms = export_forms(model)
        doc = f"{spec.exercises} Variant: {variant}."
        path = C.save_model(model, name, doc=doc, generator=GENERATOR)
        check_and_compare(path, module, spec.feed, cases, seed=SEED + 1)
        C.report(name, path, C.op_histogram(model))
        assert path.stat().st_size < 500 * 1024, (name, path.stat().st_size)
        extra = {
            "family": spec.name,
            "variant": variant,
            "verified_shapes": [list(c) for c in cases] if spec.seq_dynamic else [[c[0]] for c in cases],
            "export_forms": forms,
        }
        if spec.notes:
            extra["notes"] = spec.notes
        entries.append(C.manifest_entry(name, path, source="pytorch", exporter=C.torch_exporter_string(),
                                        exercises=doc, generator=GENERATOR, frameworks=("torch",), extra=extra))
    return entries


def main() -> None:
    torch.set_num_threads(1)
    torch.backends.mha.set_fastpath_enabled(False)  # TransformerEncoderLayer: take the exportable slow path
    entries = [e for spec in SPECS for e in build_one(spec)]
    C.update_manifest(entries)


if __name__ == "__main__":
    main()
