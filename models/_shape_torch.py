"""Torch modules for ``generate_shape_models.py`` (imported only when torch is installed).

Each module re-types, from the public descriptions of the original code, the
forward pass whose export pattern a model reproduces: Ultralytics YOLOv8
(``Conv``, ``C2f``, ``Detect`` with DFL and ``make_anchors``), Swin
Transformer (Hugging Face ``SwinLayer`` padding / roll / window partition and
run-time shifted-window mask), and a Llama-style decoder with a KV cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------- YOLOv8


class Conv(nn.Module):
    """Ultralytics Conv: Conv2d(bias=False) -> BatchNorm2d -> SiLU (BN folded by the exporter)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c, c, 3)
        self.cv2 = Conv(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """cv1 -> chunk(2) (exports as Split) -> n Bottlenecks on the last piece -> Concat -> cv2."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over reg_max bins, then a fixed 1x1 Conv with weights arange(c1)."""

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(feats: list[torch.Tensor], strides: list[float], offset: float = 0.5) -> tuple[torch.Tensor, ...]:
    """Anchor centres and per-anchor strides from the feature maps' run-time shapes."""
    anchor_points, stride_tensor = [], []
    dtype = feats[0].dtype
    for i, stride in enumerate(strides):
        _, _, h, w = feats[i].shape
        sx = torch.arange(end=w, dtype=dtype) + offset
        sy = torch.arange(end=h, dtype=dtype) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        anchor_points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), stride, dtype=dtype))
    return torch.cat(anchor_points), torch.cat(stride_tensor)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor, dim: int = 1) -> torch.Tensor:
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)


