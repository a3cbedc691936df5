"""What zeros are worth on disk: the compressed size of a written model, and ONNX ``sparse_initializer`` output.

Why both: a dense file full of zeros is as large as before, but it compresses (gzip finds the runs of
zero bytes), which is what a download or a container layer pays.  ONNX can also store a weight as a
``SparseTensorProto`` (values + int64 positions); with 8-byte indices that is smaller than the dense
float32 array only above 2/3 sparsity, so a weight is converted only where it is smaller.
onnxruntime densifies sparse initializers when it loads the model, so this saves disk, never time.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from onnxprune.io.weights import in_file_stub, to_array

GZIP_LEVEL = 6
_READ = 1 << 20


def gzip_size(paths: Iterable[str | os.PathLike[str]], level: int = GZIP_LEVEL) -> int:
    """Bytes of the files gzip-compressed (one stream over all, streamed: memory stays at one chunk)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(_READ):
                total += len(compressor.compress(chunk))
    return total + len(compressor.flush())


def model_files(path: str | os.PathLike[str], model: onnx.ModelProto) -> list[str]:
    """The ``.onnx`` file and the external data files it names (``model`` is the proto that was loaded from or
    saved to ``path``; its stubs do not name files, so the file's own header is read, without the data)."""
    external = any(init.data_location == onnx.TensorProto.EXTERNAL and not in_file_stub(init)
                   for init in model.graph.initializer)
    files = [os.fspath(path)]
    if not external:
        return files
    folder = os.path.dirname(os.path.abspath(path))
    for init in onnx.load(os.fspath(path), load_external_data=False).graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                candidate = os.path.join(folder, entry.value)
                if candidate not in files and os.path.isfile(candidate):
                    files.append(candidate)
    return files


def sparse_bytes(nonzeros: int, itemsize: int) -> int:
    """Payload of a SparseTensorProto with linear int64 indices."""
    return nonzeros * (itemsize + 8)


def to_sparse_initializers(model: onnx.ModelProto, names: Iterable[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` in which each named initializer that is smaller sparse is a ``sparse_initializer``.

    Returns the model and the names converted.  Indices are linear positions (ONNX allows ``[NNZ]``).
    """
    wanted = set(names)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep, converted = [], []
    for init in out.graph.initializer:
        if init.name not in wanted:
            keep.append(init)
            continue
        dense = np.asarray(to_array(init))
        flat = dense.ravel()
        positions = np.flatnonzero(flat)
        if sparse_bytes(positions.size, dense.itemsize) >= dense.nbytes:
            keep.append(init)
            continue
        values = numpy_helper.from_array(np.ascontiguousarray(flat[positions]), init.name)
        indices = numpy_helper.from_array(positions.astype(np.int64), f"{init.name}_indices")
        out.graph.sparse_initializer.append(onnx.helper.make_sparse_tensor(values, indices, list(dense.shape)))
        converted.append(init.name)
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    return out, converted
