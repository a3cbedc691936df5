"""Child side of :mod:`onnxprune.io.isolation`: the ONNX checker and one onnxruntime session on model files.

Run as a script, never imported by onnxprune itself::

    python -c "<boot>" .../onnxprune/isolation_child.py '{"models": [...], "check": [...], "checker": true, "onnxruntime": true}'

``check`` lists, per model, the file the checker reads: the graph the parent's own checker will judge
(weights as typed inputs; ``null`` for the model file itself).  onnxruntime always opens the model file.

Why a standalone script: a child that imported the ``onnxprune`` package would pay for its whole
import (graphsurgeon, the pipeline) before doing anything; this one imports only what its stages use
(``onnx`` for the checker, ``onnxruntime`` and ``numpy`` for the session), each only when asked for.
The boot line drops ``sys.path[0]`` first so nothing in the working directory or in this folder
(``onnxprune/io/files.py``, ``statistics.py``...) can shadow a standard module.

Protocol: one line per event on stdout, ``@@onnxprune-isolation {json}`` with ``model`` (index),
``stage`` (``checker`` | ``session`` | ``run``) and ``status`` (``start`` | ``ok`` | ``error`` |
``skipped``, with a one-line ``message``), then ``{"status": "done"}``.  A stage that raises is an
*answer* (the parent's own in-process code will meet the same error and report it its usual way);
only a child that dies or hangs is the parent's business.  The parent reads the last ``start``
without an ``ok``/``error`` to name the stage that crashed.
"""

from __future__ import annotations

import faulthandler
import json
import signal
import sys
from typing import Any, Callable

MARK = "@@onnxprune-isolation "
#: Random inputs above this many elements (per input) are not built: the run stage is skipped.
MAX_FEED_ELEMENTS = 1 << 27
_NUMPY_OF_ORT = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16", "tensor(int8)": "int8",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64", "tensor(bool)": "bool",
}  # fmt: skip


class Skip(Exception):
    """A stage that cannot be attempted (e.g. inputs of a type random data cannot stand for)."""


def emit(**event: Any) -> None:
    sys.stdout.write(MARK + json.dumps(event) + "\n")
    sys.stdout.flush()  # the parent must see "start" before a crash


def stage(model: int, name: str, action: Callable[[], Any]) -> tuple[bool, Any]:
    """Run one stage between ``start`` and its outcome; (succeeded, value)."""
    emit(model=model, stage=name, status="start")
    try:
        value = action()
    except Skip as reason:
        emit(model=model, stage=name, status="skipped", message=str(reason))
        return False, None
    except Exception as err:  # noqa: BLE001 - any Python-level failure is an answer, not a crash
        text = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        emit(model=model, stage=name, status="error", message=text)
        return False, None
    emit(model=model, stage=name, status="ok")
    return True, value


def check(path: str) -> None:
    """``onnx.checker.check_model(path, full_check=True)``: by path, so external data and >2 GB models work."""
    checker = _native_checker()
    if checker is not None:
        checker.check_model_path(path, True, False, False)  # full_check, opset compatibility, custom domains
        return
    import onnx

    onnx.checker.check_model(path, full_check=True)


def _native_checker() -> Any:
    """onnx's C++ checker module without ``import onnx`` (which pulls in numpy and onnx.helper: most of a
    checker-only child's start-up); None when this onnx is not laid out as expected (then import onnx)."""
    import importlib.machinery
    import importlib.util
    import pathlib

    name = "onnx.onnx_cpp2py_export"
    try:
        found = importlib.util.find_spec("onnx")
        folder = pathlib.Path(found.origin).parent if found is not None and found.origin else None
        libraries = sorted(folder.glob("onnx_cpp2py_export.*.so")) if folder is not None else []
        if len(libraries) != 1 or name in sys.modules:
            return sys.modules[name].checker if name in sys.modules else None
        loader = importlib.machinery.ExtensionFileLoader(name, str(libraries[0]))
        module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, libraries[0],
                                                                                        loader=loader))
        loader.exec_module(module)
        sys.modules[name] = module  # a later ``import onnx`` reuses it instead of loading it twice
        checker = module.checker
        return checker if callable(getattr(checker, "check_model_path", None)) else None
    except (ImportError, AttributeError, OSError):
        return None


def session(path: str) -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def feeds(sess: Any, batch: int = 2, dynamic: int = 3) -> dict[str, Any]:
    """Seeded inputs like ``onnxprune.runtime.feeds.random_feeds``: dynamic first dims ``batch``, others ``dynamic``."""
    import numpy as np

    rng = np.random.default_rng(0)
    result = {}
    for value in sess.get_inputs():
        dtype = _NUMPY_OF_ORT.get(value.type)
        if dtype is None:
            raise Skip(f"input '{value.name}' of type {value.type} has no random stand-in")
        shape = tuple(d if isinstance(d, int) and d > 0 else (batch if i == 0 else dynamic)
                      for i, d in enumerate(value.shape or ()))
        if int(np.prod(shape, dtype=np.float64)) > MAX_FEED_ELEMENTS:
            raise Skip(f"input '{value.name}' of shape {list(shape)} is too large for random inputs")
        if dtype.startswith("float"):
            result[value.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == "bool":
            result[value.name] = np.asarray(rng.random(shape) < 0.5)
        else:
            result[value.name] = np.asarray(rng.integers(0, 10, size=shape)).astype(dtype)
    return result


def no_core_dumps() -> None:
    """A crash here is expected and reported; it must not also leave a core file the size of the model."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ImportError, ValueError, OSError):
        pass  # not POSIX, or not allowed: nothing worse than before


def site_free_setup(spec: dict[str, Any]) -> bool:
    """Started with ``python -S`` (no ``site``: its ``.pth`` files cost most of an interpreter start): put the
    folders the parent found ``onnx`` / ``onnxruntime`` / ``numpy`` in on ``sys.path`` and import what the
    stages will need, outside any stage.  False when that fails: the parent then starts an ordinary child,
    so a module that needs ``site`` can never turn a stage into a mere "error" answer."""
    for folder in spec.get("sys_path", []):
        if folder not in sys.path:
            sys.path.append(folder)
    try:
        if spec.get("checker", True) and _native_checker() is None:
            import onnx  # noqa: F401 - the fallback path of check()
        if spec.get("onnxruntime", False):
            import numpy  # noqa: F401
            import onnxruntime  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure: let an ordinary child do it
        return False
    return True


def main(argv: list[str]) -> int:
    faulthandler.enable()  # a crash also prints the Python stack on (captured) stderr; the signal still kills
    spec = json.loads(argv[1])
    if spec.get("alarm") and hasattr(signal, "alarm"):
        signal.alarm(int(spec["alarm"]))  # never outlive the parent's timeout, even orphaned by a SIGKILL
    no_core_dumps()
    if "sys_path" in spec and not site_free_setup(spec):
        emit(status="site-needed")
        return 0
    copies = spec.get("check") or []
    for index, path in enumerate(spec["models"]):
        if spec.get("checker", True):
            # the graph the parent's checker will judge, when it wrote one; else the model file itself
            checked = copies[index] if index < len(copies) and copies[index] else path
            stage(index, "checker", lambda: check(checked))
        if spec.get("onnxruntime", False):
            created, sess = stage(index, "session", lambda: session(path))
            if created:
                stage(index, "run", lambda: sess.run(None, feeds(sess)))
    emit(status="done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
