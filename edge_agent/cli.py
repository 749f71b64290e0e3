"""`edge-agent`: run the agent, check configs, read tags once, print the schema, simulate, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from edge_agent.ask import Silent
    from edge_agent.config import AgentConfig
    from edge_agent.errors import ConfigError, ConfigFileMissing

EX_OK = 0
EX_USAGE = 64
EX_NOINPUT = 66
EX_SOFTWARE = 70
"""A core task kept failing: the agent stopped so that systemd starts it afresh."""
EX_CONFIG = 78
EX_PIPE = 128 + signal.SIGPIPE
"""A reader that went away (`edge-agent check F | head -1`): the shell's code for SIGPIPE."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # Nobody reads any more: stop quietly, and keep Python's exit-time flush of
        # stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_PIPE
    return code


# What `COMMAND --help` says beyond its arguments: what it does, and its exit codes.
_RAW = argparse.RawDescriptionHelpFormatter
_EVERY_COMMAND = """exit status of every command: 2 when the command line cannot be read, 141 when
the reader of its output went away (| head); `edge-agent COMMAND --help` tells
the others."""
_RUN = """Poll the devices of CONFIG, judge their alarms, keep every reading in the store
and send it to the broker, until SIGTERM or SIGINT; SIGHUP reloads CONFIG. Logs
go to stderr: JSON lines (under systemd each with its journal priority), or a
readable console on a terminal."""
_RUN_CODES = """exit status:
  0   stopped by SIGTERM or SIGINT, everything buffered committed
  1   the store cannot be opened: the message says why
  66  CONFIG is missing or cannot be read
  70  a core task (committer, clock guard, uplink) kept failing: systemd starts
      the agent afresh
  78  CONFIG is invalid (each problem as FILE:LINE:COLUMN), or EDGE_AGENT_CLOCK
      is not kernel, synced or unsynced"""
_CHECK = """Validate each FILE as `run` would, without starting anything: prints FILE: OK
and how long an outage its store holds, or every problem on stderr as
FILE:LINE:COLUMN: PATH: MESSAGE."""
_CHECK_CODES = """exit status, the worst over the files:
  0   every file is valid
  66  a file is missing or cannot be read
  78  a file is invalid"""
_SCHEMA = """Print the JSON Schema of the config file (docs/config.schema.json holds the
same), for an editor that checks YAML as it is typed."""
_SCHEMA_CODES = """exit status:
  0   the schema was printed"""
_SIMULATE = """Serve the simulated devices of SCENARIO (Modbus or OPC UA servers on this
machine) until SIGTERM or SIGINT: a plant to try a config on."""
_SIMULATE_CODES = """exit status:
  0   stopped by SIGTERM or SIGINT
  64  a --port is not written DEVICE=PORT
  66  SCENARIO is missing or cannot be read
  78  SCENARIO is invalid"""
_CERT = """Make this gateway's OPC UA client certificate (DER) and private key (PEM, mode
0600), and print the certificate's SHA-256 fingerprint. Hand the certificate to
the server's operator; the key stays on the gateway. No file is overwritten."""
_CERT_CODES = """exit status:
  0   both files written
  64  --cert or --key exists already: remove it, or choose another name"""
_READ = """Read every tag of CONFIG's devices once, as `run` would, and print a table of
values, qualities and why a tag is bad: for commissioning. Nothing is stored or
sent."""
_READ_CODES = """exit status:
  0   every tag read good (q=0, or q=1: uncertain)
  1   a tag is bad (q=2 or worse: no answer, refused, a sensor fault...)
  64  --device names no device of CONFIG
  66  CONFIG is missing or cannot be read
  78  CONFIG is invalid"""
_DEMO = """Run a private broker, the simulated tank farm and an agent on loopback, and
show what the platform receives; the broker stops for a while to show back-fill.
Needs mosquitto."""
_DEMO_CODES = """exit status:
  0   stopped by Ctrl-C or after --duration
  69  mosquitto is not installed: the message says how to install it"""


