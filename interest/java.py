"""The Java runtime the local jobs launch: finding it, and its class archive.

``require_java`` fails with one line a newcomer can act on, before Spark prints a JVM trace.

The class archive (Java's application class-data sharing): a local job's JVM loads and verifies
some ten thousand Spark classes before its first task runs, about 2.5 s of every local job's start
(BENCHMARKS.md, "Spark's start: the class archive"). Java 17 can dump the classes
a run loaded into an archive and map it into later JVMs. ``python -m interest.java`` builds the
archive once (``make demo`` and ``make test`` run it first); ``spark.get_spark`` uses it for the local runs
it launches (a JVM started by ``spark-submit`` is already running). Nothing depends on it: Java
ignores an archive that does not match its build or class path (``-Xshare:auto``), and the run
starts as it would have without one.

The archive is keyed by the Java build and the Spark jars, in ``$INTEREST_JVM_CACHE`` (default
``~/.cache/interest/jvm``; ``off`` turns it off). It is written under a name of its own and moved
into place only after the JVM that dumped it has exited, so no JVM ever maps a half-written file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from interest.errors import UserError

CACHE_ENV = "INTEREST_JVM_CACHE"
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"  # Java's notes on skipped classes are not the user's business
# JVM options that hook class loading or choose class sharing themselves: with Java Flight
# Recorder on, Java 17 crashes at start-up mapping a dumped archive (SIGSEGV in
# check_shared_class_file_load_hook, seen with -XX:StartFlightRecording); an agent hooks the same
# path; a user's own archive (or one being dumped) is theirs. With any of them the JVM starts
# without ours (-Xshare:on/off still apply to it: tests/test_java.py maps it strictly).
HOOKS = re.compile(
    r"-XX:StartFlightRecording|-XX:\+FlightRecorder|-XX:FlightRecorderOptions|-javaagent:|-agentlib:|-agentpath:"
    r"|-XX:SharedArchiveFile|-XX:ArchiveClassesAtExit"
)


class JavaNotFoundError(UserError, RuntimeError):
    """Spark needs a Java runtime (17); raised before Spark prints a JVM stack trace."""


def require_java() -> str:
    """Return the java executable, or fail with a message a newcomer can act on."""
    java_home = os.environ.get("JAVA_HOME")
    candidates = [os.path.join(java_home, "bin", "java")] if java_home else []
    found = shutil.which("java")
    if found:
        candidates.append(found)
    for java in candidates:
        if os.path.isfile(java) and os.access(java, os.X_OK) and java_version(java) is not None:
            return java
    raise JavaNotFoundError(
        "Java was not found: Spark needs a Java 17 runtime. Install one (e.g. "
        "`apt-get install openjdk-17-jre-headless` or `brew install openjdk@17`) and make sure "
        "`java` is on PATH or JAVA_HOME points at it."
    )


def cache_dir() -> Path | None:
    """Where archives live (None: turned off)."""
    setting = os.environ.get(CACHE_ENV, "")
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    if setting:
        return Path(setting)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "interest" / "jvm"


def archive_path(java: str) -> Path | None:
    """The archive for this Java build and these Spark jars (it may not exist yet)."""
    folder = cache_dir()
    if folder is None:
        return None
    import pyspark

    version = java_version(java)
    if version is None:
        return None
    jars = Path(pyspark.__file__).parent / "jars"
    names = sorted(p.name for p in jars.glob("*.jar")) if jars.is_dir() else []
    key = hashlib.sha256("\n".join([version, pyspark.__version__, *names]).encode()).hexdigest()[:16]
    return folder / f"spark-{pyspark.__version__}-{key}.jsa"


@functools.lru_cache(maxsize=4)
def java_version(java: str) -> str | None:
    """What ``java -version`` says (None: it did not run)."""
    try:
        return subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=True).stderr
    except (OSError, subprocess.SubprocessError):
        return None


def driver_options(java: str, given: str = "") -> str:
    """JVM options that map the archive, or "" when there is none (yet) or when the options
    ``given`` to the JVM (and Java's own environment variables) hook class loading (``HOOKS``)."""
    path = archive_path(java)
    if path is None or not path.is_file():
        return ""
    java_env = [os.environ.get(name, "") for name in ("JDK_JAVA_OPTIONS", "JAVA_TOOL_OPTIONS")]
    if HOOKS.search(" ".join([given, *java_env])):
        return ""
    return f"-XX:SharedArchiveFile={path} {QUIET}"


def build(java: str) -> Path | None:
    """Dump the archive from a short local run of the sessionize stage, then move it into place.
    Returns its path (None: turned off). Building again replaces it."""
    path = archive_path(java)
    if path is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial")
    with tempfile.TemporaryDirectory() as scratch:
        script = _WORKLOAD.format(dump=str(partial), scratch=scratch, quiet=QUIET)
        env = {**os.environ, CACHE_ENV: "off"}  # the run that dumps an archive maps none
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env)
    if done.returncode or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"the class archive was not written ({partial}):\n{done.stderr[-3000:]}")
    os.replace(partial, path)
    return path


# run in a process of its own: the stage every nightly starts with, on a few thousand generated
# events (the classes of Parquet, the shuffle, the sort, the cache, Arrow to Python and back); then
# the JVM is asked to exit and waited for, so the dump is whole
_WORKLOAD = """
from interest.config import load_config, load_generator_config
from interest.etl.sessionize import run_sessionize
from interest.spark import get_spark
from interest.synth import generate, sized_for_events
cfg = load_config(None, ["paths.root={scratch}", "embed.table_format=parquet",
                         "spark.conf={{spark.driver.extraJavaOptions: '-XX:ArchiveClassesAtExit={dump} {quiet}'}}"])
gen = sized_for_events(load_generator_config(None, []), 3000)
generate(gen, cfg.paths.raw_events, cfg.paths.truth, progress=False)
spark = get_spark(cfg, app_name="interest-class-archive")
run_sessionize(spark, cfg, gen.end_date)
gateway = spark.sparkContext._gateway
proc = gateway.proc
spark.stop()
gateway.shutdown()
proc.stdin.close()
proc.wait(timeout=300)
"""


def main() -> int:
    """``python -m interest.java``: build the archive where it is missing and say where it is."""
    java = require_java()
    path = archive_path(java)
    if path is None:
        print(f"no class archive: turned off by {CACHE_ENV}")
        return 0
    if path.is_file() and "--rebuild" not in sys.argv:
        print(f"class archive: {path}")
        return 0
    print(f"class archive: {build(java)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
