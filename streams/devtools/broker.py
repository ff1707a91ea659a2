"""Run a single-node Apache Kafka 4 broker locally, straight from Maven Central jars.

Why: the stream processor and its integration tests need a real broker, and a developer
machine or CI runner may have no Docker. Only ``java`` (17+) and ``mvn`` must be on PATH:
the jars are resolved once into ``deploy/kafka/lib`` and the broker runs detached, so it
outlives the command that started it and is stopped again through its pid file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from streams.devtools.kafka_properties import NodeAddress, single_node_properties
from streams.devtools.private_files import write_private
from streams.errors import StreamsError
from streams.kafka.admin import quiet_client_config

KAFKA_VERSION = "4.4.0"
REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_DEPLOY_DIR = REPO_ROOT / "deploy" / "kafka"
POM = KAFKA_DEPLOY_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DEPLOY_DIR / "log4j2.properties"
KAFKA_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"
# Created and deleted while waiting for startup: a topic round trip proves the controller
# accepts writes, which metadata alone does not.
READY_PROBE_TOPIC = "streams-broker-ready-probe"


class BrokerError(StreamsError):
    """The local broker could not be resolved, started or stopped; the message says why."""


def say(message: str, end: str = "\n") -> None:
    """Progress goes to stderr so that stdout stays clean for callers printing results."""
    print(message, end=end, file=sys.stderr, flush=True)


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"{tool} not found on PATH; {hint}")
    return path


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


def admin_client(config: Mapping[str, Any]) -> AdminClient:
    """An AdminClient with the given connection settings whose failures reach the caller
    as exceptions: librdkafka's own log lines would interleave with the progress output
    (a purged late metadata reply) or repeat every second (a node that is down)."""
    return AdminClient({**quiet_client_config(config["bootstrap.servers"]), **config})


def _command_line(pid: int) -> str:
    """The command line of a process, empty if it is gone (/proc on Linux, ps elsewhere)."""
    if Path("/proc/self").exists():
        try:
            return (
                Path(f"/proc/{pid}/cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
        except OSError:
            return ""
    ps = subprocess.run(
        ["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True, text=True
    )
    return ps.stdout


def _process_state(pid: int) -> str:
    """The one-letter state of a process (R, S, T for stopped, ...), empty if unknown."""
    if Path("/proc/self").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return ""
        return stat.rpartition(")")[2].split()[0]  # the name in parentheses may hold spaces
    ps = subprocess.run(
        ["ps", "-o", "state=", "-p", str(pid)], capture_output=True, text=True
    )
    return ps.stdout.strip()[:1]


class Broker:
    """One local KRaft broker (broker and controller in one JVM) and its data directory.

    ``host`` stays ``localhost`` for a local broker; set it only to point the same
    interface (``bootstrap``, ``status``, an idempotent ``start``) at an existing broker.
    """

    def __init__(
        self,
        port: int = 9092,
        controller_port: int = 9093,
        data_dir: Path | None = None,
        lib_dir: Path = KAFKA_DEPLOY_DIR / "lib",
        heap: tuple[str, str] = ("1g", "1g"),  # kafka-server-start.sh's KAFKA_HEAP_OPTS
        host: str = "localhost",
    ) -> None:
        self.port = port
        self.controller_port = controller_port
        self.data_dir = Path(data_dir or REPO_ROOT / ".kafka" / f"data-{port}").resolve()
        self.lib_dir = Path(lib_dir).resolve()
        self.heap = heap
        self.host = host
        self.node_id = 1
        # The JVM when this object started it: polling it reaps the child, which would
        # otherwise linger as a zombie that still looks alive.
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Broker({self.bootstrap}, data_dir={self.data_dir})"

    @property
    def launched(self) -> bool:
        """Whether this object launched a broker JVM (which may have exited since)."""
        return self._process is not None

    def launched_is_running(self) -> bool:
        """Whether the broker JVM this object launched still runs."""
        return self._process is not None and self._process.poll() is None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def address(self) -> NodeAddress:
        return NodeAddress(self.node_id, self.host, self.port, self.controller_port)

    @property
    def pid(self) -> int | None:
        """This data dir's broker JVM if it runs (paused included), else None."""
        return self._pid()

    def client_config(self) -> dict[str, str]:
        """How a client reaches this broker, by librdkafka's property names."""
        return {"bootstrap.servers": self.bootstrap}

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        """Where Kafka keeps topic data and the KRaft metadata log."""
        return self.data_dir / "kraft-combined-logs"

    @property
    def metadata_dir(self) -> Path:
        """Where the KRaft metadata log lives, with meta.properties once formatted."""
        return self.log_dirs

    def resolve(self) -> None:
        """Download the broker jars once; later runs reuse ``lib_dir``, with no network."""
        if (self.lib_dir / KAFKA_JAR).exists():
            return
        if self.lib_dir.exists() and any(self.lib_dir.iterdir()):
            raise BrokerError(
                f"{self.lib_dir} has no {KAFKA_JAR};"
                " delete that directory to resolve the jars again"
            )
        mvn = _require("mvn", "install Maven 3.8+ to download the Kafka jars")
        say(f"resolving Apache Kafka {KAFKA_VERSION} jars with Maven (first run only)...")
        began = time.monotonic()
        # Download into a scratch directory and rename it at the end, so an interrupted
        # download is not taken for a complete lib dir next time.
        partial = self.lib_dir.with_name(self.lib_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        mvn_run = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
        )
        if mvn_run.returncode != 0 or not (partial / KAFKA_JAR).exists():
            raise BrokerError(
                f"Maven could not resolve the Kafka jars (exit {mvn_run.returncode}):\n"
                + _tail(mvn_run.stdout + mvn_run.stderr)
            )
        with contextlib.suppress(FileNotFoundError):
            self.lib_dir.rmdir()  # empty, checked above
        partial.rename(self.lib_dir)
        jars = len(list(self.lib_dir.glob("*.jar")))
        say(f"resolved {jars} jars into {self.lib_dir} in {time.monotonic() - began:.0f}s")

    def start(self, timeout: float = 90) -> bool:
        """Start the broker in the background unless one already answers; True if it did.

        Returns only once clients can really use the broker (an open port is not enough:
        the KRaft controller needs a few more seconds), waiting up to ``timeout`` seconds
        after launch. A broker that dies or stays unusable raises ``BrokerError`` with the
        end of its log, and one launched here is then stopped rather than left half-started.
        """
        if self._metadata() is not None:
            say(f"Kafka broker already running at {self.bootstrap}")
            return False
        pid = self._pid()
        if pid is not None:
            say(f"Kafka broker (pid {pid}) is already starting; waiting for it")
            self._wait_ready(pid, timeout)
            return False
        pid = self.launch()
        try:
            self._wait_ready(pid, timeout)
        except BaseException:
            self._terminate(pid, timeout=10)
            raise
        return True

    def launch(self) -> int:
        """Format the storage if it is new and start the JVM without waiting for it to
        serve; its pid. For nodes that can only serve together, as a quorum does."""
        java = _require("java", "install a JDK 17+ (the Kafka 4 broker needs Java 17)")
        self.resolve()
        self._format(java)
        return self._launch(java)

    def wait_ready(self, timeout: float = 90) -> None:
        """Wait until clients can use the launched broker; BrokerError if it exits first
        or is not ready within ``timeout`` seconds."""
        pid = self._pid()
        if pid is None:
            raise BrokerError(f"no Kafka broker runs from {self.data_dir}")
        self._wait_ready(pid, timeout)

    def stop(self, timeout: float = 30) -> bool:
        """Stop with SIGTERM (a clean shutdown), SIGKILL after ``timeout``; False if none
        runs."""
        pid = self._pid()
        if pid is None:
            say(f"no Kafka broker running from {self.data_dir}")
            return False
        say(f"stopping Kafka broker (pid {pid})...")
        if not self._terminate(pid, timeout):
            say(f"Kafka broker did not stop within {timeout:g}s; killed it")
        return True

    def kill(self) -> bool:
        """SIGKILL the broker without a clean shutdown, e.g. to test crash recovery."""
        pid = self._pid()
        if pid is None:
            return False
        self._signal(pid, signal.SIGKILL)
        self._wait_exit(pid, timeout=10)
        self.pid_file.unlink(missing_ok=True)
        return True

    def pause(self) -> bool:
        """SIGSTOP the broker: a stalled node that keeps its sockets and sessions open
        until the others' timeouts fire. Returns once it is stopped; False if none runs."""
        return self._send(signal.SIGSTOP, paused=True)

    def resume(self) -> bool:
        """SIGCONT a paused broker; returns once it runs again. False if none runs."""
        return self._send(signal.SIGCONT, paused=False)

    def is_paused(self) -> bool:
        pid = self._pid()
        return pid is not None and _process_state(pid) == "T"

    def _send(self, sig: signal.Signals, paused: bool) -> bool:
        """Signals take effect asynchronously; wait until the process state shows it."""
        pid = self._pid()
        if pid is None:
            return False
        self._signal(pid, sig)
        deadline = time.monotonic() + 10
        while self.is_paused() != paused and time.monotonic() < deadline:
            time.sleep(0.01)
        return True

    def restart(self, timeout: float = 90) -> bool:
        """Stop the broker if it runs, then start it; True once it is back."""
        self.stop()
        return self.start(timeout)

    def status(self) -> dict[str, Any]:
        """What runs: ``running`` means some broker answers at ``bootstrap``, ``pid`` is
        this data dir's JVM if alive, ``topics`` counts topics except Kafka's internal
        ``__`` ones."""
        metadata = self._metadata()
        return {
            "running": metadata is not None,
            "pid": self._pid(),
            "bootstrap": self.bootstrap,
            "data_dir": str(self.data_dir),
            "topics": None
            if metadata is None
            else sum(not t.startswith("__") for t in metadata.topics),
        }

    def _server_properties(self) -> str:
        return single_node_properties(self.address, self.log_dirs)

    #: The JVM options Kafka's own bin/kafka-run-class.sh starts a broker with
    #: (KAFKA_JVM_PERFORMANCE_OPTS). Without them G1 aims at 200 ms pauses, not 20, and
    #: every client of the broker stalls for each young collection. Pauses are logged
    #: to gc.log in the data dir.
    JVM_PERFORMANCE_OPTS = (
        "-server",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
    )

    def _java_args(self, java: str) -> list[str]:
        return [
            java,
            "-cp",
            str(self.lib_dir / "*"),
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        ]

    def _format(self, java: str) -> None:
        """KRaft storage is formatted once; later starts reuse it. A directory found
        empty (a replaced disk) is formatted alone, as an operator would with
        --ignore-formatted. The properties may hold passwords: owner only."""
        write_private(self.properties_file, self._server_properties())
        directories = {self.log_dirs, self.metadata_dir}
        if all((d / "meta.properties").exists() for d in directories):
            return
        self._storage_tool(
            java,
            "format",
            "-c",
            str(self.properties_file),
            "--ignore-formatted",
            *self._format_arguments(java),
        )

    def _format_arguments(self, java: str) -> list[str]:
        """A new cluster id and a quorum of this one node."""
        cluster_id = self._storage_tool(java, "random-uuid").split()[-1]
        return ["-t", cluster_id, "--standalone"]

    def _storage_tool(self, java: str, *args: str) -> str:
        command = [*self._java_args(java), "kafka.tools.StorageTool", *args]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0 or not run.stdout.strip():
            output = _tail(run.stdout + run.stderr)
            raise BrokerError(
                f"kafka StorageTool {args[0]} failed (exit {run.returncode}):\n{output}"
            )
        return run.stdout

    def _launch(self, java: str) -> int:
        low, high = self.heap
        command = [
            *self._java_args(java),
            f"-Xms{low}",
            f"-Xmx{high}",
            *self.JVM_PERFORMANCE_OPTS,
            f"-Xlog:gc:file={self.data_dir / 'gc.log'}"
            ":time,uptime:filecount=2,filesize=10m",
            "kafka.Kafka",
            str(self.properties_file),
        ]
        with open(self.log_file, "w") as log:
            # A new session keeps the broker alive after this process exits and out of
            # reach of Ctrl-C in the terminal that started it.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._process.pid}\n")
        say(f"started Kafka broker (pid {self._process.pid}), log: {self.log_file}")
        return self._process.pid

    def _wait_ready(self, pid: int, timeout: float) -> None:
        say(f"waiting for Kafka at {self.bootstrap}", end="")
        began = time.monotonic()
        while not self.is_ready():
            if not self._is_running(pid):
                say("")
                self.pid_file.unlink(missing_ok=True)
                raise BrokerError(
                    f"Kafka broker exited during startup; end of {self.log_file}:\n"
                    + self._log_tail()
                )
            if time.monotonic() - began > timeout:
                say("")
                raise BrokerError(
                    f"Kafka broker did not become ready at {self.bootstrap}"
                    f" within {timeout:g}s; "
                    f"end of {self.log_file}:\n{self._log_tail()}"
                )
            say(".", end="")
            time.sleep(1)
        say(f" ready after {time.monotonic() - began:.1f}s")

    def is_ready(self) -> bool:
        """Whether clients can use the broker: it answers and accepts a topic's creation."""
        metadata = self._metadata()
        if metadata is None or not metadata.brokers:
            return False
        admin = self._admin()
        try:
            if READY_PROBE_TOPIC not in metadata.topics:
                created = admin.create_topics([NewTopic(READY_PROBE_TOPIC, 1, 1)])
                created[READY_PROBE_TOPIC].result(timeout=10)
            admin.delete_topics([READY_PROBE_TOPIC])[READY_PROBE_TOPIC].result(timeout=10)
        except (KafkaException, TimeoutError):
            return False
        return True

    def _admin(self) -> AdminClient:
        return admin_client(self.client_config())

    def _metadata(self) -> ClusterMetadata | None:
        """Cluster metadata from whatever answers at ``bootstrap``, or None.

        A plain TCP connect first keeps the usual "nothing running" case instant, and
        spares the terminal librdkafka's connection-refused log lines.
        """
        try:
            socket.create_connection((self.host, self.port), timeout=1).close()
        except OSError:
            return None
        try:
            return self._admin().list_topics(timeout=3)
        except KafkaException:
            return None

    def _pid(self) -> int | None:
        """The pid from the pid file if that process is still this broker; a stale file
        is removed."""
        try:
            pid = int(self.pid_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            pid = None
        if pid is not None and self._is_running(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def _is_running(self, pid: int) -> bool:
        """Whether ``pid`` is still this broker's JVM: after a reboot or crash the pid in
        the file may belong to another process, which must never be signalled."""
        if self._process is not None and self._process.pid == pid:
            return self._process.poll() is None
        return str(self.properties_file) in _command_line(pid)

    def signal_stop(self) -> bool:
        """Ask the broker to shut down cleanly without waiting; False if none runs."""
        pid = self._pid()
        if pid is None:
            return False
        self._signal_stop(pid)
        return True

    def _signal_stop(self, pid: int) -> None:
        """SIGTERM; a paused broker is continued too, or it would never act on it."""
        self._signal(pid, signal.SIGTERM)
        self._signal(pid, signal.SIGCONT)

    def _terminate(self, pid: int, timeout: float) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; True if the broker shut down cleanly."""
        self._signal_stop(pid)
        clean = self._wait_exit(pid, timeout)
        if not clean:
            self._signal(pid, signal.SIGKILL)
            self._wait_exit(pid, timeout=10)
        self.pid_file.unlink(missing_ok=True)
        return clean

    def _signal(self, pid: int, sig: signal.Signals) -> None:
        if self._is_running(pid):
            with contextlib.suppress(ProcessLookupError):  # it may exit in between
                os.kill(pid, sig)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._is_running(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def _log_tail(self) -> str:
        try:
            return _tail(self.log_file.read_text(errors="replace")) or "(empty)"
        except FileNotFoundError:
            return "(no log)"
