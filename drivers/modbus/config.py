"""The configuration of a Modbus TCP device and its tags."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from drivers.modbus.codec import (
    AREAS,
    BIT_AREAS,
    BYTE_ORDERS,
    DATA_TYPES,
    Address,
    parse_address,
    register_count,
)
from edge_agent.config.tags import Strict, TagBase
from edge_agent.config.types import Duration

DataType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"
]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]


class Scale(Strict):
    """Linear scaling: engineering value = raw * multiplier + offset."""

    multiplier: float = Field(1.0, description="Factor applied to the raw value.")
    offset: float = Field(0.0, description="Added after the multiplier.")


class ModbusTag(TagBase):
    address: str = Field(
        description=(
            "Area and 0-based offset: hr:N (holding register), ir:N (input register), "
            "co:N (coil), di:N (discrete input)."
        ),
        examples=["hr:0", "ir:10", "co:5", "di:7"],
    )
    type: DataType = Field("uint16", description="How the raw bits are read.")
    byte_order: ByteOrder | None = Field(
        None,
        description=(
            "Order of the bytes of a multi-register value, A the most significant: ABCD (big "
            "endian), CDAB (word swap), BADC (byte swap), DCBA (little endian). "
            "Defaults to the device's byte_order."
        ),
    )
    scale: Scale | None = Field(None, description="Linear scaling of numeric types.")

    @model_validator(mode="after")
    def _type_fits_area(self) -> Self:
        address = parse_address(self.address)
        if address.area in ("co", "di") and self.type != "bool":
            raise ValueError(
                f"address {self.address!r} is a single bit ({AREAS[address.area]}); "
                f"its type must be bool, not {self.type}"
            )
        if self.scale is not None and self.type == "bool":
            raise ValueError("a bool tag cannot be scaled: remove scale")
        if address.offset + register_count(self.type) > 65536:
            raise ValueError(f"{self.type} at {self.address!r} runs past address 65535")
        return self

    @property
    def parsed_address(self) -> Address:
        return parse_address(self.address)


class ModbusDevice(Strict):
    """A Modbus TCP device (PLC, RTU gateway) polled at a fixed interval."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Device name, unique.")
    driver: Literal["modbus"] = Field(description="Selects the Modbus TCP driver.")
    host: str = Field(description="IP address or host name of the device.")
    port: int = Field(502, ge=1, le=65535, description="TCP port.")
    unit: int = Field(1, ge=0, le=255, description="Modbus unit id (slave address).")
    poll: Duration = Field(1.0, description="Poll interval, e.g. 1s or 500ms.")
    timeout: Duration = Field(1.0, description="Time allowed for one request or connect.")
    byte_order: ByteOrder = Field(
        "ABCD", description="Default byte order of multi-register values."
    )
    max_registers: int = Field(
        125, ge=1, le=125, description="Largest register read sent in one request."
    )
    max_bits: int = Field(
        2000, ge=1, le=2000, description="Largest coil/input read in one request."
    )
    tags: list[ModbusTag] = Field(min_length=1, description="The points read from this device.")

    @model_validator(mode="after")
    def _tags_fit_one_request(self) -> Self:
        for tag in self.tags:
            if tag.parsed_address.area in BIT_AREAS:
                continue
            width = register_count(tag.type)
            if width > self.max_registers:
                raise ValueError(
                    f"tag {tag.tag} is a {tag.type} ({width} registers) but max_registers is "
                    f"{self.max_registers}: a value is never split across two reads; "
                    f"raise max_registers to at least {width}"
                )
        return self


__all__ = ["BYTE_ORDERS", "DATA_TYPES", "ModbusDevice", "ModbusTag", "Scale"]
