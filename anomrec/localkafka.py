"""Run a real single-node Apache Kafka 4.x broker (KRaft mode) as a local JVM process.

The broker is the genuine article: ``kafka.Kafka`` started from the jars that the project's own
``anomrec/kafka/pom.xml`` names, resolved from Maven Central by Maven once and cached. It needs
a JDK >= 17 and Maven on ``PATH`` and nothing else (no Docker, no Kafka download).

The node is a combined broker and controller (``process.roles=broker,controller``) with one
PLAINTEXT listener for clients and one for the KRaft controller, both bound to 127.0.0.1 only.
Every internal topic has replication factor 1, and ``__consumer_offsets`` and
``__transaction_state`` are created before :meth:`LocalKafka.start` returns, so consumer groups
and transactional producers work straight away.

``LocalKafka(sasl_users={"alice": "alice-secret"})`` adds a third listener, ``SASL_PLAINTEXT``
with the ``PLAIN`` mechanism and those users, on its own port
(:attr:`LocalKafka.sasl_bootstrap_servers`); the controller and inter-broker listeners stay
PLAINTEXT, so the broker's own traffic needs no credentials.

Topics are *not* auto-created (``auto.create.topics.enable=false``): code under test must
create the topics it uses, which is what a production cluster usually demands too, and a typo
in a topic name fails loudly instead of silently creating a new topic. Pass
``extra_config={"auto.create.topics.enable": "true"}`` to change that.

Examples
--------
>>> with LocalKafka() as kafka:  # doctest: +SKIP
...     producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)

From a shell, ``anomrec broker --port 9092`` (or ``python -m anomrec.localkafka``) runs one in
the foreground until Ctrl-C (see :func:`serve`).

Environment
-----------
ANOMREC_CACHE_DIR
    Where the resolved jars are cached (default ``$XDG_CACHE_HOME/anomrec``, that is
    ``~/.cache/anomrec``); the jars go to ``<cache>/kafka-<version>/libs``.
ANOMREC_MAVEN_REPO
    Maven local repository to resolve through (default: Maven's own, ``~/.m2/repository``).
JAVA_HOME
    Preferred over ``java`` on ``PATH`` when it holds ``bin/java``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import fcntl
import hashlib
import importlib.resources
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar
from xml.etree import ElementTree

from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError

__all__ = [
    "BROKER_CONFIG",
    "KAFKA_VERSION",
    "BrokerStartError",
    "BrokerUnavailable",
    "LocalKafka",
    "add_arguments",
    "default_cache_dir",
    "find_java",
    "main",
    "resolve_jars",
    "serve",
]

JAVA_HINT = "install a JDK >= 17 (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
MAVEN_HINT = "install Maven (Debian: apt-get install maven)"

#: Broker settings written to ``server.properties`` besides the node's id, listeners and
#: directories. ``LocalKafka(extra_config=...)`` overrides or extends them.
BROKER_CONFIG: Mapping[str, str] = {
    "num.partitions": "1",
    "auto.create.topics.enable": "false",
    "group.initial.rebalance.delay.ms": "0",
    # One node: every internal topic must make do with one replica.
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    # Kafka's default is 50 partitions each, which only slows a one-node broker's start.
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.num.partitions": "1",
    # Records carry event time, and recorded or generated streams are often months old: with the
    # default seven-day retention the broker would delete them minutes after they were written.
    "log.retention.ms": "-1",
}

_NODE_ID = 1
_SASL_LISTENER = "SASL"
_COMPLETE_MARKER = ".anomrec-complete"
_CLIENT_ID = "anomrec-localkafka"
_WARMUP_ID = "anomrec-localkafka-warmup"
_INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")
_MAVEN_TIMEOUT_S = 1800.0

_T = TypeVar("_T")


class BrokerUnavailable(RuntimeError):
    """The machine lacks what the broker needs: Java, Maven, or the jars from Maven Central.

    The message says what to install. A test suite may turn this error into a skip; it is not
    raised for a broker that was launched and then failed (see :class:`BrokerStartError`).
    """


class BrokerStartError(RuntimeError):
    """The broker was launched but did not become ready; the message ends with its log tail."""


# --------------------------------------------------------------------------------------------
# Resources shipped in the package


def _resource(name: str) -> bytes:
    return importlib.resources.files("anomrec").joinpath("kafka", name).read_bytes()


def _pom_version(pom: bytes) -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ElementTree.fromstring(pom).findtext("m:properties/m:kafka.version", namespaces=ns)
    if not version:
        raise RuntimeError("anomrec/kafka/pom.xml has no <kafka.version> property")
    return version.strip()


#: The Kafka version that anomrec/kafka/pom.xml pins.
KAFKA_VERSION: str = _pom_version(_resource("pom.xml"))


# --------------------------------------------------------------------------------------------
# Java, Maven and the jar cache


def find_java() -> str:
    """Return the ``java`` executable to run Kafka with.

    ``$JAVA_HOME/bin/java`` wins over ``java`` on ``PATH``.

    Returns
    -------
    str
        Path of the executable.

    Raises
    ------
    BrokerUnavailable
        If there is no ``java``, or it is older than Java 17 (Kafka 4.x's minimum for brokers).
    """
    java: str | None = None
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(Path(java_home, "bin", "java"), os.X_OK):
        java = str(Path(java_home, "bin", "java"))
    java = java or shutil.which("java")
    if java is None:
        raise BrokerUnavailable(f"Kafka needs Java, but `java` is not on PATH: {JAVA_HINT}")
    major = _java_major_version(java)
    if major is not None and major < 17:
        raise BrokerUnavailable(
            f"Kafka {KAFKA_VERSION} needs Java >= 17, {java} is Java {major}: {JAVA_HINT}"
        )
    return java


@lru_cache(maxsize=8)
def _java_major_version(java: str) -> int | None:
    """Major version of *java* (8 for "1.8.0_402", 17 for "17.0.15"), or None if unclear."""
    try:
        out = subprocess.run(
            [java, "-version"], check=False, capture_output=True, text=True, timeout=60
        ).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def default_cache_dir() -> Path:
    """Return the base cache directory: ``$ANOMREC_CACHE_DIR``, else ``~/.cache/anomrec``.

    Returns
    -------
    Path
        The directory; ``resolve_jars`` keeps the jars in ``<it>/kafka-<version>/libs``.
    """
    if override := os.environ.get("ANOMREC_CACHE_DIR"):
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "anomrec"


def resolve_jars(cache_dir: Path | None = None) -> Path:
    """Return a directory holding every jar the broker needs, resolving them on first use.

    The first call runs Maven on the packaged ``pom.xml`` (``dependency:copy-dependencies``,
    runtime scope) into a temporary directory next to the cache, marks it complete and renames
    it into place, so a run killed halfway never leaves a half-filled cache behind. Later calls
    find the marker and return at once. Editing ``pom.xml`` invalidates the cache (the marker
    holds the pom's SHA-256). Concurrent callers serialise on a lock file.

    Parameters
    ----------
    cache_dir : Path, optional
        Base cache directory; default :func:`default_cache_dir`.

    Returns
    -------
    Path
        ``<cache_dir>/kafka-<version>/libs``, usable as the Java classpath ``libs/*``.

    Raises
    ------
    BrokerUnavailable
        If ``java`` or ``mvn`` is missing (the message says what to install), or Maven fails
        (the message ends with the tail of Maven's output).
    """
    java = find_java()  # Maven needs it as much as the broker does.
    pom = _resource("pom.xml")
    digest = hashlib.sha256(pom).hexdigest()
    home = Path(cache_dir or default_cache_dir()).expanduser() / f"kafka-{KAFKA_VERSION}"
    libs = home / "libs"
    if _is_complete(libs, digest):
        return libs

    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerUnavailable(
            f"resolving the Kafka {KAFKA_VERSION} jars needs Maven, but `mvn` is not on PATH: {MAVEN_HINT}"
        )
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".lock"):
        if _is_complete(libs, digest):  # another process resolved them while we waited
            return libs
        for leftover in home.glob(".resolve-*"):  # from runs that were killed
            shutil.rmtree(leftover, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=".resolve-", dir=home))
        try:
            staged = _run_maven(mvn, java, pom, work)
            (staged / _COMPLETE_MARKER).write_text(digest + "\n")
            if libs.exists():  # stale: resolved from another pom.xml
                libs.rename(work / "stale")
            staged.rename(libs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return libs


def _is_complete(libs: Path, digest: str) -> bool:
    try:
        return (libs / _COMPLETE_MARKER).read_text().strip() == digest
    except OSError:
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_maven(mvn: str, java: str, pom: bytes, work: Path) -> Path:
    """Copy the runtime dependencies of *pom* into ``work/libs`` and return that directory."""
    (work / "pom.xml").write_bytes(pom)
    libs = work / "libs"
    command = [
        mvn, "-B", "-q", "-Dstyle.color=never",
        "-f", str(work / "pom.xml"),
        "dependency:copy-dependencies",
        "-Dmdep.includeScope=runtime",
        f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    if repo := os.environ.get("ANOMREC_MAVEN_REPO"):
        command.append(f"-Dmaven.repo.local={Path(repo).expanduser().resolve()}")
    env = dict(os.environ)
    env.setdefault("JAVA_HOME", str(Path(os.path.realpath(java)).parent.parent))
    try:
        result = subprocess.run(
            command, check=False, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, errors="replace", timeout=_MAVEN_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise BrokerUnavailable(
            f"Maven did not resolve the Kafka {KAFKA_VERSION} jars within {_MAVEN_TIMEOUT_S:.0f} s"
        ) from exc
    jars_found = libs.is_dir() and any(libs.glob("kafka_2.13-*.jar"))
    if result.returncode != 0 or not jars_found:
        raise BrokerUnavailable(
            f"Maven could not resolve the Kafka {KAFKA_VERSION} jars from Maven Central "
            f"(exit code {result.returncode}); the end of its output:\n{_last_lines(result.stdout, 40)}"
        )
    return libs


# --------------------------------------------------------------------------------------------
# The broker


class LocalKafka:
    """A single-node Kafka broker + KRaft controller running as a child JVM.

    Nothing happens until :meth:`start` (or ``with``); :meth:`stop` ends the JVM and deletes the
    data directory if this object created it. An ``atexit`` hook stops a broker that is still
    running when Python exits, and on Linux the JVM also gets SIGTERM if the Python process
    dies without running it (for example on SIGKILL).

    Parameters
    ----------
    data_dir : str or Path, optional
        Directory for the broker's configuration, log segments and logs. Default: a new
        temporary directory, deleted by :meth:`stop`. A directory given here is kept, and a
        broker started on it again finds its topics.
    port : int
        Client (PLAINTEXT) port on 127.0.0.1; 0 picks a free one.
    controller_port : int
        KRaft controller port on 127.0.0.1; 0 picks a free one.
    heap : str
        JVM heap size (``-Xms``/``-Xmx``), e.g. ``"512m"``.
    extra_config : Mapping[str, str], optional
        Broker settings added to or overriding :data:`BROKER_CONFIG`.
    sasl_users : Mapping[str, str], optional
        User name to password. When given, the broker also listens for ``SASL_PLAINTEXT``
        clients (mechanism ``PLAIN``) on :attr:`sasl_port`, accepting exactly these users.
        Names are letters, digits, ``.``, ``_`` and ``-``; passwords may not hold ``"``, ``\\``
        or line breaks (they are written into the listener's JAAS configuration).
    sasl_port : int
        The SASL listener's port on 127.0.0.1; 0 picks a free one. Ignored without ``sasl_users``.

    Attributes
    ----------
    data_dir : Path or None
        The data directory once started (kept after :meth:`stop`, when it may be gone).
    port, controller_port, sasl_port : int or None
        The ports in use once started (``sasl_port`` stays None without ``sasl_users``).
    cluster_id : str or None
        The KRaft cluster id the storage was formatted with.
    timings : dict[str, float]
        Seconds spent in each phase of the last start: ``resolve``, ``format``, ``ready``
        (process launch until it answers clients), ``internal_topics`` and ``total``.
    """

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        port: int = 0,
        controller_port: int = 0,
        heap: str = "512m",
        extra_config: Mapping[str, str] | None = None,
        sasl_users: Mapping[str, str] | None = None,
        sasl_port: int = 0,
    ) -> None:
        self._requested_data_dir = Path(data_dir) if data_dir is not None else None
        self._requested_port = port
        self._requested_controller_port = controller_port
        self.heap = heap
        self.extra_config = dict(extra_config or {})
        self.sasl_users = _check_sasl_users(sasl_users)
        self._requested_sasl_port = sasl_port
        self.data_dir: Path | None = None
        self.port: int | None = None
        self.controller_port: int | None = None
        self.sasl_port: int | None = None
        self.cluster_id: str | None = None
        self.timings: dict[str, float] = {}
        self._owns_data_dir = False
        self._process: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None

    # -- public API -------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"`` of the running broker, for any Kafka client."""
        if self.port is None:
            raise RuntimeError("the broker has not been started")
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap_servers(self) -> str:
        """``"127.0.0.1:PORT"`` of the running broker's SASL_PLAINTEXT (PLAIN) listener."""
        if self.sasl_port is None:
            raise RuntimeError("the broker has no SASL listener: pass sasl_users, then start it")
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def version(self) -> str:
        """The Kafka version this broker runs."""
        return KAFKA_VERSION

    @property
    def pid(self) -> int | None:
        """Process id of the broker's JVM while it runs (it leads its own process group)."""
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        """Whether the JVM was started and has not exited."""
        return self._process is not None and self._process.poll() is None

    @property
    def log_file(self) -> Path | None:
        """The broker's main log, ``<data_dir>/logs/server.log``."""
        return self.data_dir / "logs" / "server.log" if self.data_dir is not None else None

    def start(self, timeout: float = 120.0) -> LocalKafka:
        """Resolve the jars, format the storage, launch the JVM and wait until it is usable.

        On return, clients can connect to :attr:`bootstrap_servers`, and the consumer-offsets
        and transaction-state topics exist with their coordinators loaded. If anything fails,
        whatever was started is stopped again before the exception propagates.

        Parameters
        ----------
        timeout : float
            Seconds allowed from formatting the storage until the broker is ready; the one-off
            jar resolution by Maven does not count against it.

        Returns
        -------
        LocalKafka
            ``self``.

        Raises
        ------
        BrokerUnavailable
            If Java or Maven is missing or the jars cannot be resolved.
        BrokerStartError
            If a port is taken, the JVM exits early or it is not ready in time; the message
            ends with the tail of the broker's output and log.
        """
        if self._process is not None:
            raise RuntimeError("the broker is already started")
        started = time.monotonic()
        self.timings = {}
        try:
            libs = resolve_jars()
            java = find_java()
            self.timings["resolve"] = time.monotonic() - started
            deadline = time.monotonic() + timeout
            self._prepare_data_dir()
            self._choose_ports()
            self._write_config()
            phase = time.monotonic()
            self._format_storage(java, libs, deadline)
            self.timings["format"] = time.monotonic() - phase
            phase = time.monotonic()
            self._launch(java, libs)
            admin = self._connect(deadline)
            try:
                self.timings["ready"] = time.monotonic() - phase
                phase = time.monotonic()
                self._create_internal_topics(admin, deadline)
                self.timings["internal_topics"] = time.monotonic() - phase
            finally:
                admin.close()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - started
        return self

    def stop(self, grace: float = 20.0) -> None:
        """Stop the broker and delete its data directory if this object created it.

        Sends SIGTERM to the broker's process group (Kafka then shuts down cleanly), waits up to
        *grace* seconds, then sends SIGKILL. Safe to call at any time and more than once.

        Parameters
        ----------
        grace : float
            Seconds to wait for a clean shutdown before killing the JVM.
        """
        process = self._process
        if process is not None:
            _terminate_group(process, grace)
            self._process = None
            atexit.unregister(self._stop_at_exit)
        if self._console is not None:
            self._console.close()
            self._console = None
        if self._owns_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._owns_data_dir = False

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the broker's JVM exits, or *timeout* seconds pass.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait; None waits for ever.

        Returns
        -------
        int or None
            The JVM's exit code, or None if it is still running (or was never started).
        """
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 40) -> str:
        """Return the last *lines* lines of the JVM's console output and of ``server.log``."""
        if self.data_dir is None:
            return "(the broker has no data directory yet)"
        parts = []
        for path in (self.data_dir / "logs" / "console.log", self.data_dir / "logs" / "server.log"):
            text = _tail_file(path, lines)
            if text:
                parts.append(f"--- last lines of {path} ---\n{text}")
        return "\n".join(parts) or f"(the broker wrote no output to {self.data_dir / 'logs'})"

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.bootstrap_servers if self.port is not None else "not started"
        state = "running" if self.is_running else "stopped"
        return f"<LocalKafka {KAFKA_VERSION} {where} {state}>"

    # -- start, step by step ----------------------------------------------------------------

    def _prepare_data_dir(self) -> None:
        if self._requested_data_dir is not None:
            self.data_dir = self._requested_data_dir.resolve()
            self.data_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.data_dir = Path(tempfile.mkdtemp(prefix="anomrec-kafka-"))
            self._owns_data_dir = True
        (self.data_dir / "logs").mkdir(exist_ok=True)

    def _choose_ports(self) -> None:
        wanted = [self._requested_port, self._requested_controller_port]
        if self.sasl_users:
            wanted.append(self._requested_sasl_port)
        for port in wanted:
            if port and not _port_is_free(port):
                raise BrokerStartError(
                    f"127.0.0.1:{port} is already in use; choose another port (0 picks a free one)"
                )
        free = iter(_free_ports(wanted.count(0)))
        chosen = [port or next(free) for port in wanted]
        self.port, self.controller_port = chosen[:2]
        self.sasl_port = chosen[2] if self.sasl_users else None

    def _write_config(self) -> None:
        assert self.data_dir is not None
        client = f"127.0.0.1:{self.port}"
        controller = f"127.0.0.1:{self.controller_port}"
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(_NODE_ID),
            "controller.quorum.voters": f"{_NODE_ID}@{controller}",
            "listeners": f"PLAINTEXT://{client},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{client}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.data_dir / "kraft"),
            **self._sasl_settings(),
            **BROKER_CONFIG,
            **self.extra_config,
        }
        lines = [f"{key}={str(value).replace(chr(92), chr(92) * 2)}" for key, value in settings.items()]
        header = f"# Written by anomrec.localkafka for Kafka {KAFKA_VERSION}; rewritten at every start.\n"
        (self.data_dir / "server.properties").write_text(header + "\n".join(lines) + "\n")
        (self.data_dir / "log4j2.yaml").write_bytes(_resource("log4j2.yaml"))

    def _sasl_settings(self) -> dict[str, str]:
        """The SASL listener: its own name, SASL_PLAINTEXT with PLAIN, and the users in JAAS."""
        if not self.sasl_users:
            return {}
        client = f"127.0.0.1:{self.port}"
        controller = f"127.0.0.1:{self.controller_port}"
        sasl = f"127.0.0.1:{self.sasl_port}"
        users = " ".join(f'user_{name}="{password}"' for name, password in self.sasl_users.items())
        prefix = f"listener.name.{_SASL_LISTENER.lower()}"
        return {
            "listeners": f"PLAINTEXT://{client},CONTROLLER://{controller},{_SASL_LISTENER}://{sasl}",
            "advertised.listeners": f"PLAINTEXT://{client},{_SASL_LISTENER}://{sasl}",
            "listener.security.protocol.map": (
                f"PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,{_SASL_LISTENER}:SASL_PLAINTEXT"
            ),
            f"{prefix}.sasl.enabled.mechanisms": "PLAIN",
            f"{prefix}.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            ),
        }

    def _jvm_logging_options(self) -> list[str]:
        assert self.data_dir is not None
        return [
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
        ]

    def _format_storage(self, java: str, libs: Path, deadline: float) -> None:
        """Write ``meta.properties`` and the bootstrap metadata (a no-op on a formatted dir)."""
        assert self.data_dir is not None
        # --ignore-formatted still insists on the directory's own cluster id.
        meta = _read_properties(self.data_dir / "kraft" / "meta.properties")
        self.cluster_id = meta.get("cluster.id") or _new_cluster_id()
        command = [
            java, "-cp", str(libs / "*"), *self._jvm_logging_options(),
            # A short-lived tool: the quick JIT and the simplest GC start it ~0.4 s sooner.
            "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
            "kafka.tools.StorageTool", "format",
            "--config", str(self.data_dir / "server.properties"),
            "--cluster-id", self.cluster_id,
            "--ignore-formatted",
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace",
                timeout=max(deadline - time.monotonic(), 1.0),
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise BrokerStartError(f"formatting the Kafka storage in {self.data_dir} timed out") from exc
        if result.returncode != 0:
            raise BrokerStartError(
                f"formatting the Kafka storage in {self.data_dir} failed (exit code {result.returncode}):\n"
                f"{_last_lines(result.stdout, 40)}"
            )

    def _launch(self, java: str, libs: Path) -> None:
        assert self.data_dir is not None
        command = [
            java, f"-Xms{self.heap}", f"-Xmx{self.heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            *self._jvm_logging_options(),
            "-cp", str(libs / "*"),
            "kafka.Kafka", str(self.data_dir / "server.properties"),
        ]  # fmt: skip
        # Open for the JVM's lifetime: stop() closes it.
        self._console = open(self.data_dir / "logs" / "console.log", "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            command,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, out of reach of the terminal's Ctrl-C
            preexec_fn=_die_with_parent_hook(),  # noqa: PLW1509 - one prctl() call, see the hook
        )
        atexit.register(self._stop_at_exit)

    def _connect(self, deadline: float) -> KafkaAdminClient:
        """Wait for the client port, then return an admin client that has bootstrapped."""
        port = self.port
        assert port is not None
        self._retry_until(deadline, "opening its client port", lambda: _accepts_connections(port) or None)
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers, client_id=_CLIENT_ID,
                bootstrap_timeout_ms=_ms_left(deadline), request_timeout_ms=10_000,
            )  # fmt: skip
        except KafkaError as exc:
            raise self._start_error(f"no Kafka client could connect ({exc!r})") from exc
        try:
            self._retry_until(deadline, "registering the broker", lambda: self._broker_registered(admin))
        except BaseException:
            admin.close()
            raise
        return admin

    def _broker_registered(self, admin: KafkaAdminClient) -> bool | None:
        brokers = admin.describe_cluster().get("brokers", [])
        return True if any(b.get("broker_id") == _NODE_ID for b in brokers) else None

    def _create_internal_topics(self, admin: KafkaAdminClient, deadline: float) -> None:
        """Bring up ``__transaction_state`` and ``__consumer_offsets`` and their coordinators.

        Kafka creates both lazily, on the first FindCoordinator request of each kind; doing it
        here keeps that delay (and its COORDINATOR_NOT_AVAILABLE retries) out of the tests.
        """
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap_servers, client_id=_CLIENT_ID,
            transactional_id=_WARMUP_ID, max_block_ms=_ms_left(deadline),
        )  # fmt: skip
        try:
            producer.init_transactions()  # InitProducerId: creates and loads __transaction_state
        except KafkaError as exc:
            raise self._start_error(f"the transaction coordinator did not come up ({exc!r})") from exc
        finally:
            producer.close(timeout=5)

        # FindCoordinator(GROUP) creates __consumer_offsets; the OffsetFetch that follows raises
        # (COORDINATOR_NOT_AVAILABLE, ..._LOAD_IN_PROGRESS) until the coordinator has loaded it,
        # then answers "no offsets" for the unknown group.
        self._retry_until(
            deadline, "loading the group coordinator", lambda: admin.list_group_offsets([_WARMUP_ID])
        )
        try:
            admin.wait_for_topics(list(_INTERNAL_TOPICS), timeout_ms=_ms_left(deadline))
        except KafkaError as exc:
            raise self._start_error(f"the internal topics did not get leaders ({exc!r})") from exc

    # -- helpers ----------------------------------------------------------------------------

    def _retry_until(self, deadline: float, step: str, attempt: Callable[[], _T | None]) -> _T:
        """Call *attempt* until it returns non-None, the JVM exits, or *deadline* passes."""
        last_error: Exception | None = None
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise self._start_error(f"the JVM exited with code {self._process.returncode} while {step}")
            try:
                result = attempt()
            except (KafkaError, OSError) as exc:
                result, last_error = None, exc
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                detail = f" (last error: {last_error!r})" if last_error else ""
                raise self._start_error(f"timed out while {step}{detail}")
            time.sleep(0.1)

    def _start_error(self, what: str) -> BrokerStartError:
        where = f" at {self.bootstrap_servers}" if self.port else ""
        code = self._process.poll() if self._process is not None else None
        if code is not None and "JVM exited" not in what:
            what += f"; the JVM exited with code {code}"
        return BrokerStartError(f"Kafka {KAFKA_VERSION}{where} did not start: {what}\n{self.log_tail()}")

    def _stop_at_exit(self) -> None:
        self.stop(grace=10.0)


# --------------------------------------------------------------------------------------------
# Small helpers


def _check_sasl_users(users: Mapping[str, str] | None) -> dict[str, str]:
    """The SASL users, checked: each becomes a ``user_<name>="<password>"`` JAAS option."""
    checked = dict(users or {})
    for name, password in checked.items():
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise ValueError(
                f"SASL user name {name!r}: use letters, digits, '.', '_' and '-' (it names a JAAS option)"
            )
        if not isinstance(password, str) or not password or re.search(r'["\\\r\n]', password):
            # The password is not repeated: it could be a real one.
            raise ValueError(
                f"the password of SASL user {name!r} must be a non-empty string without '\"', '\\' "
                "or line breaks (it is written into a quoted JAAS option)"
            )
    return checked


def _new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64 without padding (22 characters).

    Like Kafka's own ``Uuid.randomUuid()``, never start with "-": the storage tool's argument
    parser would take such an id for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id


def _free_ports(count: int) -> list[int]:
    """Ask the kernel for *count* distinct free ports on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # Like the JVM's server sockets, so a port in TIME_WAIT still counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _ms_left(deadline: float) -> int:
    return max(int((deadline - time.monotonic()) * 1000), 1000)


def _terminate_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group led by *process*, then SIGKILL it after *grace* seconds."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _die_with_parent_hook() -> Callable[[], None] | None:
    """Return a pre-exec hook that makes Linux SIGTERM the child when this process dies.

    This covers the exits that ``atexit`` misses (SIGKILL, ``os._exit``, a fatal signal).
    Linux ties the signal to the *thread* that forked the child, so the hook is only used
    when starting from the main thread; elsewhere it returns None and ``atexit`` alone remains.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM))

    return hook


def _read_properties(path: Path) -> dict[str, str]:
    """Read the simple ``key=value`` lines of a Java properties file Kafka wrote."""
    settings = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.lstrip().startswith(("#", "!")):
                settings[key.strip()] = value.strip()
    return settings


def _last_lines(text: str, count: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


def _tail_file(path: Path, count: int) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(handle.tell() - 64 * 1024, 0))
            return _last_lines(handle.read().decode("utf-8", "replace"), count)
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# `anomrec broker`


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of ``anomrec broker`` to *parser* (e.g. a sub-command's parser).

    The options' ``dest`` names are :func:`serve`'s keywords (``extra_config`` is a list of
    ``(key, value)`` pairs: pass ``dict(args.extra_config)``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser to extend.

    Returns
    -------
    argparse.ArgumentParser
        *parser*, for chaining.
    """
    parser.add_argument(
        "--port", type=int, default=9092, help="client port on 127.0.0.1 (default 9092; 0 = any free)"
    )
    parser.add_argument(
        "--controller-port", type=int, default=0, help="KRaft controller port (default: any free)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None,
        help="keep topics in this directory across runs (default: a temporary directory deleted on exit)",
    )  # fmt: skip
    parser.add_argument("--heap", default="512m", help="JVM heap size (default 512m)")
    parser.add_argument(
        "--config", dest="extra_config", action="append", default=[], metavar="KEY=VALUE", type=_key_value,
        help="extra broker setting, repeatable (e.g. --config auto.create.topics.enable=true)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for readiness (default 120)"
    )
    return parser


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def serve(
    *,
    port: int = 9092,
    controller_port: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    heap: str = "512m",
    extra_config: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> int:
    """Run a broker in the foreground until SIGINT or SIGTERM: the ``anomrec broker`` command.

    Prints ``Kafka <version> ready at 127.0.0.1:PORT (started in N s)`` once clients can
    connect, then blocks. SIGINT (Ctrl-C), SIGTERM or SIGHUP stop the broker cleanly. Must be
    called from the main thread for the signals to reach it.

    Parameters
    ----------
    port : int
        Client port on 127.0.0.1 (0 picks a free one).
    controller_port : int
        KRaft controller port (0 picks a free one).
    data_dir : str or Path, optional
        Keep the broker's data here across runs; default a temporary directory, deleted on exit.
    heap : str
        JVM heap size.
    extra_config : Mapping[str, str], optional
        Broker settings added to or overriding :data:`BROKER_CONFIG`.
    timeout : float
        Seconds to wait for the broker to become ready.

    Returns
    -------
    int
        0 after a requested stop; 1 if the broker could not start or died by itself; 130 if
        interrupted before it was ready.
    """
    broker = LocalKafka(
        data_dir=data_dir, port=port, controller_port=controller_port, heap=heap, extra_config=extra_config
    )
    previous = _interrupt_on(signal.SIGTERM, signal.SIGHUP)
    # kafka-python only probes readiness here; its INFO lines would bury the broker's banner.
    client_logger = logging.getLogger("kafka")
    client_level = client_logger.level
    client_logger.setLevel(max(client_logger.getEffectiveLevel(), logging.WARNING))
    ready = False
    try:
        print(f"Starting Kafka {KAFKA_VERSION} (the first run has Maven download its jars) ...", flush=True)
        broker.start(timeout=timeout)
        ready = True
        started_in = broker.timings["total"]
        print(
            f"Kafka {KAFKA_VERSION} ready at {broker.bootstrap_servers} (started in {started_in:.1f} s)",
            flush=True,
        )
        print(f"Data in {broker.data_dir}, log in {broker.log_file}. Ctrl-C stops it.", flush=True)
        code = broker.wait()
        print(
            f"anomrec broker: Kafka exited by itself with code {code}\n{broker.log_tail()}", file=sys.stderr
        )
        return 1
    except (BrokerUnavailable, BrokerStartError) as exc:
        print(f"anomrec broker: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Stopping Kafka ...", flush=True)
        return 0 if ready else 130
    finally:
        broker.stop()
        client_logger.setLevel(client_level)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options of :func:`add_arguments` and :func:`serve`: ``python -m anomrec.localkafka``.

    Parameters
    ----------
    argv : sequence of str, optional
        Command-line arguments; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit code from :func:`serve`.
    """
    parser = argparse.ArgumentParser(
        prog="anomrec broker", description="Run a local Kafka broker until Ctrl-C."
    )
    args = add_arguments(parser).parse_args(argv)
    return serve(
        port=args.port, controller_port=args.controller_port, data_dir=args.data_dir,
        heap=args.heap, extra_config=dict(args.extra_config), timeout=args.timeout,
    )  # fmt: skip


def _interrupt_on(*signals: signal.Signals) -> dict[signal.Signals, Any]:
    """Make *signals* raise KeyboardInterrupt (as SIGINT does); return the previous handlers.

    A signal that is ignored (``nohup`` ignores SIGHUP) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    return {
        sig: signal.signal(sig, interrupt) for sig in signals if signal.getsignal(sig) is not signal.SIG_IGN
    }


if __name__ == "__main__":
    sys.exit(main())
