"""README.md's "Try a site" lines, run as written, in this checkout: `make demo`, then
`check`, the simulated plant, `read`, the agent and `top` on the demo's site.

The lines between the README's `try-a-site` markers go to one bash, each
framed by markers that carry its exit status, so that each command is judged
on its own output. The agent's store and log land in the checkout, as they
would for a person (both git-ignored); the test removes them afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.demo.broker import find_mosquitto

REPO = Path(__file__).resolve().parents[2]
LEFT_BEHIND = ("demo.db", "demo.db.lock", "demo.db.seq", "agent.log")
"""What the README's lines leave in the checkout (the agent's store files and its log)."""

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(find_mosquitto() is None, reason="Mosquitto is not installed"),
    pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed"),
]


def readme_lines() -> list[str]:
    """The shell lines of the README's "Try a site" block, comments and all."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- try-a-site: begin -->\n```sh\n(.*?)```\n<!-- try-a-site: end -->",
                      text, re.DOTALL)  # fmt: skip
    assert found, "README.md has no try-a-site block"
    return found.group(1).splitlines()


def framed(lines: list[str]) -> str:
    """A bash script running `lines` as written, each between markers with its exit status."""
    script = []
    for index, line in enumerate(lines):
        script += [f"printf '\\n::begin {index}\\n'", line, f"printf '\\n::end {index} %d\\n' $?"]
    return "\n".join([*script, "wait"]) + "\n"


def outputs(stdout: str, count: int) -> list[tuple[int, str]]:
    """(exit status, output) of each of `count` lines, from the framed script's stdout."""
    results = []
    for index in range(count):
        found = re.search(rf"::begin {index}\n(.*?)\n::end {index} (\d+)\n", stdout, re.DOTALL)
        assert found, f"line {index} did not finish:\n{stdout[-3000:]}"
        results.append((int(found.group(2)), found.group(1)))
    return results


@pytest.fixture
def checkout() -> Iterator[Path]:
    if any((REPO / name).exists() for name in LEFT_BEHIND):
        pytest.skip(f"{', '.join(LEFT_BEHIND)} in the checkout: someone is trying the README")
    yield REPO
    for name in LEFT_BEHIND:
        (REPO / name).unlink(missing_ok=True)


def test_the_readmes_try_a_site_lines_run_as_written(checkout: Path) -> None:
    lines = readme_lines()
    commands = [line.split("#")[0].strip() for line in lines]
    assert commands[0].startswith("make demo")
    # The outer `make test`'s flags and jobserver are not the reader's shell's.
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    done = subprocess.run(["bash", "-c", framed(lines)], cwd=checkout, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=180, check=False)  # fmt: skip
    results = dict(zip(commands, outputs(done.stdout, len(lines)), strict=True))
    report = f"{done.stdout[-4000:]}\n--- stderr:\n{done.stderr[-3000:]}"

    def ran(prefix: str) -> tuple[int, str]:
        return next(result for command, result in results.items() if command.startswith(prefix))

    code, out = ran("make demo")
    assert code == 0, report
    assert re.search(r"seq 1-\d+, no gap", out), report
    code, out = ran(".venv/bin/edge-agent check")
    assert code == 0, report
    assert out.startswith("config/demo.yaml: OK\n"), report
    code, out = ran(".venv/bin/edge-agent read")
    assert code in (0, 1), report  # 1: a tag read bad, as the plant's cut wire makes one
    assert re.search(r"\d of 9 tags readable", out), report
    code, out = ran(".venv/bin/edge-agent top")
    assert code == 0, report
    assert re.search(r"edge-agent \S+ of gateway GW-DEMO-01, up \d+ s", out), report
    for tag in ("HZ01.LT101", "HZ01.GT201", "HZ01.GT202"):
        assert re.search(rf"^{re.escape(tag)} +\S+", out, re.MULTILINE), report
    assert re.search(r"^uplink +", out, re.MULTILINE), report
    assert all(code == 0 for code, _ in results.values()), report
    log = (checkout / "agent.log").read_text(encoding="utf-8")
    assert "Traceback" not in log, log[-3000:]
    assert '"event": "agent_stopped"' in log, log[-3000:]
