"""First contact with an untrusted model in a child process, so a native crash is an error, not our death.

Why: the ONNX checker, ONNX shape inference and onnxruntime are C++.  A malformed (or merely unlucky)
model can make them segfault, abort or loop forever, and in-process that kills onnxprune with no
message, or hangs it.  So before a command lets native code near a model *file* in its own process,
:func:`probe` runs the same native work in a child: the full checker (which includes strict shape
inference) and, when the command is going to run onnxruntime anyway, one session created and run on
seeded random inputs.  A child that dies by a signal, exits without finishing, or outlives its
timeout becomes one :class:`~onnxprune.errors.IsolationError` line naming the model, the stage
(checker / onnxruntime session / run) and the signal or the timeout; exit code 5.  Once the child
has survived, the command continues in-process as before.

Design choices:

* A plain ``python -c`` subprocess running ``isolation_child.py`` by path, not multiprocessing: no
  pickling, no re-import of the parent's ``__main__``, nothing of the ``onnxprune`` package imported
  in the child (a child costs an interpreter start plus ``onnx``, and ``onnxruntime`` only if asked).
  onnxruntime opens the model file itself, by path.
* The checker judges what the parent's own checker will judge: the parent never hands weight bytes
  to onnx's native code (they stay memory-mapped in its weight store and reach the checker as typed
  graph inputs, :func:`onnxprune.io.weights.checkable`), so the child checks that same graph, written
  to a private temporary file (:func:`_checker_copies`), instead of parsing every weight of the file in
  C++ -- which was most of a 100 MB model's first contact.  A graph too large for one protobuf falls
  back to the file itself.
* The parent first validates the file with :func:`onnxprune.io.load_model` (``load_weights=False``):
  external-data references are confined to the model's folder *before* the child's checker or
  onnxruntime opens anything, and unreadable files keep their usual ``ModelLoadError``.
* A stage that merely *raises* in the child is not acted on: the command's own in-process code meets
  the same error and reports it as it always has (so exit codes and messages do not change).
* One child per command, whatever the number of files (``bench a.onnx b.onnx``, ``verify``).
* The CLI isolates every model file it is given (``onnxprune --no-isolation ...`` or
  ``ONNXPRUNE_NO_ISOLATION=1`` turns it off, ``--isolation-timeout`` / ``ONNXPRUNE_ISOLATION_TIMEOUT``
  sets the limit).  The Python API does not: a library call that spawns processes behind its caller's
  back would surprise, and API callers hold protos, not files.  They opt in with :func:`probe`.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from typing import Any, Iterable

import onnx
from google.protobuf.message import EncodeError

from onnxprune.errors import InputError, IsolationError
from onnxprune.io.model_parts import all_tensors, is_external
from onnxprune.io.weights import checkable

#: Seconds the child may take for all its files (checker, session, one run) before it is killed.
DEFAULT_TIMEOUT = 300.0
CHILD_SCRIPT = pathlib.Path(__file__).resolve().with_name("isolation_child.py")
_MARK = "@@onnxprune-isolation "
# Drop sys.path[0] (the working directory) before anything is imported, then run the script by path.
_BOOT = ("import sys, runpy; del sys.path[0]; sys.argv[:] = sys.argv[1:]; "
         "runpy.run_path(sys.argv[0], run_name='__main__')")
STAGES = {
    "checker": "the ONNX checker crashed",
    "session": "onnxruntime crashed while creating a session",
    "run": "onnxruntime crashed while running the model",
}
_SLOW = {"checker": "the ONNX checker", "session": "creating an onnxruntime session",
         "run": "running the model in onnxruntime", "": "the isolated check (still starting)"}


@dataclass(frozen=True)
class IsolationOptions:
    """Whether the CLI isolates its model files, and the child's time limit in seconds."""

    enabled: bool = True
    timeout: float = DEFAULT_TIMEOUT

    #: Where ``onnxprune``'s click group stores them (``click.Context.meta``: shared, namespaced).
    META_KEY = "onnxprune.io.isolation"