class _Version(argparse.Action):
    """`--version`: the installed package's version, looked up only when asked (reading
    package metadata costs about 50 ms, which no other command should pay)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        from importlib.metadata import version

        print(f"edge-agent {version('edge-agent')}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-agent", description=__doc__, epilog=_EVERY_COMMAND, formatter_class=_RAW
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the agent with a config file",
        description=_RUN,
        epilog=_RUN_CODES,
        formatter_class=_RAW,
    )
    run.add_argument("config", type=Path, help="the agent's config file (YAML); check validates it")
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the least severe lines logged (default: info); debug adds a line per poll, "
        "per publish and per PUBACK",
    )
    run.set_defaults(handler=_run)

    check = commands.add_parser(
        "check",
        help="validate config files: prints OK or every error with file:line:column",
        description=_CHECK,
        epilog=_CHECK_CODES,
        formatter_class=_RAW,
    )
    check.add_argument("files", nargs="+", type=Path, metavar="FILE", help="a config file (YAML)")
    check.set_defaults(handler=_check)

    status = commands.add_parser(
        "status",
        help=(
            "devices, tags, alarms, back-log, uplink and losses from the running agent; "
            "when it is not running, what its store file holds"
        ),
        description=(
            "Asks this config's agent on its local socket, then on metrics.listen, and "
            "describes it only when it names this file's gateway code and runs this very "
            "file (its SHA-256, as sha256sum prints it)."
        ),
        epilog=STATUS_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("config", type=Path)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)

    top = commands.add_parser(
        "top",
        help=(
            "the running agent live: devices, every tag's value and quality, active alarms, "
            "back-log and uplink, refreshed every second; q quits"
        ),
        description=(
            "Asks this config's agent as `status` does (its local socket, then metrics.listen; "
            "the gateway code and the file's SHA-256 checked) and redraws its picture every "
            "second. q, Ctrl-C or SIGTERM quits."
        ),
        epilog=TOP_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("config", type=Path)
    top.add_argument(
        "--once", action="store_true", help="print one screen and exit (also when not a terminal)"
    )
    top.set_defaults(handler=_top)

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the config file",
        description=_SCHEMA,
        epilog=_SCHEMA_CODES,
        formatter_class=_RAW,
    )
    schema.set_defaults(handler=_schema)

    simulate = commands.add_parser(
        "simulate",
        help="serve a simulated plant from a scenario",
        description=_SIMULATE,
        epilog=_SIMULATE_CODES,
        formatter_class=_RAW,
    )
    simulate.add_argument(
        "scenario",
        type=Path,
        help="scenario file (YAML), e.g. drivers/simulator/scenarios/demo.yaml",
    )
    simulate.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="DEVICE=PORT",
        help="serve DEVICE on PORT instead of the scenario's port (repeatable)",
    )
    simulate.set_defaults(handler=_simulate)

    cert = commands.add_parser(
        "opcua-cert",
        help="make this gateway's OPC UA client certificate and key (hand the .der to the server)",
        description=_CERT,
        epilog=_CERT_CODES,
        formatter_class=_RAW,
    )
    cert.add_argument("--cert", type=Path, default=Path("edge-agent-cert.der"),
                      help="certificate file to write (DER)")  # fmt: skip
    cert.add_argument("--key", type=Path, default=Path("edge-agent-key.pem"),
                      help="private key file to write (PEM, mode 0600)")  # fmt: skip
    cert.add_argument(
        "--host", default=None, help="host name in the certificate (default: this one)"
    )
    cert.add_argument("--uri", default=None, help="application URI (default: urn:edge-agent:HOST)")
    cert.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    cert.set_defaults(handler=_opcua_cert)

    read = commands.add_parser(
        "read",
        help="read every tag once and print a table; exit 1 when any tag is bad",
        description=_READ,
        epilog=_READ_CODES,
        formatter_class=_RAW,
    )
    read.add_argument("config", type=Path, help="the agent's config file (YAML)")
    read.add_argument("--device", action="append", default=[], metavar="NAME",
                      help="read only this device (repeatable)")  # fmt: skip
    read.add_argument(
        "--raw",
        action="store_true",
        help="also show each value before scaling (Modbus; OPC UA devices ignore it)",
    )
    read.add_argument(
        "--guess-order",
        action="store_true",
        help=(
            "try the four byte orders on each tag with a range; say which fit, and the "
            "byte_order to set on the device or on each tag (Modbus; OPC UA ignores it)"
        ),
    )
    read.set_defaults(handler=_read)

    demo = commands.add_parser(
        "demo",
        help="run broker, simulated plant and agent on loopback; show what is sent",
        description=_DEMO,
        epilog=_DEMO_CODES,
        formatter_class=_RAW,
    )
    demo.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    demo.add_argument(
        "--outage-at",
        type=float,
        default=35.0,
        metavar="S",
        help="stop the broker S seconds in, to show back-fill (0: no outage)",
    )
    demo.add_argument(
        "--outage-for", type=float, default=8.0, metavar="S", help="length of the outage"
    )
    demo.set_defaults(handler=_demo)
    return parser


def _check(args: argparse.Namespace) -> int:
    from edge_agent.config import load_config
    from edge_agent.errors import ConfigError, ConfigFileMissing

    worst = EX_OK
    for path in args.files:
        try:
            config = load_config(path)
        except (ConfigFileMissing, ConfigError) as exc:
            worst = max(worst, _refused(exc))
        else:
            print(f"{path}: OK")
            for line in store_outlook(config) + link_advice(config):
                print(f"{path}: {line}")
    return worst


def store_outlook(config: AgentConfig) -> list[str]:
    """How long an outage the store holds at the configured rates; warns if under retention."""
    from edge_agent.config.types import format_size
    from edge_agent.store.capacity import outage_capacity_s

    rate = config.readings_per_second()
    holds = outage_capacity_s(config.store.max_size, rate)
    lines = [
        f"the store (max_size {format_size(config.store.max_size)}) holds about "
        f"{_days(holds)} of outage at {rate:.1f} readings/s before it thins the oldest"
    ]
    if holds < config.store.retention:
        needed = config.store.max_size * config.store.retention / holds
        lines.append(
            f"warning: store.retention is {_days(config.store.retention)}, longer than the "
            f"store holds; raise store.max_size to about {_round_up_size(needed)} to hold "
            "it, or accept that a longer outage is thinned"
        )
    return lines


def link_advice(config: AgentConfig) -> list[str]:
    """What a Modbus link choice costs where it cannot help (connection: own)."""
    from edge_agent.drivers.modbus.config import ModbusDevice, connection_advice

    return connection_advice(d for d in config.devices if isinstance(d, ModbusDevice))


def _round_up_size(size: float) -> str:
    """A size a technician would write: 2.3GiB, 640MiB."""
    gib, mib = 1024**3, 1024**2
    if size >= gib:
        return f"{math.ceil(size / gib * 10) / 10:g}GiB"
    return f"{math.ceil(size / mib)}MiB"


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days" if seconds >= 86400 else f"{seconds / 3600:.1f} hours"


def _load(path: Path) -> AgentConfig | int:
    """The config, or the exit code after printing why it was refused."""
    from edge_agent.config import load_config
    from edge_agent.errors import ConfigError, ConfigFileMissing

    try:
        return load_config(path)
    except (ConfigFileMissing, ConfigError) as exc:
        return _refused(exc)


def _refused(exc: ConfigFileMissing | ConfigError) -> int:
    """Say on stderr why a file was refused; its exit code."""
    from edge_agent.errors import ConfigFileMissing

    if isinstance(exc, ConfigFileMissing):
        print(exc, file=sys.stderr)
        return EX_NOINPUT
    print("\n".join(exc.problems), file=sys.stderr)
    return EX_CONFIG


STATUS_HEALTHY = 0
STATUS_DEGRADED = 1
STATUS_NOT_RUNNING = 3
STATUS_OTHER_AGENT = 4
STATUS_CODES = """exit status (0, 3 and 4 as an init script's `status`):
  0  running and healthy
  1  running, degraded or failing: the reasons are printed
  3  not running: nothing answers; what the store file holds is printed
  4  something else answers where this config's agent would (another gateway's
     agent, an agent of another file or of this one before an edit, not
     edge-agent): nothing is described
  66, 78  the config file is missing, or invalid"""
TOP_CODES = """exit status:
  0  shown, and quit (or one screen printed with --once, or when not a terminal)
  3  not running: nothing answers where this config's agent would
  4  something else answers where this config's agent would: nothing is shown
  66, 78  the config file is missing, or invalid"""


def _status(args: argparse.Namespace) -> int:
    """This config's running agent's account (ask.py); when none answers, the store file's."""
    from edge_agent.ask import Running, Silent, ask
    from edge_agent.status import active_alarms, render_running

    config = _load(args.config)
    if isinstance(config, int):
        return config
    answer = ask(config, args.config)
    if isinstance(answer, Silent):
        return _status_from_store(config, answer, args.json)
    if not isinstance(answer, Running):
        print(f"edge-agent status: not described: {answer.why}", file=sys.stderr)
        return STATUS_OTHER_AGENT
    if args.json:
        where = {"running": True, "answered_on": answer.where}
        print(json.dumps({**where, **answer.document, "alarms": active_alarms(answer)}, indent=2))
    else:
        print(render_running(answer))
    return STATUS_HEALTHY if answer.document["health"]["status"] == "ok" else STATUS_DEGRADED


