"""Where a tag's value sits on the server: a NodeId text or a browse path, parsed offline.

Nothing here imports asyncua, so `edge-agent check` validates addresses without
it; drivers/opcua/session.py turns a parsed address into a ua.NodeId at connect,
when the server's namespace array is known.

NodeId text (OPC UA Part 6, 5.3.1.10):   ns=2;s=Vent.CO301   ns=3;i=1001
    nsu=urn:mine:vent;s=CO301 (namespace by URI)   i=2258 (namespace 0)
    s=CO301 (no ns: the device's `namespace` URI, else namespace 0)
Browse path, from the Objects folder:  Vent/CO301  or  2:Vent/2:CO301
    (an element without an index prefix is in the device's `namespace`).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass

# Without named groups, which JSON Schema patterns (ECMA 262) write differently.
_NODE_FORM = r"(?:ns=([0-9]+);|nsu=([^;]+);)?([isgb])=([\s\S]+)"
_NODE = re.compile(f"^{_NODE_FORM}$")
NODE_PATTERN = rf"^\s*{_NODE_FORM}\s*$"
"""The NodeId texts `parse_node` may read, for the JSON Schema; `parse_node` also checks
the identifier (i= a number below 2^32, g= a GUID, b= base64) and the namespace index."""
_ELEMENT = re.compile(r"^(?:(?P<ns>\d+):)?(?P<name>[^/]+)$")

Namespace = int | str | None
"""An index, a URI to resolve at connect, or None for the device's default namespace."""


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A NodeId whose namespace may still need the server's namespace array."""

    namespace: Namespace
    kind: str
    """i (numeric), s (string), g (GUID) or b (opaque, base64)."""
    identifier: str

    def text(self, index: int) -> str:
        """The NodeId text with the namespace resolved to `index`."""
        return f"ns={index};{self.kind}={self.identifier}"


@dataclass(frozen=True, slots=True)
class BrowseElement:
    namespace: int | None
    """The browse name's namespace index; None for the device's default namespace."""
    name: str


def parse_node(text: str) -> NodeAddress:
    """A NodeId text -> its parts; ValueError with the accepted forms when it is not one."""
    match = _NODE.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a NodeId: write e.g. ns=2;s=Vent.CO301, ns=3;i=1001 or "
            "nsu=urn:plant:vent;s=CO301"
        )
    index, uri, kind, identifier = match.groups()
    _check_identifier(kind, identifier, text)
    namespace: Namespace = uri
    if index is not None:
        namespace = int(index)
        if namespace > 65535:
            raise ValueError(f"{text!r}: a namespace index is at most 65535")
    return NodeAddress(namespace, kind, identifier)


def _check_identifier(kind: str, identifier: str, text: str) -> None:
    if kind == "i" and not (identifier.isdigit() and int(identifier) < 2**32):
        raise ValueError(f"{text!r}: a numeric identifier (i=) is a whole number below 2^32")
    if kind == "g":
        try:
            uuid.UUID(identifier)
        except ValueError:
            raise ValueError(f"{text!r}: a GUID identifier (g=) looks like 09087e75-...") from None
    if kind == "b":
        try:
            base64.b64decode(identifier, validate=True)
        except binascii.Error:
            raise ValueError(f"{text!r}: an opaque identifier (b=) is base64") from None


def parse_browse_path(text: str) -> tuple[BrowseElement, ...]:
    """`Vent/CO301` or `2:Vent/2:CO301` (from the Objects folder) -> its elements."""
    parts = text.strip().strip("/").split("/")
    elements = []
    for part in parts:
        match = _ELEMENT.match(part)
        if match is None or not match["name"].strip():
            raise ValueError(
                f"browse path {text!r}: write browse names from the Objects folder separated "
                "by /, each optionally with its namespace index, e.g. Vent/CO301 or 2:Vent/2:CO301"
            )
        namespace = None if match["ns"] is None else int(match["ns"])
        elements.append(BrowseElement(namespace, match["name"]))
    return tuple(elements)
