"""`edge-agent`: run the agent, check configs, print the schema, simulate a plant, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

EX_OK = 0
EX_USAGE = 64
EX_NOINPUT = 66
EX_CONFIG = 78


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the agent with a config file")
    run.add_argument("config", type=Path)
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(handler=_run)

    check = commands.add_parser(
        "check", help="validate config files: prints OK or every error with file:line:column"
    )
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(handler=_check)

    schema = commands.add_parser("schema", help="print the JSON Schema of the config file")
    schema.set_defaults(handler=_schema)

    simulate = commands.add_parser("simulate", help="serve a simulated plant from a scenario")
    simulate.add_argument("scenario", type=Path)
    simulate.add_argument(
        "--port",
        action="append",
        default=[],
        metavar="DEVICE=PORT",
        help="serve DEVICE on PORT instead of the scenario's port (repeatable)",
    )
    simulate.set_defaults(handler=_simulate)

    demo = commands.add_parser(
        "demo", help="run broker, simulated plant and agent on loopback; show what is sent"
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
            load_config(path)
        except ConfigFileMissing as exc:
            print(exc, file=sys.stderr)
            worst = max(worst, EX_NOINPUT)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            worst = max(worst, EX_CONFIG)
        else:
            print(f"{path}: OK")
    return worst


def _schema(args: argparse.Namespace) -> int:
    from edge_agent.config.jsonschema import config_json_schema

    print(json.dumps(config_json_schema(), indent=2, sort_keys=True, ensure_ascii=False))
    return EX_OK


def _run(args: argparse.Namespace) -> int:
    from edge_agent import logs
    from edge_agent.config import load_config
    from edge_agent.errors import ConfigError, ConfigFileMissing, StoreError
    from edge_agent.runtime import Agent

    logs.configure(args.log_level)
    try:
        config = load_config(args.config)
    except ConfigFileMissing as exc:
        print(exc, file=sys.stderr)
        return EX_NOINPUT
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return EX_CONFIG

    async def serve() -> None:
        stop = _stop_on_signals()
        agent = Agent(config)
        await agent.run(stop)

    try:
        asyncio.run(serve())
    except StoreError as exc:
        print(exc, file=sys.stderr)
        return 1
    return EX_OK


def _simulate(args: argparse.Namespace) -> int:
    from drivers.simulator import load_scenario, run_simulator

    ports: dict[str, int] = {}
    for item in args.port:
        name, _, port = item.rpartition("=")
        if not name or not port.isdigit():
            print(f"--port {item!r}: write DEVICE=PORT, e.g. plc-tank-farm=5020", file=sys.stderr)
            return EX_USAGE
        ports[name] = int(port)
    scenario = load_scenario(args.scenario)

    async def serve() -> None:
        stop = _stop_on_signals()
        task = asyncio.create_task(run_simulator(scenario, ports))
        await stop.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(serve())
    return EX_OK


def _demo(args: argparse.Namespace) -> int:
    from edge_agent.demo.run import run_demo

    return run_demo(args.duration, args.outage_at, args.outage_for)


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, so every command stops cleanly either way."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


if __name__ == "__main__":
    sys.exit(main())