def _status_from_store(config: AgentConfig, silent: Silent, as_json: bool) -> int:
    from edge_agent.status import read_status, render

    why = f"edge-agent is not running: nothing answers ({'; '.join(silent.tried) or 'nowhere'})"
    if not config.metrics.enabled:
        why += "; metrics.enabled is false, so no port was asked"
    print(f"{why}; what the store file tells:", file=sys.stderr)
    try:
        status = read_status(Path(config.store.path), config.store.max_size)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return STATUS_NOT_RUNNING
    document = {"running": False, **status.as_json()}
    print(json.dumps(document, indent=2) if as_json else render(status))
    return STATUS_NOT_RUNNING


def _top(args: argparse.Namespace) -> int:
    from edge_agent.ask import Stranger
    from edge_agent.top import watch
    from edge_agent.top.fetch import look

    config = _load(args.config)
    if isinstance(config, int):
        return config
    answer = watch(partial(look, config, args.config), once=args.once or not sys.stdout.isatty())
    if isinstance(answer, Stranger):
        print(f"edge-agent top: not shown: {answer.why}", file=sys.stderr)
        return STATUS_OTHER_AGENT
    if answer is not None:
        print(
            f"edge-agent top: no agent of gateway {config.gateway.code} answers "
            f"({'; '.join(answer.tried) or 'nowhere to ask: metrics.enabled is false'}); "
            "is it running? systemctl status edge-agent",
            file=sys.stderr,
        )
        return STATUS_NOT_RUNNING
    return EX_OK