@dataclass(frozen=True)
class StageResult:
    """What one stage did in the child: ``ok``, ``error`` (raised; ``message``) or ``skipped``."""

    model: str
    stage: str
    status: str
    message: str = ""


@dataclass(frozen=True)
class ProbeReport:
    """Every stage the child completed, and its wall time (including the interpreter start)."""

    results: tuple[StageResult, ...]
    seconds: float

    def failures(self) -> list[StageResult]:
        return [r for r in self.results if r.status == "error"]


def probe(paths: Iterable[str | os.PathLike[str]], *, onnxruntime: bool = False, checker: bool = True,
          timeout: float = DEFAULT_TIMEOUT) -> ProbeReport:
    """Run the native first contact with ``paths`` in one child process; raise if the child does not survive.

    ``checker``: ``onnx.checker.check_model(path, full_check=True)``.  ``onnxruntime``: create a CPU
    session (default optimizations) and run it once on seeded random inputs.  Raises
    :class:`IsolationError` when the child dies by a signal, exits early or exceeds ``timeout``;
    :class:`~onnxprune.errors.ModelLoadError` when a file cannot be read safely.  Errors the stages
    *raise* are returned in the report, not raised.
    """
    return start_probe(paths, onnxruntime=onnxruntime, checker=checker, timeout=timeout).wait()


def start_probe(paths: Iterable[str | os.PathLike[str]], *, onnxruntime: bool = False, checker: bool = True,
                timeout: float = DEFAULT_TIMEOUT) -> RunningProbe:
    """:func:`probe` without waiting: the files are validated here, the child is started, and
    :meth:`RunningProbe.wait` judges it.

    Why: the child takes a Python start plus a checker pass over the graph (and, when asked, an onnxruntime
    session on the whole file) while the command would sit idle.  Between this call and ``wait`` a caller may
    do work that lets no native code of onnx or onnxruntime near the model -- parsing the protobuf (which the
    validation here already does in-process) and hashing or reading its weights as bytes with numpy;
    everything else waits for the verdict, as with :func:`probe`.
    """
    from onnxprune.io.files import load_model

    limit = _limit(timeout)
    names = [os.fspath(p) for p in paths]
    models = [load_model(name, load_weights=False) for name in names]  # confines external data before the child opens it
    if not names or not (checker or onnxruntime):
        return RunningProbe(None, names, timeout)
    folder, copies = _checker_copies(models) if checker else (None, [])
    spec = {"models": [os.path.abspath(n) for n in names], "checker": checker, "onnxruntime": onnxruntime,
            "alarm": int(limit) + 5 if limit else 0, "check": copies}
    folders = _package_folders(("onnx", "onnxruntime", "numpy") if onnxruntime else ("onnx",))
    try:
        if folders is None:
            running = _launch(spec, names, timeout, CHILD_SCRIPT)
        else:
            running = _launch(spec | {"sys_path": folders}, names, timeout, CHILD_SCRIPT, site=False)
    except BaseException:
        _remove(folder)
        raise
    running.owns(folder)
    return running


def _checker_copies(models: list[onnx.ModelProto]) -> tuple[str | None, list[str | None]]:
    """A private folder holding, per model, the graph the parent's checker will judge (weights as typed
    inputs, :func:`onnxprune.io.weights.checkable`), and the file of each (None: check the model file
    itself -- a graph over 2 GB, which no single protobuf can hold, or one with external data outside its
    initializers -- or every file, when no temporary folder can be written)."""
    folder: str | None = None
    copies: list[str | None] = []
    try:
        folder = tempfile.mkdtemp(prefix="onnxprune_check_")
        for index, model in enumerate(models):
            if _external_beyond_initializers(model):
                copies.append(None)  # the parent reads those tensors inline: check what it will check, the file
                continue
            try:
                data = checkable(model, external_files=True).SerializeToString()
            except (ValueError, EncodeError):  # over 2 GB: protobuf refuses to serialize it
                copies.append(None)
                continue
            path = os.path.join(folder, f"{index}.onnx")
            with open(path, "wb") as handle:
                handle.write(data)
            copies.append(path)
    except OSError:  # no writable temporary folder: the child reads the model files themselves
        _remove(folder)
        return None, []
    except BaseException:
        _remove(folder)
        raise
    return folder, copies


