"""Helpers for benchmark scripts: machine description, peak memory of a process tree, tables."""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return f"{cpu} ({cpu_features()}), {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def cpu_features() -> str:
    """The CPU flags that decide the speed of training here (bfloat16 native or emulated)."""
    import sys

    sys.path.insert(0, str(ROOT))
    from interest.models.precision import SHOWN_FLAGS, cpu_flags

    flags = cpu_flags()
    return " ".join(f"{f}{'+' if f in flags else '-'}" for f in SHOWN_FLAGS) if flags else "flags unknown"


class PeakRSS:
    """Polls the summed resident memory of a process and all its children (the JVM included).

    Each process counts its proportional share of the pages it shares (PSS, where the system
    reports it): summed resident sizes counted a page mapped by two processes twice, and a child
    the JVM forks for a moment (Hadoop runs shell commands that way) carries all of the JVM's
    pages until it execs, which once showed a 7 GiB run as 14 GiB."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self.pid, self.every_s, self.peak = pid, every_s, 0
        self.series: list[tuple[float, int]] = []  # (time.time(), bytes): the peak of each stage
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
                total = 0
                for proc in procs:
                    try:
                        total += _resident(proc)
                    except psutil.Error:  # gone between the listing and the reading
                        continue
                self.peak = max(self.peak, total)
                self.series.append((time.time(), total))
            except psutil.Error:
                pass
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _resident(proc: psutil.Process) -> int:
    """A process's proportional resident memory (PSS), or its RSS where there is no PSS."""
    try:
        return int(proc.memory_full_info().pss)
    except (AttributeError, psutil.AccessDenied):
        return int(proc.memory_info().rss)


def run_measured(
    cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None, series: list | None = None
) -> tuple[float, int, int]:
    """Run a command; return (wall seconds, peak RSS bytes of its tree, exit code). ``series``, when
    given, receives the memory samples as (time.time(), bytes)."""
    started = time.perf_counter()
    out = open(log, "w") if log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        with PeakRSS(proc.pid) as peak:
            code = proc.wait()
    finally:
        if log:
            out.close()
    if series is not None:
        series.extend(peak.series)
    return time.perf_counter() - started, peak.peak, code


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join(
        [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *[line(r) for r in cells[1:]]]
    )


def generated_clickstream(overrides: list[str], app: str):
    """``conf/local.yaml`` with ``overrides``, its generated clickstream written (not timed) and a
    SparkSession to sessionize it: (cfg, spark)."""
    from interest.config import load_config, load_generator_config
    from interest.spark import get_spark
    from interest.synth import generate

    cfg = load_config(ROOT / "conf" / "local.yaml", overrides)
    generate(
        load_generator_config(ROOT / "conf" / "local.yaml", overrides),
        cfg.paths.raw_events,
        cfg.paths.truth,
        progress=False,
    )
    return cfg, get_spark(cfg, app)
