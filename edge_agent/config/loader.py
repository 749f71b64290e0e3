"""Load the agent's YAML config, and when it is wrong, say where in words a technician reads.

Every problem becomes one line, ``FILE:LINE:COL: PATH: MESSAGE`` (1-based, sorted
by line), and all of them are reported at once so that one edit round fixes all.

How: PyYAML's loaders throw positions away, so the file is composed into a node
tree and walked here. The walk builds the plain data pydantic validates and, for
each data path such as ``("devices", 0, "tags", 3, "type")``, remembers where its
key and its value were written. Pydantic's error locations are then mapped back
onto data paths and positions.

Choices and hazards:
- Duplicate keys are errors (PyYAML silently keeps the last; so does the data here).
- Keys are taken as written: ``on:`` stays the text "on", not YAML 1.1's true.
- Plain values are read as YAML 1.2 reads them, as editors and the JSON Schema do
  (``yes`` is text, ``0o17`` is 15); a number with a leading zero, which YAML 1.1
  and 1.2 read differently, is refused: see edge_agent/config/yaml12.py.
- Anchors, aliases and ``<<`` merge keys work; an alias of its own ancestor is an
  error, and a file that expands past _MAX_NODES values through aliases is refused.
- Nesting deeper than _MAX_DEPTH is refused at the line where it goes too deep,
  before PyYAML's composer (which recurses once per level) could exhaust the
  stack: a config needs about six levels.
- Duplicate device names and tags are checked here on the raw data as well as in
  the model, so they are reported at the repeat's own line alongside other errors.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from edge_agent.config.schema import AgentConfig, find_duplicates
from edge_agent.config.tags import LOCATED, DataPath
from edge_agent.config.types import format_duration, format_size, parse_duration, parse_size
from edge_agent.config.yaml12 import YAML11_BOOLEANS, read_plain, refusal
from edge_agent.drivers.modbus.codec import TYPE_NAMES
from edge_agent.errors import ConfigError, ConfigFileMissing

__all__ = ["load_config", "read_yaml"]

_MAX_NODES = 1_000_000
_MAX_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, order=True, slots=True)
class Mark:
    """A 1-based line and column in the file."""

    line: int
    column: int


@dataclass(frozen=True, order=True, slots=True)
class Problem:
    """One thing wrong with the file; sorts by position."""

    mark: Mark
    path: str
    message: str

    def render(self, filename: str) -> str:
        return f"{filename}:{self.mark.line}:{self.mark.column}: {self.path}: {self.message}"


@dataclass(slots=True)
class SourceMap:
    """Where each data path was written: its key, its value, and a scalar's source text."""

    keys: dict[DataPath, Mark] = field(default_factory=dict)
    values: dict[DataPath, Mark] = field(default_factory=dict)
    texts: dict[DataPath, str] = field(default_factory=dict)

    def value(self, path: DataPath) -> Mark:
        return self.values.get(path) or self.anchor(path)

    def anchor(self, path: DataPath) -> Mark:
        """The line that names a mapping or item: its key if it has one, else its start."""
        return self.keys.get(path) or self.values.get(path) or Mark(1, 1)


def load_config(path: str | Path) -> AgentConfig:
    """Read, parse and validate one config file.

    Raises ConfigFileMissing when the file cannot be read, and ConfigError with one
    line per problem when its content is refused.
    """
    filename = str(path)
    try:
        return _load_text(_read_text(Path(path)))
    except _Refused as refused:
        raise ConfigError([p.render(filename) for p in refused.problems]) from None


def file_digest(path: str | Path) -> str:
    """`sha256:` and the hex SHA-256 of the file's bytes, as `sha256sum` prints it: the
    running agent names the digest of the file it loaded (runtime.py), and `edge-agent
    status` describes it only for a file with the same (ask.py). Raises ConfigFileMissing
    as load_config does."""
    return "sha256:" + hashlib.sha256(_read_bytes(Path(path))).hexdigest()