def _external_beyond_initializers(model: onnx.ModelProto) -> bool:
    """Whether tensors other than top-level initializers (attributes, subgraphs, sparse) hold external data:
    a load with weights reads those inline, so a copy referring to them would not be the parent's graph."""
    outside = sum(is_external(t) for t in all_tensors(model))
    return outside > sum(is_external(t) for t in model.graph.initializer)


def _remove(folder: str | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _package_folders(packages: tuple[str, ...]) -> list[str] | None:
    """The ``sys.path`` folders holding ``packages`` in this interpreter (found without importing them),
    for a child started without ``site``; None when one cannot be located."""
    import importlib.util

    folders: list[str] = []
    for name in packages:
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        if found is None or not found.origin or not found.submodule_search_locations:
            return None
        folder = str(pathlib.Path(found.origin).resolve().parent.parent)
        if folder not in folders:
            folders.append(folder)
    return folders


def run_child(spec: dict[str, Any], names: list[str], timeout: float, script: os.PathLike[str] | str = CHILD_SCRIPT,
              ) -> ProbeReport:
    """Run ``script`` (the child protocol, see ``isolation_child.py``) on ``spec`` and judge how it ended.

    ``names`` are the models as the user wrote them (for messages).  Public so the mechanism can be
    exercised with another child script (tests use one that really segfaults).
    """
    return _launch(spec, names, timeout, script).wait()


def _launch(spec: dict[str, Any], names: list[str], timeout: float, script: os.PathLike[str] | str,
            site: bool = True, start: float | None = None) -> RunningProbe:
    """Start the child; ``site=False``: ``python -S`` with ``spec["sys_path"]`` (the child asks for an
    ordinary start when its imports fail there, see ``isolation_child.site_free_setup``)."""
    _limit(timeout)
    command = [sys.executable, *([] if site else ["-S"]), "-c", _BOOT, os.fspath(script), json.dumps(spec)]
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as err:  # no interpreter to start (embedded Python), out of processes...
        raise IsolationError(f"{', '.join(names)}: cannot start the isolated child process ({err}); "
                             "onnxprune --no-isolation skips it", model=", ".join(names), cause="start") from err
    running = RunningProbe(process, names, timeout)
    running.spec, running.script = spec, script
    if start is not None:
        running.start = start
    return running


class RunningProbe:
    """A started isolation child (or none: nothing to check); :meth:`wait` gives its verdict once."""

    def __init__(self, process: subprocess.Popen | None, names: list[str], timeout: float) -> None:
        self.process, self.names, self.timeout = process, names, timeout
        self.start = time.monotonic()
        self.report: ProbeReport | None = None
        self.spec: dict[str, Any] = {}
        self.script: os.PathLike[str] | str = CHILD_SCRIPT
        self._cleanup: weakref.finalize | None = None

    def owns(self, folder: str | None) -> None:
        """Remove ``folder`` (the checker's copies) once the child is judged, or with this object."""
        if folder is not None:
            self._cleanup = weakref.finalize(self, _remove, folder)

    def running(self) -> bool:
        """Whether the child is still at work (work done meanwhile is free until it ends)."""
        return self.report is None and self.process is not None and self.process.poll() is None

    def wait(self) -> ProbeReport:
        """The report when the child survived; :class:`IsolationError` when it died, failed or hung.

        The time limit counts from the start of the child, so work done meanwhile does not extend it.
        """
        try:
            return self._judge()
        finally:
            if self._cleanup is not None:
                self._cleanup()

    def _judge(self) -> ProbeReport:
        if self.report is not None:
            return self.report
        if self.process is None:
            self.report = ProbeReport((), 0.0)
            return self.report
        limit = _limit(self.timeout)
        left = None if limit is None else max(0.0, limit - (time.monotonic() - self.start))
        names, process = self.names, self.process
        try:
            stdout, stderr = process.communicate(timeout=left)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            events = _events(stdout)
            model, stage = _current(events, names)
            doing = _SLOW.get(stage, _SLOW[""])
            _debug_stderr(stderr)
            raise IsolationError(f"{model}: {doing} did not finish within {self.timeout:g} s (stopped in an isolated "
                                 "child process; onnxprune --isolation-timeout SECONDS raises the limit)",
                                 model=model, stage=stage, cause="timeout") from None
        except BaseException:  # Ctrl-C while waiting: the child goes too
            process.kill()
            process.wait()
            raise
        events = _events(stdout)
        _debug_stderr(stderr)
        if process.returncode == 0 and any(e.get("status") == "site-needed" for e in events):
            # the site-free child could not import what its stages need: the same check in an ordinary child
            spec = {k: v for k, v in self.spec.items() if k != "sys_path"}
            again = _launch(spec, names, self.timeout, self.script, start=self.start)
            self.report = again.wait()
            return self.report
        if process.returncode == 0 and any(e.get("status") == "done" for e in events):
            self.report = ProbeReport(_results(events, names), time.monotonic() - self.start)
            return self.report
        model, stage = _current(events, names)
        what = STAGES.get(stage, "the isolated check of the model failed")
        if process.returncode < 0:
            cause = _signal_name(-process.returncode)
            raise IsolationError(f"{model}: {what} ({cause}) in an isolated child process; onnxprune stopped before "
                                 "touching it", model=model, stage=stage, cause=cause.split(",")[0])
        raise IsolationError(f"{model}: {what}: the isolated child process exited with code {process.returncode} "
                             f"before finishing{_last_line(stderr)}", model=model, stage=stage,
                             cause=f"exit {process.returncode}")


def _limit(timeout: float) -> float | None:
    """The subprocess timeout for ``timeout`` seconds: None (no limit) from about a year on, inf included."""
    if not timeout > 0:  # NaN too
        raise InputError(f"the isolation timeout must be a positive number of seconds, got {timeout:g}")
    return float(timeout) if timeout < 3e7 else None


def cli_options() -> IsolationOptions:
    """The options of the running click command (set by ``onnxprune`` itself), else the defaults."""
    import click  # noqa: PLC0415 - only the CLI path needs click

    context = click.get_current_context(silent=True)
    found = context.meta.get(IsolationOptions.META_KEY) if context is not None else None
    return found if isinstance(found, IsolationOptions) else IsolationOptions()


def _events(stdout: bytes | str | None) -> list[dict[str, Any]]:
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else (stdout or "")
    events = []
    for line in text.splitlines():
        if line.startswith(_MARK):
            try:
                events.append(json.loads(line[len(_MARK):]))
            except ValueError:
                continue  # a line cut by the crash
    return events


def _current(events: list[dict[str, Any]], names: list[str]) -> tuple[str, str]:
    """(model, stage) of the last stage that started and never reported an outcome."""
    for event in reversed(events):
        if event.get("status") == "start":
            index = event.get("model", 0)
            return (names[index] if isinstance(index, int) and 0 <= index < len(names) else "?"), event["stage"]
        if event.get("status") in ("ok", "error", "skipped"):
            break
    return (", ".join(names) or "?"), ""


def _results(events: list[dict[str, Any]], names: list[str]) -> tuple[StageResult, ...]:
    return tuple(StageResult(names[e["model"]], e["stage"], e["status"], e.get("message", ""))
                 for e in events if e.get("status") in ("ok", "error", "skipped"))


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    return name + (", out of memory?" if name == "SIGKILL" else "")


def _last_line(stderr: bytes | None) -> str:
    lines = [line for line in (stderr or b"").decode("utf-8", "replace").splitlines() if line.strip()]
    return f" ({lines[-1].strip()[:200]})" if lines else ""


def _debug_stderr(stderr: bytes | None) -> None:
    """With ``ONNXPRUNE_DEBUG`` set, the child's stderr (onnxruntime logs, faulthandler's stack) is shown."""
    if os.environ.get("ONNXPRUNE_DEBUG") and stderr:
        sys.stderr.write(stderr.decode("utf-8", "replace"))
