"""A real Spark standalone cluster on 127.0.0.1 from the pyspark package: one master, N workers.

Ports are chosen by the daemons themselves (``--port 0``) and read back from their logs, so tests
never race for a port. Used as a context manager; everything is stopped on exit.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pyspark

from interest.spark import delta_settings

SPARK_HOME = Path(pyspark.__file__).resolve().parent
ROOT = Path(__file__).resolve().parents[1]


def _wait_for(log: Path, pattern: str, proc: subprocess.Popen, timeout: float = 90.0) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            match = re.search(pattern, log.read_text(errors="replace"))
            if match:
                return match
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name} exited early:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)
    raise TimeoutError(f"no {pattern!r} in {log} after {timeout}s")


def clean_copy(dest: Path) -> Path:
    """The working tree as a fresh clone would hold it: tracked and new files, nothing ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet staged is listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def install_package(dest: Path) -> Path:
    """``pip install .`` of a clean copy into ``dest/site`` (our package only: the dependencies are
    this environment's); returns the folder that holds the installed ``interest``."""
    source = clean_copy(dest / "source")
    site = dest / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(site)]
        + [str(source)],
        check=True,
        cwd=dest,
    )
    return site


@functools.cache
def _installed() -> Path:
    return install_package(Path(tempfile.mkdtemp(prefix="interest-install-")))


def package_zip(dest: Path, site: Path | None = None) -> Path:
    """The installed ``interest`` package (``site``, default one install per test run) as a zip
    for ``--py-files``: what users build with ``pip install .`` and ship to executors."""
    site = site or _installed()
    out = dest / "interest.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for path in (site / "interest").rglob("*.py"):
            zf.write(path, path.relative_to(site))
    return out


class StandaloneCluster:
    def __init__(self, workdir: Path, workers: int = 2, cores: int = 1, memory: str = "3g") -> None:
        self.workdir, self.n_workers, self.cores, self.memory = workdir, workers, cores, memory
        self.procs: list[subprocess.Popen] = []
        self.url = ""

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SPARK_HOME": str(SPARK_HOME),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_WORKER_DIR": str(self.workdir / "work"),
            "SPARK_LOG_DIR": str(self.workdir / "logs"),
        }

    def _start(self, name: str, *args: str) -> tuple[subprocess.Popen, Path]:
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), *args],
            env=self.env,
            stdout=open(log, "w"),
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        self.procs.append(proc)
        return proc, log

    def __enter__(self) -> StandaloneCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        proc, log = self._start(
            "master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", "0", "--webui-port", "0"
        )
        self.url = _wait_for(log, r"Starting Spark master at (spark://[\d.]+:\d+)", proc).group(1)
        for i in range(self.n_workers):
            proc, log = self._start(
                f"worker{i}",
                "org.apache.spark.deploy.worker.Worker",
                self.url,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--webui-port",
                "0",
                "--cores",
                str(self.cores),
                "--memory",
                self.memory,
                "--work-dir",
                str(self.workdir / "work"),
            )
            _wait_for(log, r"Successfully registered with master", proc)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()

    def submit(
        self,
        script: str,
        *args: str,
        conf: dict[str, str] | None = None,
        py_files: Path | None = None,
        timeout: float = 900,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """spark-submit a job script to this cluster (client mode) and wait for it; ``env`` is added
        to the driver's environment."""
        settings = {
            "spark.executor.cores": str(self.cores),
            "spark.executor.memory": "1g",
            "spark.cores.max": str(self.cores * self.n_workers),
            "spark.ui.enabled": "false",
            "spark.pyspark.python": sys.executable,
            # Delta rebuilds a table's state over 50 partitions and Spark lists files over up to
            # 10,000 tasks: sized for real clusters, not for this one of two cores and tiny tables
            "spark.databricks.delta.snapshotPartitions": "4",
            "spark.sql.sources.parallelPartitionDiscovery.parallelism": "4",
            **delta_settings(None),
            **(conf or {}),
        }
        cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", self.url, "--deploy-mode", "client"]
        for key, value in settings.items():
            cmd += ["--conf", f"{key}={value}"]
        if py_files:
            cmd += ["--py-files", str(py_files)]
        cmd += [str(ROOT / script), *args]
        return subprocess.run(
            cmd, env={**self.env, **(env or {})}, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )

    def run_job(
        self,
        script: str,
        date: str,
        sets: list[str],
        work: Path,
        conf: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """spark-submit one of our jobs for ``date`` with ``--set`` overrides, the package zipped in ``work``."""
        args = ["--conf", "conf/local.yaml", "--date", date, *[a for s in sets for a in ("--set", s)]]
        return self.submit(script, *args, conf=conf, py_files=package_zip(work), env=env)

    def worker_logs(self) -> str:
        """What the standalone workers logged (executors they started, and how those ended)."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("worker*.log")))

    def executor_logs(self) -> str:
        """Everything the executors printed (their stderr files), for assertions and debugging."""
        return "\n".join(p.read_text(errors="replace") for p in (self.workdir / "work").rglob("stderr"))
