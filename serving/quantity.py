"""Kubernetes resource quantities (`500m`, `2`, `128Mi`, `1G`, `1e3`) as numbers, for container limits.

The grammar is Kubernetes' (`k8s.io/apimachinery/pkg/api/resource`): a signed decimal number with an optional
binary suffix (Ki, Mi, Gi, Ti, Pi, Ei), decimal suffix (n, u, m, k, M, G, T, P, E) or decimal exponent.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

_BINARY: Final = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL: Final = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY_RE: Final = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)


class QuantityError(ValueError):
    """Not a Kubernetes quantity."""


def parse_quantity(value: str | int | float) -> Decimal:
    """The quantity's value: `500m` -> 0.5, `128Mi` -> 134217728, `1e3` -> 1000."""
    if isinstance(value, bool):
        raise QuantityError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY_RE.match(value.strip())
    if match is None:
        raise QuantityError(
            f"{value!r} is not a quantity: a number with an optional suffix (500m, 2, 128Mi, 1G)"
        )
    try:
        number = Decimal(match["number"])
    except InvalidOperation:
        raise QuantityError(f"{value!r} is not a quantity") from None
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * Decimal(1024 ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))
