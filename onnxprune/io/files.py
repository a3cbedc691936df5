"""Model files in and out: the one place the rest of onnxprune imports loading, saving and hashing from.

Why a front module over three: every caller wants "the file functions", while each job has its own
module and reasons -- :mod:`onnxprune.io.loading` (a model file is untrusted input: every external-data
reference is checked before anything is opened), :mod:`onnxprune.io.saving` (atomic writes, external
data beyond 2 GiB, provenance) and :mod:`onnxprune.io.hashing` (what ties plans and reports to a model);
:mod:`onnxprune.io.model_parts` walks a model's tensors and splits its payloads for all three.
"""

from __future__ import annotations

from onnxprune.io.hashing import file_sha256, hash_weights, model_sha256, start_hashing
from onnxprune.io.loading import load_model
from onnxprune.io.model_parts import PROTOBUF_LIMIT_BYTES
from onnxprune.io.saving import (AUTO_EXTERNAL_BYTES, EXTERNAL_MIN_TENSOR_BYTES, add_provenance, save_model, write_bytes,
                                 write_json, write_text)

__all__ = [
    "AUTO_EXTERNAL_BYTES",
    "EXTERNAL_MIN_TENSOR_BYTES",
    "PROTOBUF_LIMIT_BYTES",
    "add_provenance",
    "file_sha256",
    "hash_weights",
    "load_model",
    "model_sha256",
    "save_model",
    "start_hashing",
    "write_bytes",
    "write_json",
    "write_text",
]
