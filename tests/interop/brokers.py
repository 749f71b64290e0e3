"""The MQTT brokers of the interop tests: RabbitMQ 3.10's MQTT plugin and ejabberd 23.01's mod_mqtt.

Each runs as a private Erlang node of its own, in a work folder of its own, on
free loopback ports: never the system RabbitMQ's node (rabbit@localhost, 5672,
25672) nor port 1883 (the system Mosquitto). Both are started in the foreground
by us, in a process group of their own, so a test session ends exactly what it
started; `stop()` asks the node to stop (its ctl command), and the group is
killed only if it has not exited within STOP_TIMEOUT.

Hazards:
- Debian's wrappers (/usr/sbin/rabbitmq-server, ejabberdctl run as root) switch to
  the `rabbitmq` or `ejabberd` user, who cannot enter pytest's temporary folders
  (mode 0700). RabbitMQ's own scripts in /usr/lib/rabbitmq/bin run as the caller;
  for ejabberd, the ejabberdctl.cfg written here sets EXEC_CMD=as_current_user,
  which only root or the ejabberd user may use (ejabberdctl refuses anyone else).
- Erlang cookies: HOME is the work folder, so each node and its ctl share a cookie
  of their own and nothing is written to the caller's home.
- /etc/rabbitmq/rabbitmq-env.conf names the system node (NODENAME=rabbit@localhost):
  RABBITMQ_CONF_ENV_FILE points at an empty file instead.
- ejabberd's node needs no epmd: ERL_DIST_PORT makes it listen for ejabberdctl on
  a fixed port. RabbitMQ registers with the machine's epmd (the system node's, or
  one erl starts on 127.0.0.1 if none runs), under a name of its own.
- A restart keeps the node name, the ports and the work folder: RabbitMQ's
  durable queues (a persistent MQTT session's subscriptions and messages) and
  retained messages, and ejabberd's retained messages, survive it. ejabberd's
  MQTT sessions live in memory and do not.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
START_TIMEOUT = 90.0
"""RabbitMQ takes 8-15 s to start on a busy 2-core machine; ejabberd about 2 s."""
STOP_TIMEOUT = 30.0
CTL_TIMEOUT = 60.0
INSTALL_HINT = (
    "run `make test` as root (it installs them) or `sudo apt-get install rabbitmq-server "
    "ejabberd`, then stop and disable the ejabberd service it starts (`sudo systemctl "
    "disable --now ejabberd`): its default configuration takes port 1883"
)
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
"""The scripts that run as the caller; /usr/sbin's wrappers switch to the rabbitmq user."""


class BrokerError(RuntimeError):
    """A broker cannot be started, stopped or configured here; the message says what to do."""


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on the loopback now (all bound at once, then let go)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path}: none)"


