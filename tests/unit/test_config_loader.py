"""load_config: valid files become models; every mistake is one line at its file:line:column."""

from __future__ import annotations

import hashlib
from pathlib import Path
from textwrap import dedent

import pytest
import yaml

from edge_agent.config import AgentConfig, load_config
from edge_agent.config.loader import _Walker, file_digest
from edge_agent.config.tags import Limits
from edge_agent.errors import ConfigError, ConfigFileMissing

ROOT = Path(__file__).resolve().parents[2]

# Line numbers below refer to this file; edits replace text within a line.
VALID = dedent(
    """\
    gateway:
      code: GW-01
      enterprise: 91370200MA3C00000K
    uplink:
      mqtt:
        host: 127.0.0.1
    store:
      path: /var/lib/edge-agent/store.db
    devices:
      - name: plc-1
        driver: modbus
        host: 192.168.0.10
        poll: 500ms
        tags:
          - tag: LT-101
            hazard: HZ01
            address: hr:0
            type: float32
            limits: {H: 9.0, HH: 9.5}
          - tag: XV-101
            hazard: HZ01
            address: co:0
            type: bool
    """
)


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    """The problems of a file, without the file name in front."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [p.removeprefix(f"{path}:") for p in caught.value.problems]


def edited(old: str, new: str, count: int = 1) -> str:
    assert VALID.count(old) >= count, old
    return VALID.replace(old, new, count)


# --- valid files -------------------------------------------------------------------


def test_a_valid_file_loads_into_the_models(tmp_path: Path) -> None:
    """Values arrive converted: durations in seconds, defaults filled in."""
    config = load_config(write(tmp_path, VALID))
    assert isinstance(config, AgentConfig)
    assert config.gateway.code == "GW-01"
    assert config.devices[0].poll == 0.5
    assert config.uplink.mqtt.keepalive == 30.0
    assert [t.tag for t in config.devices[0].tags] == ["LT-101", "XV-101"]


def test_load_config_accepts_a_string_path(tmp_path: Path) -> None:
    """The CLI passes Paths, other callers may pass text."""
    assert load_config(str(write(tmp_path, VALID))).gateway.code == "GW-01"


def test_plain_values_are_read_as_yaml_12_reads_them(tmp_path: Path) -> None:
    """As an editor shows them: `on` is text, 1e2 a number, 40001 an address; !!str is kept."""
    text = edited("      - tag: XV-101\n", "      - tag: XV-101\n        name: on\n")
    text = text.replace("limits: {H: 9.0, HH: 9.5}", "limits: {H: 9.0, HH: 1e2}")
    text = text.replace("address: hr:0", "address: 40001\n        unit: !!str 010")
    level, valve = load_config(write(tmp_path, text)).devices[0].tags
    assert (valve.name, level.limits, level.address, level.unit) == (
        "on",
        Limits(H=9.0, HH=100.0),
        "40001",
        "010",
    )


def test_anchors_aliases_and_merge_keys_are_followed(tmp_path: Path) -> None:
    """A shared block written once with &name and merged with <<: *name."""
    text = edited(
        "      - tag: XV-101\n        hazard: HZ01\n",
        "      - &common\n        tag: XV-101\n        hazard: HZ01\n",
    )
    text += "      - <<: *common\n        tag: XV-102\n        address: co:1\n"
    tags = load_config(write(tmp_path, text)).devices[0].tags
    assert [(t.tag, t.address, t.hazard) for t in tags[1:]] == [
        ("XV-101", "co:0", "HZ01"),
        ("XV-102", "co:1", "HZ01"),
    ]


def test_keys_are_taken_as_written_not_as_yaml_booleans(tmp_path: Path) -> None:
    """`on:` is the key 'on' (YAML 1.1 would read true), so the message can name it."""
    text = edited("    poll: 500ms\n", "    on: 500ms\n")
    assert problems(tmp_path, text) == [
        "13:5: devices[0].on: unknown key 'on'; the keys allowed here are name, driver, "
        "poll, comm_alarm_after, reconnect_min, reconnect_max, transport, host, port, serial, "
        "unit, timeout, byte_order, address_base, max_registers, max_bits, connection, "
        "max_connections, max_gap, tags"
    ]


# --- one line per error, at the right place -------------------------------------------


def test_a_misspelt_type_points_at_the_value_and_lists_the_choices(tmp_path: Path) -> None:
    """The allowed values in plain words, and the likely one."""
    assert problems(tmp_path, edited("type: float32", "type: flaot32")) == [
        "18:15: devices[0].tags[0].type: 'flaot32' is not one of bool, int16, uint16, int32, "
        "uint32, int64, uint64, float32, float64, string; did you mean 'float32'?"
    ]


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("float", "float32"),
        ("REAL", "float32"),
        ("double", "float64"),
        ("int", "int16"),
        ("uint", "uint16"),
        ("word", "uint16"),
        ("dword", "uint32"),
        ("DINT", "int32"),
    ],
)
def test_a_plc_manuals_type_name_suggests_the_likely_width_and_says_why(
    tmp_path: Path, written: str, meant: str
) -> None:
    """Not the closest spelling (float64 for float, uint64 for uint): the width a PLC
    register or a Modbus float usually has."""
    (problem,) = problems(tmp_path, edited("type: float32", f"type: {written}"))
    assert f"'{written}' is not one of " in problem
    assert f"; did you mean '{meant}'? (" in problem


def test_an_unknown_key_points_at_the_key_and_suggests_the_field(tmp_path: Path) -> None:
    """A typo in a key is one error (not also a missing key), and not silently ignored."""
    text = edited("address: hr:0", "adress: hr:0")
    assert problems(tmp_path, text) == [
        "17:9: devices[0].tags[0].adress: unknown key 'adress'; did you mean 'address'?",
    ]


def test_an_unknown_key_without_a_close_match_lists_the_allowed_keys(tmp_path: Path) -> None:
    """With no likely typo, the technician sees what may be written there."""
    text = edited("  code: GW-01\n", "  code: GW-01\n  region: north\n")
    assert problems(tmp_path, text) == [
        "3:3: gateway.region: unknown key 'region'; the keys allowed here are code, enterprise, "
        "site"
    ]


def test_a_missing_key_points_at_the_mapping_that_lacks_it(tmp_path: Path) -> None:
    """The line that names the mapping, with the key it needs."""
    text = edited("  mqtt:\n    host: 127.0.0.1\n", "  mqtt:\n    port: 1883\n")
    assert problems(tmp_path, text) == ["5:3: uplink.mqtt: missing required key 'host'"]


def test_a_missing_top_level_section_points_at_the_start(tmp_path: Path) -> None:
    """Top-level problems are named as such."""
    text = VALID.replace("store:\n  path: /var/lib/edge-agent/store.db\n", "")
    assert problems(tmp_path, text) == ["1:1: (top level): missing required key 'store'"]


def test_a_bad_duration_points_at_the_value(tmp_path: Path) -> None:
    """The message shows how durations are written."""
    assert problems(tmp_path, edited("poll: 500ms", "poll: 500 millis")) == [
        "13:11: devices[0].poll: '500 millis' is not a duration: write a number and a unit, "
        "e.g. 500ms, 1s, 5m, 2h, 1d"
    ]


def test_a_duration_without_unit_says_which_unit_to_add(tmp_path: Path) -> None:
    """`poll: 5` is a number in YAML, and no unit is assumed."""
    assert problems(tmp_path, edited("poll: 500ms", "poll: 5")) == [
        "13:11: devices[0].poll: 5 has no unit: write e.g. 5s or 5ms"
    ]


def test_a_duration_above_its_maximum_is_reported_in_duration_units(tmp_path: Path) -> None:
    """The limit is written the way the value was, not in seconds."""
    text = edited("    host: 127.0.0.1\n", "    host: 127.0.0.1\n  state_interval: 2m\n")
    assert problems(tmp_path, text) == ["7:19: uplink.state_interval: must be at most 1m, got '2m'"]


def test_a_bad_enterprise_code_names_the_expected_check_character(tmp_path: Path) -> None:
    """The GB 32100 check runs on load."""
    assert problems(tmp_path, edited("91370200MA3C00000K", "91370200MA3C00000X")) == [
        "3:15: gateway.enterprise: '91370200MA3C00000X' fails the GB 32100 check: its last "
        "character should be 'K'; check the code against the business licence"
    ]


def test_limits_out_of_order_point_at_the_limits_key(tmp_path: Path) -> None:
    """A check across fields points at the mapping that holds them."""
    assert problems(tmp_path, edited("{H: 9.0, HH: 9.5}", "{H: 9.5, HH: 9.0}")) == [
        "19:9: devices[0].tags[0].limits: H (9.5) must be below HH (9.0): "
        "limits rise in the order LL < L < H < HH"
    ]


def test_a_duplicate_tag_points_at_the_repeat_and_names_the_first(tmp_path: Path) -> None:
    """Each repeat is reported at its own line."""
    assert problems(tmp_path, edited("tag: XV-101", "tag: LT-101")) == [
        "20:14: devices[0].tags[1].tag: tag 'LT-101' is already used at line 15 "
        "(devices[0].tags[0].tag); each tag must be unique"
    ]


def test_a_duplicate_device_name_is_reported_alongside_other_errors(tmp_path: Path) -> None:
    """Uniqueness is checked even when other errors stop the model's own check."""
    second_device = VALID[VALID.index("  - name: plc-1") :].replace("LT-101", "LT-201")
    text = VALID + second_device.replace("XV-101", "XV-201").replace("type: bool", "type: boool")
    assert problems(tmp_path, text) == [
        "24:11: devices[1].name: device name 'plc-1' is already used at line 10 "
        "(devices[0].name); each device name must be unique",
        "37:15: devices[1].tags[1].type: 'boool' is not one of bool, int16, uint16, int32, "
        "uint32, int64, uint64, float32, float64, string; did you mean 'bool'?",
    ]


