"""One way for every contract dataclass to refuse a value: name the field, the value, what is allowed."""

from __future__ import annotations

from typing import Any

from .errors import ContractError


def require(cond: bool, what: str, value: Any, allowed: str) -> None:
    """Raise :class:`ContractError` ``manifest: <what> is <value>; expected <allowed>`` unless ``cond``."""
    if not cond:
        shown = repr(value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        raise ContractError(f"manifest: {what} is {shown}; expected {allowed}")


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def one_of(kinds: dict[str, Any], kind: Any, what: str) -> Any:
    """``kinds[kind]``, or a :class:`ContractError` listing the kinds there are."""
    require(isinstance(kind, str) and kind in kinds, what, kind, f"one of {sorted(kinds)}")
    return kinds[kind]