@dataclass
class _Node:
    """What both brokers share: one foreground process group, its console log, a ctl."""

    workdir: Path
    node: str = field(default_factory=lambda: f"edgetest-{secrets.token_hex(4)}@localhost")
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    port: int = field(default=0, init=False)
    """The MQTT listener."""

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _env(self) -> dict[str, str]:
        # Its own Erlang cookie: erl creates $HOME/.erlang.cookie on first start.
        return {**os.environ, "HOME": str(self.workdir)}

    def _server_command(self) -> list[str]:
        raise NotImplementedError

    def _ctl_command(self) -> list[str]:
        raise NotImplementedError

    def _prepare(self) -> None:
        """Write the configuration files before a start."""

    def start(self) -> None:
        """Start the node and wait until its MQTT listener accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        with self.console.open("ab") as out:
            self._process = subprocess.Popen(
                self._server_command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._env(),
                start_new_session=True,  # its own process group: see _end
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._end()
                raise BrokerError(
                    f"{self.node} did not listen on {HOST}:{self.port} within "
                    f"{START_TIMEOUT:.0f} s; its console ({self.console}):\n{_tail(self.console)}"
                    f"\nits log:\n{self.log()[-3000:]}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Ask the node to stop and wait for it; kill its group if it does not. Never raises."""
        if not self.running:
            return
        with contextlib.suppress(BrokerError):  # _end kills what did not stop
            self.ctl("stop")
        self._end()

    def restart(self) -> None:
        """Stop the node and start it again: same name, ports and work folder."""
        self.stop()
        self.start()

    def ctl(self, *args: str) -> str:
        """Run the node's ctl command (rabbitmqctl, ejabberdctl); returns its output."""
        try:
            done = subprocess.run(
                [*self._ctl_command(), *args],
                capture_output=True,
                text=True,
                check=False,
                cwd=self.workdir,
                env=self._env(),
                timeout=CTL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise BrokerError(f"{' '.join(args)} on {self.node}: no answer in time") from None
        if done.returncode != 0:
            raise BrokerError(
                f"{' '.join(args)} on {self.node} failed (exit {done.returncode}):\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        return done.stdout

    def log(self) -> str:
        """The node's own log, for post-mortems and for tests that check what it saw."""
        raise NotImplementedError

    def _end(self) -> None:
        """Wait for the process group to exit; SIGKILL it after STOP_TIMEOUT. Never raises."""
        process = self._process
        if process is None:
            return
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a child the leader left behind
        self._process = None


@dataclass
class RabbitMq(_Node):
    """A RabbitMQ node with the rabbitmq_mqtt plugin only (no management), MQTT 3.1.1.

    Anonymous MQTT clients are the user `guest` in the vhost `/`, publishing to the
    exchange amq.topic with `/` in topics turned into `.` in routing keys (what
    `set_topic_permissions` patterns match).
    """

    dist_port: int = field(default=0, init=False)
    amqp_port: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise BrokerError(f"RabbitMQ is not installed: {INSTALL_HINT}")
        self.port, self.dist_port, self.amqp_port = free_ports(3)

    def _env(self) -> dict[str, str]:
        folder = self.workdir
        return {
            **super()._env(),
            "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": HOST,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
            "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
            # Erlang distribution on the loopback only (it listens on every address otherwise).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": HOST,
        }

    def _prepare(self) -> None:
        (self.workdir / "rabbitmq-env.conf").write_text("# empty: not /etc/rabbitmq's\n")
        (self.workdir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        (self.workdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {HOST}:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = {HOST}:{self.port}\n"
            "mqtt.allow_anonymous = true\n"
        )

    def _server_command(self) -> list[str]:
        return [str(RABBITMQ_BIN / "rabbitmq-server")]

    def _ctl_command(self) -> list[str]:
        return [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.node]

    def log(self) -> str:
        path = self.workdir / "log" / f"{self.node}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class Ejabberd(_Node):
    """An ejabberd node whose only listener is mod_mqtt (MQTT 5 and 3.1.1).

    Authentication is anonymous: any user name and password log in (mod_mqtt refuses
    a CONNECT without a user name). `allow_publish(...)` makes mod_mqtt refuse
    publishes to any other topic (PUBACK with a failure code), as a province's ACL does.
    """

    dist_port: int = field(default=0, init=False)
    publishable: tuple[str, ...] = field(default=(), init=False)
    """The topic filters mod_mqtt allows publishes to now; empty: all."""
    _ejabberdctl: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        # /usr/sbin is not on a user's PATH everywhere.
        found = shutil.which("ejabberdctl") or shutil.which("ejabberdctl", path="/usr/sbin")
        if found is None:
            raise BrokerError(f"ejabberd is not installed: {INSTALL_HINT}")
        if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != "ejabberd":
            raise BrokerError(
                "ejabberdctl runs only as root or the ejabberd user: run the interop tests "
                "as root (the fixture starts a private node, not the system service)"
            )
        self._ejabberdctl = found
        self.port, self.dist_port = free_ports(2)

    def _prepare(self) -> None:
        folder = self.workdir
        (folder / "ejabberdctl.cfg").write_text(
            "# A private node (tests/interop/brokers.py).\n"
            # No epmd: the node listens for ejabberdctl on this port.
            f"ERL_DIST_PORT={self.dist_port}\n"
            'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0 '
            '-kernel inet_dist_use_interface {127,0,0,1}"\n'
            # As root, do not su to the ejabberd user: it cannot enter pytest's folders.
            "EXEC_CMD=as_current_user\n"
        )
        (folder / "inetrc").write_text(
            '{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n'
        )
        self._write_config()

    def _write_config(self) -> None:
        # Topic filters are quoted: ejabberd reads a plain YAML scalar as an atom, which
        # mod_mqtt rejects as a "Malformed topic filter".
        access = "".join(f"      {json.dumps(topic)}: all\n" for topic in self.publishable)
        (self.workdir / "ejabberd.yml").write_text(
            "hosts: [localhost]\n"
            "loglevel: info\n"
            "log_rotate_count: 0\n"
            "auth_method: [anonymous]\n"
            "anonymous_protocol: login_anon\n"
            "listen:\n"
            f"  - port: {self.port}\n"
            f'    ip: "{HOST}"\n'
            "    module: mod_mqtt\n"
            "modules:\n"
            "  mod_mqtt:\n" + (f"    access_publish:\n{access}" if access else "    {}\n")
        )

    def allow_publish(self, *topic_filters: str) -> None:
        """From now on refuse every publish but to these topic filters (none: allow all);
        the running node reloads its configuration.

        mod_mqtt's access_publish is an allow-list: a publish is allowed when a filter
        that matches its topic has a rule that allows it, and refused (PUBACK 0x90, Topic
        name invalid) when none does, so refusing one topic means listing all the others.
        """
        self.publishable = tuple(topic_filters)
        self._write_config()
        self.ctl("reload_config")

    def _options(self) -> list[str]:
        folder = self.workdir
        return [
            "--node", self.node,
            "--config-dir", str(folder),
            "--config", str(folder / "ejabberd.yml"),
            "--spool", str(folder / "spool"),
            "--logs", str(folder / "logs"),
        ]  # fmt: skip

    def _server_command(self) -> list[str]:
        return [self._ejabberdctl, *self._options(), "foreground"]

    def _ctl_command(self) -> list[str]:
        return [self._ejabberdctl, *self._options()]

    def log(self) -> str:
        path = self.workdir / "logs" / "ejabberd.log"
        return path.read_text(errors="replace") if path.exists() else ""