def test_a_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    """PyYAML's words, with where the block started and a hint."""
    text = edited("    poll: 500ms\n", "   poll: 500ms\n")
    assert problems(tmp_path, text) == [
        "13:4: (file): YAML syntax error: expected <block end>, but found "
        "'<block mapping start>' (while parsing a block collection at line 10); "
        "check the indentation against the lines above"
    ]


@pytest.mark.parametrize(
    "text",
    ["a: " + "[" * 500 + "]" * 500, "a:\n" + "".join("  " * i + "k:\n" for i in range(1, 600))],
    ids=["flow", "block"],
)
def test_nesting_past_64_levels_is_refused_where_it_gets_too_deep(
    tmp_path: Path, text: str
) -> None:
    """PyYAML's composer recurses per level: 500 levels would end in a RecursionError."""
    [problem] = problems(tmp_path, text)
    line, column, rest = problem.split(":", 2)
    assert (int(line), int(column)) in {(1, 67), (65, 129)}
    assert "nested more than 64 levels deep" in rest


def test_a_tab_indent_says_to_use_spaces(tmp_path: Path) -> None:
    """Tabs are the most common YAML mistake of all."""
    [problem] = problems(tmp_path, edited("  code: GW-01", "\tcode: GW-01"))
    assert problem.startswith("2:1: (file): YAML syntax error: found character '\\t'")
    assert problem.endswith("indent with spaces, never tabs")