class Detect(nn.Module):
    """YOLOv8 Detect head in export mode (dynamic=True: anchors rebuilt from shapes on every call)."""

    def __init__(self, nc: int, ch: tuple[int, ...], strides: tuple[float, ...], reg_max: int = 16,
                 box_width: int | None = None) -> None:
        super().__init__()
        self.nc, self.reg_max, self.nl = nc, reg_max, len(ch)
        self.no = nc + 4 * reg_max
        self.stride = list(strides)
        c2, c3 = box_width or max(16, ch[0] // 4, 4 * reg_max), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
                                 for x in ch)
        self.cv3 = nn.ModuleList(nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(reg_max)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        for i in range(self.nl):
            x[i] = torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1)
        shape = x[0].shape
        x_cat = torch.cat([xi.view(shape[0], self.no, -1) for xi in x], 2)
        anchors, strides = (t.transpose(0, 1) for t in make_anchors(x, self.stride, 0.5))
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        dbox = dist2bbox(self.dfl(box), anchors.unsqueeze(0), dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class TinyYOLOv8(nn.Module):
    """Backbone P1..P5 (strides 2..32) with C2f blocks; Detect on P3/P4/P5 (strides 8, 16, 32)."""

    def __init__(self, nc: int = 3) -> None:
        super().__init__()
        self.stem = Conv(3, 8, 3, 2)
        self.down2 = Conv(8, 16, 3, 2)
        self.c2f2 = C2f(16, 16)
        self.down3 = Conv(16, 24, 3, 2)
        self.c2f3 = C2f(24, 24)
        self.down4 = Conv(24, 32, 3, 2)
        self.c2f4 = C2f(32, 32)
        self.down5 = Conv(32, 48, 3, 2)
        self.c2f5 = C2f(48, 48)
        self.detect = Detect(nc, (24, 32, 48), (8.0, 16.0, 32.0), box_width=32)  # Ultralytics: 64, halved for size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.c2f2(self.down2(self.stem(images)))
        p3 = self.c2f3(self.down3(x))
        p4 = self.c2f4(self.down4(p3))
        p5 = self.c2f5(self.down5(p4))
        return self.detect([p3, p4, p5])


def randomize_batchnorm(module: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BN statistics and affine parameters so folding them into the Conv is visible."""
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
            n = m.weight.shape[0]
            m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(n, generator=gen))
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(n, generator=gen))


# --------------------------------------------------------------------------- Swin


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * H/ws * W/ws, ws, ws, C] (Reshape -> Transpose -> Reshape)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, h, w, c)


class WindowAttention(nn.Module):
    """Hugging Face SwinSelfAttention + SwinSelfOutput: separate q/k/v, relative position bias table Gather."""

    def __init__(self, dim: int, heads: int, ws: int) -> None:
        super().__init__()
        self.heads, self.head_dim, self.ws = heads, dim // heads, ws
        self.relative_position_bias_table = nn.Parameter(0.5 * torch.randn((2 * ws - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
        rel[:, :, 0] += ws - 1
        rel[:, :, 1] += ws - 1
        rel[:, :, 0] *= 2 * ws - 1
        self.register_buffer("relative_position_index", rel.sum(-1))
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.dense = nn.Linear(dim, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        n2 = self.ws * self.ws
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n2, n2, -1)
        scores = scores + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            scores = scores.view(bw // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            scores = scores.view(-1, self.heads, n, n)
        out = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).contiguous()
        return self.dense(out.view(bw, n, c))


class SwinLayer(nn.Module):
    """Hugging Face SwinLayer: LN -> pad to a window multiple -> roll -> window attention -> reverse -> crop."""

    def __init__(self, dim: int, heads: int, ws: int, shift: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.ws, self.shift = ws, shift
        self.layernorm_before = nn.LayerNorm(dim)
        self.attention = WindowAttention(dim, heads, ws)
        self.layernorm_after = nn.LayerNorm(dim)
        self.intermediate = nn.Linear(dim, mlp_ratio * dim)
        self.output = nn.Linear(mlp_ratio * dim, dim)

    def attn_mask(self, height: torch.Tensor, width: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Shifted-window mask built from the padded size at run time (HF get_attn_mask)."""
        img_mask = torch.zeros((1, height, width, 1), dtype=dtype)
        slices = (slice(0, -self.ws), slice(-self.ws, -self.shift), slice(-self.shift, None))
        count = 0
        for hs in slices:
            for wsl in slices:
                img_mask[:, hs, wsl, :] = count
                count += 1
        windows = window_partition(img_mask, self.ws).view(-1, self.ws * self.ws)
        mask = windows.unsqueeze(1) - windows.unsqueeze(2)
        return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)

    def forward(self, x: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        shortcut = x
        x = self.layernorm_before(x).view(b, h, w, c)
        pad_r, pad_b = (self.ws - w % self.ws) % self.ws, (self.ws - h % self.ws) % self.ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        _, hp, wp, _ = x.shape
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = window_partition(x, self.ws).view(-1, self.ws * self.ws, c)
        mask = self.attn_mask(hp, wp, x.dtype) if self.shift else None
        x = window_reverse(self.attention(windows, mask).view(-1, self.ws, self.ws, c), self.ws, hp, wp)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x[:, :h, :w, :].contiguous()
        x = shortcut + x.view(b, h * w, c)
        return x + self.output(F.gelu(self.intermediate(self.layernorm_after(x))))


class PatchMerging(nn.Module):
    """Pad H, W to even -> 4 strided Slices -> Concat -> LayerNorm -> Linear(4C -> 2C, no bias)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, _, c = x.shape
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]], -1)
        _, h2, w2, _ = x.shape
        return self.reduction(self.norm(x.view(b, -1, 4 * c))), h2, w2


class Swin(nn.Module):
    """Patch embed (run-time Pad to a patch multiple) -> stages of SwinLayers (+ PatchMerging) -> LN -> mean -> head."""

    def __init__(self, embed: int, depths: tuple[int, ...], heads: tuple[int, ...], ws: int = 7, patch: int = 4,
                 classes: int = 10) -> None:
        super().__init__()
        self.patch = patch
        self.patch_embed = nn.Conv2d(3, embed, patch, patch)
        self.embed_norm = nn.LayerNorm(embed)
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        dim = embed
        for i, (depth, nh) in enumerate(zip(depths, heads)):
            self.stages.append(nn.ModuleList(SwinLayer(dim, nh, ws, 0 if j % 2 == 0 else ws // 2)
                                             for j in range(depth)))
            if i < len(depths) - 1:
                self.merges.append(PatchMerging(dim))
                dim *= 2
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        _, _, hh, ww = pixel_values.shape
        x = F.pad(pixel_values, (0, (self.patch - ww % self.patch) % self.patch,
                                 0, (self.patch - hh % self.patch) % self.patch))
        x = self.patch_embed(x)
        _, _, h, w = x.shape
        x = self.embed_norm(x.flatten(2).transpose(1, 2))
        for i, stage in enumerate(self.stages):
            for layer in stage:
                x = layer(x, h, w)
            if i < len(self.merges):
                x, h, w = self.merges[i](x, h, w)
        return self.head(self.norm(x).mean(1))


# --------------------------------------------------------------------------- Llama-style decoder with KV cache


class RMSNorm(nn.Module):
    """HF LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * weight (Pow/ReduceMean/Add/Sqrt/Div/Mul/Mul)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaAttention(nn.Module):
    """GQA: q heads share kv heads through repeat_kv (Unsqueeze/Expand/Reshape); KV cache Concat on axis 2."""

    def __init__(self, hidden: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)

    def repeat_kv(self, x: torch.Tensor) -> torch.Tensor:
        b, kv, s, d = x.shape
        rep = self.heads // self.kv_heads
        return x[:, :, None, :, :].expand(b, kv, rep, s, d).reshape(b, kv * rep, s, d)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past_k: torch.Tensor, past_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
        scores = self.repeat_kv(k).transpose(2, 3)
        scores = torch.matmul(q, scores) / math.sqrt(self.head_dim) + mask
        out = torch.matmul(scores.softmax(-1), self.repeat_kv(v))
        out = out.transpose(1, 2).reshape(b, s, self.heads * self.head_dim)
        return self.o_proj(out), k, v


class LlamaLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, inter: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(hidden)
        self.self_attn = LlamaAttention(hidden, heads, kv_heads)
        self.post_attention_layernorm = RMSNorm(hidden)
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                past_k: torch.Tensor, past_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn, k, v = self.self_attn(self.input_layernorm(x), cos, sin, mask, past_k, past_v)
        x = x + attn
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h)), k, v


