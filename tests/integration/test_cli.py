"""The `edge-agent` command line: check, schema, and run refusing a broken config.

`check` and `schema` are called through `edge_agent.cli.main` (same code path as
the console script, output captured by capsys); `run` is started as a real
process, since it must exit without starting anything.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

import edge_agent
from edge_agent.cli import EX_CONFIG, EX_NOINPUT, EX_OK, _parser, main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
SCHEMA = ROOT / "docs" / "config.schema.json"


def misspelt_type(tmp_path: Path, name: str = "broken.yaml") -> tuple[Path, int, int]:
    """config/demo.yaml with its first tag's type misspelt; returns the file, line and column."""
    text = (ROOT / "config" / "demo.yaml").read_text(encoding="utf-8")
    broken = text.replace("type: float32", "type: flaot32", 1)
    assert broken != text, "config/demo.yaml no longer starts its tags with a float32"
    path = tmp_path / name
    path.write_text(broken, encoding="utf-8")
    for number, line in enumerate(broken.splitlines(), start=1):
        if "flaot32" in line:
            return path, number, line.index("flaot32") + 1
    raise AssertionError("unreachable")


def test_there_is_at_least_one_config_to_check() -> None:
    """The parametrised check below must not pass by checking nothing."""
    assert CONFIGS, "no config/*.yaml"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_check_accepts_every_shipped_config(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edge-agent check config/X.yaml` prints `X: OK`, the outage its store holds, and exits 0."""
    assert main(["check", str(config)]) == EX_OK
    captured = capsys.readouterr()
    ok, outlook, *warnings = captured.out.splitlines()
    assert ok == f"{config}: OK"
    assert "of outage at" in outlook
    assert warnings == [], "a shipped config must hold its own store.retention"
    assert captured.err == ""


def test_check_reports_a_misspelt_type_at_its_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt type gives `FILE:LINE:COL: devices[0].tags[0].type: ...` on stderr and 78."""
    path, line, column = misspelt_type(tmp_path)
    assert main(["check", str(path)]) == EX_CONFIG
    captured = capsys.readouterr()
    assert captured.out == ""
    problems = captured.err.splitlines()
    assert len(problems) == 1, captured.err
    prefix = f"{path}:{line}:{column}: devices[0].tags[0].type: "
    assert problems[0].startswith(prefix), problems[0]
    assert "'flaot32'" in problems[0]
    assert "float32" in problems[0].removeprefix(prefix).replace("'flaot32'", "")


def test_check_exits_66_on_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that is not there is EX_NOINPUT, named on stderr."""
    missing = tmp_path / "nowhere.yaml"
    assert main(["check", str(missing)]) == EX_NOINPUT
    captured = capsys.readouterr()
    assert captured.out == ""
    assert str(missing) in captured.err


def test_check_reports_each_of_several_files_and_exits_with_the_worst_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Good, broken and missing files in one call: each is reported; the exit code is 78."""
    good = CONFIGS[0]
    broken, line, column = misspelt_type(tmp_path)
    other, _, _ = misspelt_type(tmp_path, "also-broken.yaml")
    missing = tmp_path / "nowhere.yaml"
    assert main(["check", str(missing), str(good), str(broken), str(other)]) == EX_CONFIG
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == f"{good}: OK"
    err = captured.err.splitlines()
    assert any(str(missing) in e for e in err), captured.err
    for path in (broken, other):
        assert any(e.startswith(f"{path}:{line}:{column}: devices[0].tags[0].type: ") for e in err)
    assert len(err) == 3, captured.err


def test_check_of_a_good_and_a_missing_file_exits_66(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without config errors, a missing file still makes the whole check fail with 66."""
    missing = tmp_path / "nowhere.yaml"
    assert main(["check", str(CONFIGS[0]), str(missing)]) == EX_NOINPUT
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == f"{CONFIGS[0]}: OK"
    assert str(missing) in captured.err


def test_schema_prints_the_committed_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """`edge-agent schema` prints JSON equal to docs/config.schema.json."""
    assert main(["schema"]) == EX_OK
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(SCHEMA.read_text(encoding="utf-8"))


def test_version_is_the_installed_packages(capsys: pytest.CaptureFixture[str]) -> None:
    """`edge-agent --version` says what pip installed, which is also what the agent reports
    (`state`, /metrics): the two cannot drift apart."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == EX_OK
    assert capsys.readouterr().out == f"edge-agent {version('edge-agent')}\n"
    assert version("edge-agent") == edge_agent.__version__


def subcommand(name: str) -> argparse.ArgumentParser:
    (commands,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    parser: argparse.ArgumentParser = commands.choices[name]
    return parser


@pytest.mark.parametrize(
    "command", ["run", "check", "schema", "simulate", "opcua-cert", "read", "demo"]
)
def test_a_commands_help_explains_each_argument_and_its_exit_codes(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == EX_OK
    text = capsys.readouterr().out
    assert "\nexit status" in text
    assert "\n  0   " in text
    assert [a.dest for a in subcommand(command)._actions if not a.help] == []


def test_simulate_refuses_a_missing_or_invalid_scenario_with_66_and_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As `run` refuses a config: why on stderr, no traceback."""
    missing = tmp_path / "nowhere.yaml"
    assert main(["simulate", str(missing)]) == EX_NOINPUT
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("devices: 5\n", encoding="utf-8")
    assert main(["simulate", str(invalid)]) == EX_CONFIG
    err = capsys.readouterr().err
    assert f"{missing}: cannot read the scenario" in err
    assert f"{invalid}: devices: " in err


def test_run_refuses_a_broken_config_with_78_without_starting(tmp_path: Path) -> None:
    """`edge-agent run` on a misspelt type exits 78 at once, names the problem, creates no store."""
    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    store = tmp_path / "store" / "agent.db"
    data["store"]["path"] = str(store)
    data["devices"][0]["tags"][0]["type"] = "flaot32"
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")

    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == EX_CONFIG, done.stderr
    assert f"{path}:" in done.stderr
    assert "devices[0].tags[0].type: 'flaot32'" in done.stderr
    assert "agent_started" not in done.stdout + done.stderr
    assert not store.exists()
    assert not store.parent.exists()


def test_run_refuses_a_deeply_nested_file_with_78_and_no_traceback(tmp_path: Path) -> None:
    """A RecursionError would exit 1, which systemd's Restart=on-failure restarts in a loop."""
    config = tmp_path / "deep.yaml"
    config.write_text("gateway: " + "[" * 600 + "]" * 600 + "\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == EX_CONFIG
    assert done.stderr.startswith(f"{config}:1:")
    assert "Traceback" not in done.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    """`edge-agent check F... | head -1`: no BrokenPipeError traceback, SIGPIPE's exit code."""
    files = [str(CONFIGS[0])] * 200
    done = subprocess.run(
        f"{sys.executable} -m edge_agent check {' '.join(files)} | head -1; "
        'echo "exit=${PIPESTATUS[0]}" >&2',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout == f"{CONFIGS[0]}: OK\n"
    assert done.stderr == "exit=141\n"


def test_run_exits_66_when_the_config_file_is_missing(tmp_path: Path) -> None:
    """`edge-agent run` on a file that is not there exits EX_NOINPUT without starting."""
    missing = tmp_path / "nowhere.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == EX_NOINPUT, done.stderr
    assert str(missing) in done.stderr
    assert "agent_started" not in done.stdout + done.stderr


def test_run_refuses_a_misspelt_clock_setting_with_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """EDGE_AGENT_CLOCK=sync is a mistake an operator must see, not a silent default."""
    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    data["store"]["path"] = str(tmp_path / "store.db")
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("EDGE_AGENT_CLOCK", "sync")
    assert main(["run", str(path)]) == EX_CONFIG
    assert "EDGE_AGENT_CLOCK='sync'" in capsys.readouterr().err
    assert not (tmp_path / "store.db").exists()


def test_check_says_how_long_an_outage_the_store_holds_and_warns_when_short(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """7 readings/s into 8MiB holds about 1.4 days: a 30-day retention gets a warning."""
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    config["store"].update(max_size="8MiB", retention="30d")
    path = tmp_path / "small-store.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert main(["check", str(path)]) == EX_OK
    ok, outlook, warning = capsys.readouterr().out.splitlines()
    assert ok == f"{path}: OK"
    assert "holds about" in outlook
    assert "hours of outage" in outlook or "days of outage" in outlook
    assert "warning: store.retention is 30.0 days" in warning
    assert "raise store.max_size to about" in warning


def test_check_warns_what_an_own_connection_costs_behind_a_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text(encoding="utf-8"))
    modbus = next(d for d in config["devices"] if d["driver"] == "modbus")
    modbus["connection"] = "own"
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    assert main(["check", str(path)]) == EX_OK
    (advice,) = [line for line in capsys.readouterr().out.splitlines() if "connection: own" in line]
    assert advice.startswith(f"{path}: warning: 1 unit(s) at ")
    assert "adds no isolation (the gateway serialises its RS-485 bus)" in advice