def test_a_duplicate_key_is_an_error_at_the_second_key(tmp_path: Path) -> None:
    """PyYAML alone would silently keep the last value."""
    text = edited("    host: 192.168.0.10\n", "    host: 192.168.0.10\n    host: 192.168.0.11\n")
    assert problems(tmp_path, text) == [
        "13:5: devices[0].host: duplicate key 'host' (first at line 12); YAML keeps only "
        "the last one, so remove or rename one of them"
    ]


def test_every_error_is_reported_sorted_by_line(tmp_path: Path) -> None:
    """One round of edits fixes the whole file."""
    text = edited("type: float32", "type: flaot32")
    text = text.replace("GW-01", "GW 01").replace("poll: 500ms", "poll: soon")
    positions = [":".join(p.split(":")[:2]) for p in problems(tmp_path, text)]
    assert positions == ["2:9", "13:11", "18:15"]


def test_a_number_where_text_is_expected_says_to_quote_it(tmp_path: Path) -> None:
    """The value is shown as typed (0x12), not as YAML read it (18)."""
    text = edited("path: /var/lib/edge-agent/store.db", "path: 0x12")
    assert problems(tmp_path, text) == [
        "8:9: store.path: expected text, got 0x12; write it in quotes: '0x12'"
    ]


def test_an_unquoted_protocol_version_says_to_quote_it(tmp_path: Path) -> None:
    """`protocol: 5` is the number 5; the choices are the texts '5' and '3.1.1'."""
    text = edited("    host: 127.0.0.1\n", "    host: 127.0.0.1\n    protocol: 5\n")
    assert (problems(tmp_path, text)) == [
        "7:15: uplink.mqtt.protocol: 5 is read as a number here; write it in quotes: '5'"
    ]


def test_a_bad_pattern_explains_the_allowed_characters(tmp_path: Path) -> None:
    """The regular expression is put into words."""
    assert problems(tmp_path, edited("GW-01", "GW 01")) == [
        "2:9: gateway.code: 'GW 01' may hold only letters, digits, '_' and '-', 1 to 64 characters"
    ]