def causal_mask(seq: torch.Tensor, past: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """HF _make_causal_mask (transformers 4.3x): full(min) masked below the diagonal, zeros for the past."""
    mask = torch.full((seq, seq), torch.finfo(dtype).min)
    cond = torch.arange(mask.size(-1))
    mask = mask.masked_fill(cond < (cond + 1).view(mask.size(-1), 1), 0.0)
    mask = torch.cat([torch.zeros(seq, past, dtype=dtype), mask], dim=-1)
    return mask[None, None, :, :]


class LlamaDecoder(nn.Module):
    """forward(input_ids, past_0.key, past_0.value, ...) -> (logits, present_0.key, present_0.value, ...)."""

    def __init__(self, vocab: int = 256, hidden: int = 128, heads: int = 4, kv_heads: int = 2, inter: int = 256,
                 layers: int = 2, theta: float = 10000.0) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.layers = nn.ModuleList(LlamaLayer(hidden, heads, kv_heads, inter) for _ in range(layers))
        self.norm = RMSNorm(hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        head_dim = hidden // heads
        self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim),
                             persistent=False)

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, s = input_ids.shape
        past_len = past[0].shape[2]
        positions = torch.arange(past_len, past_len + s).unsqueeze(0)  # [1, S]
        freqs = positions[:, :, None].float() * self.inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]  # [1, 1, S, D]
        x = self.embed_tokens(input_ids)
        mask = causal_mask(s, past_len, x.dtype)
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            x, k, v = layer(x, cos, sin, mask, past[2 * i], past[2 * i + 1])
            presents += [k, v]
        return (self.lm_head(self.norm(x)), *presents)


def randomize_rmsnorm(module: nn.Module, gen: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, RMSNorm):
            m.weight.data.copy_(0.5 + torch.rand(m.weight.shape[0], generator=gen))
