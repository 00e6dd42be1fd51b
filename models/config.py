"""One way to turn config dataclasses into their JSON form and back."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

T = TypeVar("T", bound="JsonConfig")


class JsonConfig:
    """Mixin for config dataclasses: `to_dict()` is the JSON form, `from_dict()` refuses unknown keys
    after `upgrade` has turned fields of older versions into their current form."""

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples -> lists, as JSON stores them

    @staticmethod
    def upgrade(data: dict[str, Any]) -> dict[str, Any]:
        return data

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        data = cls.upgrade(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
        return cls(**data)