def read_yaml(text: str) -> object:
    """A config file's data as the loader reads it, before it is judged.

    Plain scalars as YAML 1.2 reads them, merge keys applied: the data an editor
    checks against the JSON Schema. Raises ConfigError only for a file that is not
    YAML at all; what the loader would refuse beyond that is for load_config to say.
    """
    try:
        root = _compose(text)
        return None if root is None else _Walker().walk(root, ())
    except _Refused as refused:
        raise ConfigError([p.render("(text)") for p in refused.problems]) from None


class _Refused(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        # A block merged in several places repeats its problems: report each once.
        self.problems = sorted(set(problems))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigFileMissing(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigFileMissing(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigFileMissing(f"{path}: cannot be read: {exc.strerror or exc}") from None


def _read_text(path: Path) -> str:
    raw = _read_bytes(path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = (
            f"the file is not UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8 "
            "(files saved as GBK/GB2312 must be converted)"
        )
        raise _Refused([Problem(Mark(line, column), "(file)", message)]) from None


def _load_text(text: str) -> AgentConfig:
    root = _compose(text)
    if root is None:
        raise _Refused([Problem(Mark(1, 1), "(file)", "the file is empty")])
    walker = _Walker()
    data = walker.walk(root, ())
    del root
    problems = walker.problems + _duplicate_problems(data, walker.source)
    # A value the YAML layer refused has its problem already. The model is not shown
    # it, so that no check on it (00001 read as the address '1') adds a second one.
    refused = {_format_path(path) for path in walker.refused}
    for path in walker.refused:
        _withhold(data, path)
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        explained = _explain(exc.errors(), data, walker.source)
        problems += [p for p in explained if p.path not in refused]
    if problems:
        raise _Refused(problems)
    return config


# --- YAML -------------------------------------------------------------------------


def _compose(text: str) -> yaml.Node | None:
    try:
        _check_depth(text)
        return _compose_fast(text)
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        mark = Mark(before.count("\n") + 1, len(before) - before.rfind("\n"))
        message = f"character U+{exc.character:04X} is not allowed in YAML ({exc.reason})"
        raise _Refused([Problem(mark, "(file)", message)]) from None
    except yaml.MarkedYAMLError as exc:
        raise _Refused([_syntax_problem(exc)]) from None
    except yaml.YAMLError as exc:  # an unmarked parser error: no position to give
        raise _Refused([Problem(Mark(1, 1), "(file)", f"YAML error: {exc}")]) from None


def _compose_fast(text: str) -> yaml.Node | None:
    """libyaml's composer where it is built in: the same nodes and positions in a fraction
    of the time and memory (a 10,000-tag file: 56 MB at peak instead of 78). A file it
    refuses is composed again by PyYAML's own, whose error wording the hints know."""
    if yaml.__with_libyaml__:
        try:
            return yaml.compose(text, Loader=yaml.CSafeLoader)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


def _check_depth(text: str) -> None:
    """Refuse nesting past _MAX_DEPTH; the event parser keeps a stack, not a recursion."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                where = event.start_mark
                mark = Mark(where.line + 1, where.column + 1) if where else Mark(1, 1)
                message = (
                    f"nested more than {_MAX_DEPTH} levels deep, where a config needs about six: "
                    "check the indentation and the brackets above"
                )
                raise _Refused([Problem(mark, "(file)", message)])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


# PyYAML's wording for the mistakes people make most, and what to do about them.
_SYNTAX_HINTS = {
    "'\\t'": "indent with spaces, never tabs",
    "mapping values are not allowed here": "put a value that contains ': ' in quotes",
    "expected <block end>": "check the indentation against the lines above",
    "found undefined alias": "an *alias must name an &anchor written above it",
    "but found another document": "keep one document: remove the '---' line",
    "found unexpected end of stream": "a quote is opened but never closed",
}


def _syntax_problem(exc: yaml.MarkedYAMLError) -> Problem:
    where = exc.problem_mark or exc.context_mark
    mark = Mark(where.line + 1, where.column + 1) if where else Mark(1, 1)
    message = f"YAML syntax error: {exc.problem}"
    if exc.context and exc.context_mark:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    hints = [hint for text, hint in _SYNTAX_HINTS.items() if text in str(exc.problem)]
    return Problem(mark, "(file)", "; ".join([message, *hints]))


def _mark(node: yaml.Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


class _Walker:
    """Turns a node tree into plain data, recording positions and YAML-level problems."""

    def __init__(self) -> None:
        self.source = SourceMap()
        self.problems: list[Problem] = []
        self.refused: set[DataPath] = set()  # where the values that problems refuse are
        self._constructor = yaml.constructor.SafeConstructor()
        self._resolver = yaml.resolver.Resolver()
        self._open: set[int] = set()  # ids of the nodes being walked: an alias loop guard
        self._budget = _MAX_NODES

    def walk(self, node: yaml.Node, path: DataPath) -> object:
        self.source.values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, object] = {}
            self._fill(node, path, result)
            return result
        if not self._enter(node, path):
            return None
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._scalar(node, path)
        finally:
            self._open.discard(id(node))

    def _enter(self, node: yaml.Node, path: DataPath) -> bool:
        self._budget -= 1
        if self._budget < 0:
            message = f"the file expands to more than {_MAX_NODES} values through aliases"
            raise _Refused([Problem(_mark(node), _format_path(path), message)])
        if id(node) in self._open:
            message = "this alias refers to a mapping or list that contains it"
            self.problems.append(Problem(_mark(node), _format_path(path), message))
            return False
        self._open.add(id(node))
        return True

    def _fill(self, node: yaml.MappingNode, path: DataPath, result: dict[str, object]) -> None:
        """Add a mapping's entries to result: merged (<<) ones first, so its own win."""
        if not self._enter(node, path):
            return
        try:
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    self._merge(value_node, path, result)
            own = [(k, v) for k, v in node.value if k.tag != _MERGE_TAG]
            self._check_unique_keys([k for k, _ in own], path)
            for key_node, value_node in own:
                key = self._key(key_node, path)
                if key is not None:
                    self.source.keys[(*path, key)] = _mark(key_node)
                    result[key] = self.walk(value_node, (*path, key))
        finally:
            self._open.discard(id(node))

    def _check_unique_keys(self, key_nodes: list[yaml.Node], path: DataPath) -> None:
        first: dict[str, Mark] = {}
        for node in key_nodes:
            if not isinstance(node, yaml.ScalarNode):
                continue  # _key reports it
            key = str(node.value)
            if key in first:
                message = (
                    f"duplicate key {key!r} (first at line {first[key].line}); "
                    "YAML keeps only the last one, so remove or rename one of them"
                )
                self.problems.append(Problem(_mark(node), _format_path((*path, key)), message))
            first.setdefault(key, _mark(node))

    def _merge(self, node: yaml.Node, path: DataPath, result: dict[str, object]) -> None:
        """Apply `<<: *a` or `<<: [*a, *b]`; earlier sources win, as YAML prescribes."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for source in reversed(sources):
            if isinstance(source, yaml.MappingNode):
                self._fill(source, path, result)
            else:
                message = "'<<' must name a mapping (e.g. *defaults) or a list of them"
                self.problems.append(Problem(_mark(source), _format_path(path), message))

    def _key(self, node: yaml.Node, path: DataPath) -> str | None:
        if isinstance(node, yaml.ScalarNode):
            return str(node.value)
        message = "a key must be a plain word, not a list or mapping"
        self.problems.append(Problem(_mark(node), _format_path(path), message))
        return None

    def _scalar(self, node: yaml.Node, path: DataPath) -> object:
        text = str(node.value)
        self.source.texts[path] = text
        if self._is_plain(node):
            if (message := refusal(text)) is not None:
                self._refuse(node, path, message)
            return read_plain(text)
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self._refuse(node, path, f"cannot read this value: {exc.problem}")
            return None

    def _is_plain(self, node: yaml.Node) -> bool:
        """Unquoted and untagged: PyYAML gave it the tag YAML 1.1 implies, to be read as 1.2.

        The pure parser marks plain style None, libyaml ''; an explicit tag (!!str 010)
        differs from the implied one and is kept.
        """
        if not isinstance(node, yaml.ScalarNode) or node.style:
            return False
        # types-PyYAML leaves Resolver.resolve unannotated.
        implied = self._resolver.resolve(yaml.ScalarNode, node.value, (True, False))  # type: ignore[no-untyped-call]
        return bool(node.tag == implied)

    def _refuse(self, node: yaml.Node, path: DataPath, message: str) -> None:
        self.problems.append(Problem(_mark(node), _format_path(path), message))
        self.refused.add(path)


# --- duplicate names --------------------------------------------------------------


def _duplicate_problems(data: object, source: SourceMap) -> list[Problem]:
    """Repeated device names and tags, each at its own line, whatever else is wrong."""
    devices = _items(data, "devices", ())
    names = list(_named(devices, "name"))
    tags = [
        pair for path, device in devices for pair in _named(_items(device, "tags", path), "tag")
    ]
    duplicates = [*find_duplicates("device name", names), *find_duplicates("tag", tags)]
    return [
        Problem(
            source.value(d.path),
            _format_path(d.path),
            f"{d.what} {d.name!r} is already used at line {source.value(d.first).line} "
            f"({_format_path(d.first)}); each {d.what} must be unique",
        )
        for d in duplicates
    ]


def _items(data: object, key: str, path: DataPath) -> list[tuple[DataPath, object]]:
    values = data.get(key) if isinstance(data, dict) else None
    if not isinstance(values, list):
        return []
    return [((*path, key, i), item) for i, item in enumerate(values)]


def _named(items: list[tuple[DataPath, object]], key: str) -> Iterator[tuple[str, DataPath]]:
    for path, item in items:
        if isinstance(item, dict) and isinstance(item.get(key), str):
            yield item[key], (*path, key)


# --- pydantic errors -> problems ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Error:
    """One pydantic error, placed in the data: what a message needs to know."""

    details: ErrorDetails
    path: DataPath
    data: object
    source: SourceMap

    @property
    def kind(self) -> str:
        return self.details["type"]

    @property
    def ctx(self) -> dict[str, Any]:
        return self.details.get("ctx", {})

    @property
    def value(self) -> object:
        """The value as the file holds it (pydantic may report a converted one)."""
        return _at(self.data, self.path)

    @property
    def shown(self) -> str:
        return _show(self.value, self.source.texts.get(self.path))


def _explain(errors: list[ErrorDetails], data: object, source: SourceMap) -> list[Problem]:
    """One problem per error; a misspelt key is one problem, not also a missing key."""
    # _duplicate_problems has already put each repeated name at its own line.
    placed = [_place(e, data, source) for e in errors if e["type"] != "duplicate_name"]
    typos = {(e.path[:-1], _typo_fix(e)) for e in placed if e.kind == "extra_forbidden"}
    return [
        Problem(_position(e), _format_path(e.path), _message(e))
        for e in placed
        if not (e.kind == "missing" and (e.path, e.details["loc"][-1]) in typos)
    ]


def _place(details: ErrorDetails, data: object, source: SourceMap) -> _Error:
    path = _data_path(details["loc"], data)
    if details["type"] == "union_tag_invalid":
        path = _data_path((*path, _unquote(details.get("ctx", {})["discriminator"])), data)
    elif details["type"] == LOCATED:
        path = _data_path((*path, *details.get("ctx", {})["path"]), data)
    return _Error(details, path, data, source)


def _data_path(loc: tuple[str | int, ...], data: object) -> DataPath:
    """Keep the segments of loc that are in the data; drop union tags and validator names."""
    path: list[str | int] = []
    node = data
    for segment in loc:
        if _has(node, segment):
            node = _at(node, (segment,))
            path.append(segment)
    return tuple(path)


def _has(node: object, segment: str | int) -> bool:
    if isinstance(node, dict):
        return segment in node
    if isinstance(node, list):
        return isinstance(segment, int) and 0 <= segment < len(node)
    return False


def _withhold(data: object, path: DataPath) -> None:
    """Put None where a value was: what a missing value gets, so nothing else is said of it."""
    if path:
        _at(data, path[:-1])[path[-1]] = None  # type: ignore[index]  # the walker made the path


def _at(data: object, path: DataPath) -> object:
    for segment in path:
        data = data[segment]  # type: ignore[index]  # _data_path only keeps segments that exist
    return data


def _position(error: _Error) -> Mark:
    """Where to point: unknown keys and mappings where they are named, values where written.

    A mapping is what a missing key or a check across fields (limit order) is about.
    """
    if error.kind == "extra_forbidden" or isinstance(error.value, dict):
        return error.source.anchor(error.path)
    return error.source.value(error.path)


def _message(error: _Error) -> str:
    for kinds, explain in _EXPLAINERS:
        if error.kind in kinds:
            return explain(error)
    message = error.details["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message


def _missing(error: _Error) -> str:
    return f"missing required key {error.details['loc'][-1]!r}"


def _unknown_key(error: _Error) -> str:
    key, close = error.path[-1], _typo_fix(error)
    if close:
        return f"unknown key {key!r}; did you mean {close!r}?"
    known = _field_names(_models_at(error.path[:-1], error.data))
    return f"unknown key {key!r}; the keys allowed here are {', '.join(known)}"


def _typo_fix(error: _Error) -> str | None:
    """The known key an unknown one most likely misspells."""
    return _closest(str(error.path[-1]), _field_names(_models_at(error.path[:-1], error.data)))


def _not_allowed(error: _Error) -> str:
    allowed = re.findall(r"'([^']*)'", error.ctx.get("expected") or error.ctx["expected_tags"])
    text = error.shown
    if not isinstance(error.value, str) and text in allowed:
        return f"{text} is read as a number here; write it in quotes: '{text}'"
    message = f"{text} is not one of {', '.join(allowed)}"
    meant = _meant(str(error.value), allowed)
    return f"{message}; {meant}" if meant else message


def _meant(word: str, allowed: list[str]) -> str | None:
    """What a value not allowed most likely meant: what a PLC manual calls a data type
    (`float`, `word`: the likely width, not the closest spelling), else a typo's fix."""
    synonym = TYPE_NAMES.get(word.lower())
    if synonym is not None and synonym[0] in allowed:
        return f"did you mean {synonym[0]!r}? ({synonym[1]})"
    close = _closest(word, allowed)
    return f"did you mean {close!r}?" if close else None


def _no_discriminator(error: _Error) -> str:
    key = _unquote(error.ctx["discriminator"])
    allowed = [
        str(value)
        for model in _models_at(error.path, error.data)
        if key in model.model_fields
        for value in get_args(model.model_fields[key].annotation)
    ]
    return f"missing required key {key!r} (one of {', '.join(allowed)})"


_EXPECTED = {
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "model_type": "a mapping (indented key: value lines)",
    "model_attributes_type": "a mapping (indented key: value lines)",
    "dict_type": "a mapping (indented key: value lines)",
    "list_type": "a list (lines that start with '- ')",
}


def _wrong_type(error: _Error) -> str:
    message = f"expected {_EXPECTED[error.kind]}, got {error.shown}"
    if error.kind == "string_type" and not isinstance(error.value, dict | list | None):
        message += f"; write it in quotes: '{error.shown}'"
    elif error.kind == "bool_type" and isinstance(error.value, str):
        meant = YAML11_BOOLEANS.get(error.value.lower())
        if meant is not None:
            message += (
                f"; YAML 1.1 reads {error.value} as {str(meant).lower()}, but YAML 1.2 "
                f"(editors, and this loader) reads it as text: write {str(meant).lower()}"
            )
    return message


_BOUNDS = {
    "greater_than": ("gt", "more than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _out_of_bounds(error: _Error) -> str:
    key, words = _BOUNDS[error.kind]
    return f"must be {words} {_like(error.ctx[key], error.value)}, got {error.shown}"


def _like(limit: float, value: object) -> str:
    """A limit written the way the value was: '1m' for a duration, '256KiB' for a size."""
    if isinstance(value, str):
        if _parses_as(parse_duration, value):
            return format_duration(limit)
        if _parses_as(parse_size, value):
            return format_size(int(limit))
    return f"{limit:g}"


def _parses_as(parse: Callable[[object], object], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def _length(error: _Error) -> str:
    ctx = error.ctx
    if error.kind == "too_short":
        return f"needs at least {_count(ctx['min_length'], 'item')}, found {ctx['actual_length']}"
    if error.kind == "too_long":
        return f"holds at most {_count(ctx['max_length'], 'item')}, found {ctx['actual_length']}"
    if error.kind == "string_too_short":
        return f"must be at least {_count(ctx['min_length'], 'character')} long"
    return f"must be at most {_count(ctx['max_length'], 'character')} long"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


_CHAR_CLASS = re.compile(r"^\^\[([^\]]+)\]\{(\d+),(\d+)\}\$$")  # ^[...]{m,n}$
_NOT_CHARS = re.compile(r"^\^\[\^([^\]]+)\]\+\$$")  # ^[^...]+$


def _pattern(error: _Error) -> str:
    pattern = str(error.ctx["pattern"])
    if match := _CHAR_CLASS.match(pattern):
        chars, low, high = match.groups()
        kinds = [word for part, word in (("A-Za-z", "letters"), ("0-9", "digits")) if part in chars]
        for part in ("A-Za-z", "0-9"):
            chars = chars.replace(part, "")
        allowed = [*kinds, *(repr(c) for c in chars)]
        listed = ", ".join(allowed[:-1]) + " and " + allowed[-1] if len(allowed) > 1 else allowed[0]
        return f"{error.shown} may hold only {listed}, {low} to {high} characters"
    if match := _NOT_CHARS.match(pattern):
        chars = " or ".join(repr(c) for c in match.group(1))
        return f"{error.shown} must not be empty or contain {chars}"
    return f"{error.shown} does not match the pattern {pattern}"


_EXPLAINERS: list[tuple[Container[str], Callable[[_Error], str]]] = [
    (frozenset({"missing"}), _missing),
    (frozenset({"extra_forbidden"}), _unknown_key),
    (frozenset({"literal_error", "union_tag_invalid"}), _not_allowed),
    (frozenset({"union_tag_not_found"}), _no_discriminator),
    (_EXPECTED, _wrong_type),
    (_BOUNDS, _out_of_bounds),
    (frozenset({"too_short", "too_long", "string_too_short", "string_too_long"}), _length),
    (frozenset({"string_pattern_mismatch"}), _pattern),
]


# --- helpers ------------------------------------------------------------------------


def _models_at(path: DataPath, data: object) -> list[type[BaseModel]]:
    """The models that describe the mapping at path (several only for an unresolved union)."""
    models: list[type[BaseModel]] = [AgentConfig]
    node = data
    for segment in path:
        node = _at(node, (segment,))
        if isinstance(segment, str):
            fields = [m.model_fields[segment] for m in models if segment in m.model_fields]
            models = [model for f in fields for model in _models_in(f.annotation)]
        models = _told_apart(models, node)
    return models


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The models inside an annotation: through Annotated, unions, Optional and lists."""
    if get_origin(annotation) is None and isinstance(annotation, type):
        return [annotation] if issubclass(annotation, BaseModel) else []
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def _told_apart(models: list[type[BaseModel]], node: object) -> list[type[BaseModel]]:
    """Keep the union members whose Literal fields (the discriminator) match the data."""
    if len(models) < 2 or not isinstance(node, dict):
        return models
    matching = [
        model
        for model in models
        if all(
            node[name] in get_args(f.annotation)
            for name, f in model.model_fields.items()
            if name in node and _is_literal(f.annotation)
        )
    ]
    return matching or models


def _is_literal(annotation: object) -> bool:
    return get_origin(annotation) is Literal


def _field_names(models: list[type[BaseModel]]) -> list[str]:
    return list(dict.fromkeys(name for model in models for name in model.model_fields))


def _closest(word: str, choices: list[str]) -> str | None:
    """The choice a typo most likely meant, ignoring case (hh -> HH)."""
    lowered = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1)
    return lowered[close[0]] if close else None


def _unquote(text: str) -> str:
    return text.strip("'\"")


def _show(value: object, text: str | None) -> str:
    """A value as the technician wrote it: text quoted, numbers and booleans as typed."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (the value is empty)"
    return text if text is not None else str(value)


def _format_path(path: DataPath) -> str:
    """('devices', 0, 'tags', 3, 'type') -> 'devices[0].tags[3].type'."""
    text = ""
    for segment in path:
        if isinstance(segment, int):
            text += f"[{segment}]"
        else:
            text += f".{segment}" if text else segment
    return text or "(top level)"