def _schema(args: argparse.Namespace) -> int:
    from edge_agent.config.jsonschema import config_json_schema_text

    sys.stdout.write(config_json_schema_text())
    return EX_OK


def _run(args: argparse.Namespace) -> int:
    from edge_agent import logs
    from edge_agent.clock import ClockWatch, clock_source
    from edge_agent.errors import StoreError
    from edge_agent.runtime import Agent, Systemd
    from edge_agent.service.notify import Notifier, watchdog_interval

    logs.configure(args.log_level)
    config = _load(args.config)
    if isinstance(config, int):
        return config
    try:
        clock = ClockWatch(synced=clock_source())
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EX_CONFIG
    systemd = Systemd(Notifier.from_environ(), watchdog_interval())
    fatal: list[str] = []

    async def serve() -> None:
        stop = _stop_on_signals()
        agent = Agent(config, config_path=args.config, clock=clock, systemd=systemd)
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, agent.request_reload)
        await agent.run(stop)
        if agent.fatal is not None:
            fatal.append(agent.fatal)

    try:
        _run_bounded(serve())
    except StoreError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        systemd.notifier.close()
    code = EX_SOFTWARE if fatal else EX_OK
    _exit_past_hung_threads(code)
    return code


LEFTOVERS_WITHIN_S = 0.5
"""After the agent stopped, how long tasks it left behind get to end their cancellation."""