def test_a_wrong_driver_points_at_the_driver_value(tmp_path: Path) -> None:
    """The discriminator is reported like any other choice."""
    assert problems(tmp_path, edited("driver: modbus", "driver: modbuss")) == [
        "11:13: devices[0].driver: 'modbuss' is not one of modbus, opcua; did you mean 'modbus'?"
    ]


def test_a_missing_driver_lists_the_drivers(tmp_path: Path) -> None:
    """Without a driver nothing else about the device can be checked."""
    assert problems(tmp_path, edited("    driver: modbus\n", "")) == [
        "10:5: devices[0]: missing required key 'driver' (one of modbus, opcua)"
    ]


def test_a_scalar_where_a_mapping_is_expected(tmp_path: Path) -> None:
    """Wrong shapes are named in YAML terms."""
    text = edited("  mqtt:\n    host: 127.0.0.1\n", "  mqtt: 127.0.0.1\n")
    assert problems(tmp_path, text) == [
        "5:9: uplink.mqtt: expected a mapping (indented key: value lines), got '127.0.0.1'"
    ]


def test_an_empty_tag_list_is_refused(tmp_path: Path) -> None:
    """A device with nothing to read is a mistake."""
    start, end = VALID.index("    tags:\n"), len(VALID)
    text = VALID[:start] + "    tags: []\n" + VALID[end:]
    assert problems(tmp_path, text) == ["14:11: devices[0].tags: needs at least 1 item, found 0"]


def test_an_error_in_a_merged_block_points_where_it_is_written(tmp_path: Path) -> None:
    """Merged values are reported at their anchor, where the technician can fix them."""
    text = edited(
        "      - tag: XV-101\n        hazard: HZ01\n",
        "      - &common\n        tag: XV-101\n        hazard: HZ 01\n",
    )
    text += "      - <<: *common\n        tag: XV-102\n        address: co:1\n"
    assert problems(tmp_path, text) == [
        "22:17: devices[0].tags[1].hazard: 'HZ 01' may hold only letters, digits, '_', '.' "
        "and '-', 1 to 64 characters",
        "22:17: devices[0].tags[2].hazard: 'HZ 01' may hold only letters, digits, '_', '.' "
        "and '-', 1 to 64 characters",
    ]


def test_an_alias_inside_itself_is_an_error(tmp_path: Path) -> None:
    """A recursive alias would otherwise never finish; it is named at its anchor."""
    text = VALID + "extra: &loop [1, *loop]\n"
    found = problems(tmp_path, text)
    assert "24:8: extra[1]: this alias refers to a mapping or list that contains it" in found


# --- the file as a whole ------------------------------------------------------------


def test_the_file_is_named_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative path stays relative, as the technician typed it."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, edited("GW-01", "GW 01"))
    with pytest.raises(ConfigError) as caught:
        load_config("site.yaml")
    assert caught.value.problems[0].startswith("site.yaml:2:9: gateway.code: ")


@pytest.mark.parametrize("text", ["", "\n", "# nothing but a comment\n"])
def test_an_empty_file_is_an_error(tmp_path: Path, text: str) -> None:
    """An empty file must not pass as a config with no devices."""
    assert problems(tmp_path, text) == ["1:1: (file): the file is empty"]


def test_a_top_level_list_is_refused(tmp_path: Path) -> None:
    """The file is a mapping of sections."""
    assert problems(tmp_path, "- gateway\n- devices\n") == [
        "1:1: (top level): expected a mapping (indented key: value lines), got a list"
    ]


def test_a_file_not_in_utf8_says_so(tmp_path: Path) -> None:
    """GBK files from an old Windows editor are named as the likely cause."""
    path = tmp_path / "site.yaml"
    path.write_bytes(VALID.replace("GW-01", "GW-01 北").encode("gbk"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [
        f"{path}:2:15: (file): the file is not UTF-8 (byte 0xb1); save it as UTF-8 "
        "(files saved as GBK/GB2312 must be converted)"
    ] == caught.value.problems


def test_a_missing_file_raises_config_file_missing(tmp_path: Path) -> None:
    """A different error class, so the CLI can exit 66 rather than 78."""
    with pytest.raises(ConfigFileMissing, match=r"nope\.yaml: no such file"):
        load_config(tmp_path / "nope.yaml")


def test_a_directory_raises_config_file_missing(tmp_path: Path) -> None:
    """A directory is not a config file."""
    with pytest.raises(ConfigFileMissing, match="is a directory"):
        load_config(tmp_path)


def test_a_files_digest_is_what_sha256sum_prints(tmp_path: Path) -> None:
    """What the running agent names and `edge-agent status` checks (ask.py)."""
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"\xef\xbb\xbfgateway: {}\r\n")  # a BOM and CRLF count, as for sha256sum
    assert file_digest(path) == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ConfigFileMissing, match=r"nope\.yaml: no such file"):
        file_digest(tmp_path / "nope.yaml")


