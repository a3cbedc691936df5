"""Progress on long work: one status line with an ETA on a terminal, nothing in pipes or with --quiet."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import threading

from conftest import MODELS
from test_cli import _entry_point
from onnxprune.progress import StatusLine, Steps, clock_text, terminal_progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_status_line_extrapolates_the_eta_and_ends_the_line() -> None:
    stream, clock = io.StringIO(), FakeClock()
    status = StatusLine(stream, clock, interval=0.0)
    status("calibration pass 1", 0, 10)
    clock.now += 4.0
    status("calibration pass 1", 2, 10)  # 2 s a step, 8 steps left
    assert stream.getvalue().split("\r")[-1] == "calibration pass 1: 2/10 (20%) 0:04 elapsed, ETA 0:16"
    clock.now += 16.0
    status("calibration pass 1", 10, 10)
    last = stream.getvalue().split("\r")[-1]
    assert last.startswith("calibration pass 1: 10/10 (100%) 0:20 elapsed") and "ETA" not in last
    assert last.endswith("\n") and len(last.rstrip("\n")) >= len("calibration pass 1: 2/10 (20%) 0:04 elapsed, "
                                                                   "ETA 0:16"), "padding clears the longer line"
    status("latency tables", 1, 3)  # a new phase restarts the clock
    assert stream.getvalue().split("\r")[-1].startswith("latency tables: 1/3 (33%) 0:00 elapsed, ETA 0:00")


def test_status_line_throttles_redraws_but_always_draws_the_last_step() -> None:
    stream, clock = io.StringIO(), FakeClock()
    status = StatusLine(stream, clock, interval=1.0)
    for done in range(1, 1001):
        clock.now += 0.001
        status("sensitivity", done, 1000)
    draws = stream.getvalue().count("\r")
    assert draws == 2, draws  # first step, then only the last (1 s total at 1 ms per step)
    assert stream.getvalue().endswith("\n")


def test_steps_of_an_estimated_search_finish_once() -> None:
    seen: list[tuple[str, int, int]] = []
    steps = Steps(lambda *call: seen.append(call), "flops budget search", 3)
    for _ in range(5):
        steps.tick()
    steps.finish()
    assert [call[1:] for call in seen] == [(1, 3), (2, 3), (3, 4), (4, 5), (5, 6), (5, 5)]
    assert sum(done >= total for _, done, total in seen) == 1


def test_clock_text() -> None:
    assert [clock_text(s) for s in (0, 7.4, 750, 3723)] == ["0:00", "0:07", "12:30", "1:02:03"]


def test_no_status_line_in_pipes_or_when_quiet() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert terminal_progress(False, io.StringIO()) is None
    assert terminal_progress(True, Terminal()) is None
    assert isinstance(terminal_progress(False, Terminal()), StatusLine)


def on_terminal(*args: str) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (stdout piped); returns code, stdout, terminal text."""
    master, slave = pty.openpty()
    process = subprocess.Popen([*_entry_point(), *args], stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    out, _ = process.communicate(timeout=300)
    reader.join(30)
    os.close(master)
    return process.returncode, out.decode(), b"".join(chunks).decode("utf-8", "replace")


def test_prune_shows_calibration_progress_on_a_terminal_only(tmp_path) -> None:
    args = ["prune", str(MODELS / "mnist_cnn.onnx"), "-o", str(tmp_path / "out.onnx"), "--ratio", "0.5",
            "--calib", str(MODELS / "mnist_calib.npz")]
    code, out, terminal = on_terminal(*args)
    assert code == 0, terminal
    assert "calibration pass 1: 16/16 (100%)" in terminal and "ETA" in terminal, terminal
    assert "\r" not in out and "params" in out, "results stay on stdout, progress never does"
    code, quiet_out, quiet_terminal = on_terminal(*args, "--quiet")
    assert code == 0 and quiet_terminal == "" and quiet_out == out, "--quiet keeps the summary, nothing else"
    piped = subprocess.run([*_entry_point(), *args], capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0 and piped.stderr == "" and piped.stdout == out


def test_sensitivity_scan_counts_its_steps(tmp_path) -> None:
    code, out, terminal = on_terminal("sensitivity", str(MODELS / "mnist_cnn.onnx"), "--calib",
                                      str(MODELS / "mnist_calib.npz"), "--ratios", "0.25,0.5", "-o",
                                      str(tmp_path / "s.json"))
    assert code == 0, terminal
    lines = [line for line in terminal.replace("\r\n", "\n").split("\r") if line.strip()]
    groups = int(out.split(" groups")[0])
    assert lines[-1].strip().startswith(f"sensitivity: {2 * groups}/{2 * groups} (100%)"), lines[-3:]
    assert "calibration pass" not in terminal, "one line for the scan, not one per pass inside it"