def _run_bounded(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run`, except that the end is bounded: asyncio.run waits without limit for
    every task left behind to end and every worker thread to finish, and one that does
    not (a cancellation swallowed, a DNS lookup that hangs) would keep a stopped agent
    alive for ever. Here such a task is named and abandoned, and a worker thread that
    does not end is left to `_exit_past_hung_threads`."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main)
    finally:
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            _, pending = loop.run_until_complete(
                asyncio.wait(leftovers, timeout=LEFTOVERS_WITHIN_S)
            )
            if pending:
                print(
                    f"edge-agent: {len(pending)} task(s) did not stop and were abandoned: "
                    + ", ".join(sorted(task.get_name() for task in pending)),
                    file=sys.stderr,
                )
        loop.run_until_complete(loop.shutdown_asyncgens())
        with contextlib.suppress(TimeoutError):
            loop.run_until_complete(
                asyncio.wait_for(loop.shutdown_default_executor(), LEFTOVERS_WITHIN_S)
            )
        loop.close()


def _exit_past_hung_threads(code: int) -> None:
    """Python joins every worker thread at exit; one stuck in a syscall (a blocking MQTT
    connect, a DNS lookup) would keep a stopped agent alive. End the process instead."""
    import threading

    hung = [t.name for t in threading.enumerate() if t.name.startswith("asyncio_") and t.is_alive()]
    if hung:
        print(f"edge-agent: exiting past hung worker thread(s): {', '.join(hung)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _simulate(args: argparse.Namespace) -> int:
    from edge_agent.drivers.simulator import load_scenario, run_simulator
    from edge_agent.drivers.simulator.opcua_scenario import is_opcua_scenario, load_opcua_scenario
    from edge_agent.drivers.simulator.opcua_server import run_opcua_simulator
    from edge_agent.errors import ConfigError, ConfigFileMissing

    ports: dict[str, int] = {}
    for item in args.port:
        name, _, port = item.rpartition("=")
        if not name or not port.isdigit():
            print(f"--port {item!r}: write DEVICE=PORT, e.g. plc-tank-farm=5020", file=sys.stderr)
            return EX_USAGE
        ports[name] = int(port)
    try:
        if is_opcua_scenario(args.scenario):
            serving = run_opcua_simulator(load_opcua_scenario(args.scenario), ports)
        else:
            serving = run_simulator(load_scenario(args.scenario), ports)
    except (ConfigFileMissing, ConfigError) as exc:
        return _refused(exc)

    async def serve() -> None:
        stop = _stop_on_signals()
        task = asyncio.create_task(serving)
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(serve())
    return EX_OK


def _opcua_cert(args: argparse.Namespace) -> int:
    import socket

    from cryptography.hazmat.primitives.serialization import Encoding

    from edge_agent.drivers.opcua.security import fingerprint, make_client_certificate

    host = args.host or socket.gethostname()
    try:
        cert = make_client_certificate(args.cert, args.key, host=host, uri=args.uri, days=args.days)
    except FileExistsError as exc:
        print(exc, file=sys.stderr)
        return EX_USAGE
    print(f"certificate: {args.cert} (hand this file to the OPC UA server's operator)")
    print(f"private key: {args.key} (keep it on the gateway; mode 0600)")
    print(
        f"subject: {cert.subject.rfc4514_string()}, valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    )
    print(f"SHA-256 fingerprint: {fingerprint(cert.public_bytes(Encoding.DER))}")
    return EX_OK


def _demo(args: argparse.Namespace) -> int:
    from edge_agent.demo.run import run_demo

    return run_demo(args.duration, args.outage_at, args.outage_for)


def _read(args: argparse.Namespace) -> int:
    from edge_agent import commission, logs

    logs.configure("warning")
    config = _load(args.config)
    if isinstance(config, int):
        return config
    devices = [d for d in config.devices if not args.device or d.name in args.device]
    unknown = set(args.device) - {d.name for d in config.devices}
    if unknown:
        print(f"no device named {', '.join(sorted(unknown))} in {args.config}", file=sys.stderr)
        return EX_USAGE
    return commission.run(devices, sys.stdout, raw=args.raw, guess_order=args.guess_order)


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so every command stops cleanly either way."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


if __name__ == "__main__":
    sys.exit(main())