def test_two_devices_with_the_same_unit_on_one_connection_are_refused(tmp_path: Path) -> None:
    second = (
        "  - name: plc-2\n"
        "    driver: modbus\n"
        "    host: 192.168.0.10\n"
        "    tags:\n"
        "      - {tag: PT-101, hazard: HZ01, address: hr:0, type: uint16}\n"
    )
    (problem,) = problems(tmp_path, VALID + second)
    assert "devices plc-1 and plc-2 are both unit 1 on 192.168.0.10:502" in problem


# --- alarm rules checked against the range and the site --------------------------------


def test_a_limit_outside_the_instrument_range_is_refused_at_the_tag(tmp_path: Path) -> None:
    text = edited("        limits: {H: 9.0, HH: 9.5}", "        range: {low: 0, high: 9.2}\n"
                  "        limits: {H: 9.0, HH: 9.5}")  # fmt: skip
    assert problems(tmp_path, text) == [
        "15:9: devices[0].tags[0]: limit HH (9.5) lies outside the instrument range 0..9.2: "
        "the value can never reach it; fix the limit or the range"
    ]


def test_a_gas_level_and_its_other_name_together_are_refused(tmp_path: Path) -> None:
    text = edited("limits: {H: 9.0, HH: 9.5}", "limits: {H: 9.0, level1: 9.0}")
    assert problems(tmp_path, text) == [
        "19:9: devices[0].tags[0].limits: level1 is another name for H: give one of them, not both"
    ]


def test_a_percent_deadband_needs_a_range(tmp_path: Path) -> None:
    text = edited("        limits: {H: 9.0, HH: 9.5}", "        report: {deadband_pct: 1}")
    assert problems(tmp_path, text) == [
        "15:9: devices[0].tags[0]: report.deadband_pct is a percent of the range: give range too"
    ]


def test_a_tag_read_less_often_than_the_site_requires_is_refused_where_it_is(
    tmp_path: Path,
) -> None:
    text = edited("  enterprise: 91370200MA3C00000K\n", "  enterprise: 91370200MA3C00000K\n"
                  "  site: mine\n").replace("    poll: 500ms", "    poll: 30s")  # fmt: skip
    assert problems(tmp_path, text) == [
        "16:9: devices[0].tags[0]: tag LT-101 is read every 30s but must report at least every "
        "20s (the site's rate, or its report.every): poll it faster, or give it a longer "
        "report.every"
    ]


ANCHORS_AND_MERGES = """
defaults: &modbus {driver: modbus, host: 127.0.0.1, poll: 1s}
devices:
  - <<: *modbus
    name: plc-1
    port: 502
    tags:
      - {tag: "A.1", hazard: HZ01, name: on, address: 40001, type: 'float32', limits: {H: 1e2}}
"""


@pytest.mark.parametrize(
    "name", [*sorted(p.name for p in ROOT.joinpath("config").glob("*.yaml")), "anchors"]
)
def test_libyaml_composes_what_pyyaml_composes_with_the_same_positions(name: str) -> None:
    # The loader composes with libyaml for speed and memory; every position an error
    # names must be the one PyYAML's composer gives.
    text = ANCHORS_AND_MERGES if name == "anchors" else (ROOT / "config" / name).read_text()
    walked = []
    for loader in (yaml.CSafeLoader, yaml.SafeLoader):
        walker = _Walker()
        walked.append((walker.walk(yaml.compose(text, Loader=loader), ()), walker.source))
    assert walked[0] == walked[1]


def test_too_many_connections_to_one_device_is_refused_at_the_device(tmp_path: Path) -> None:
    own = "    host: 192.168.0.10\n    connection: own\n    max_connections: 1\n"
    text = edited("    host: 192.168.0.10\n", own)
    text += (
        "  - name: plc-2\n"
        "    driver: modbus\n"
        "    host: 192.168.0.10\n"
        "    unit: 2\n"
        "    tags:\n"
        "      - {tag: LT-201, hazard: HZ01, address: hr:0, type: float32}\n"
    )
    (problem,) = problems(tmp_path, text)
    assert "192.168.0.10:502 would get 2 connections (1 own + 1 shared)" in problem
    line = text.splitlines().index("    max_connections: 1") + 1
    assert problem.startswith(f"{line}:22: devices[0].max_connections: ")  # at the value
