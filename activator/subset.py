"""Subsetting: which of a revision's pods this activator sends to when several activators share them.

Every activator sorts the same pod addresses and takes its own contiguous slice, so with containerConcurrency
> 0 no two activators fill the same pod's slots. Knative's assignment rule, kept so mixed fleets agree.
"""

from __future__ import annotations

from collections.abc import Sequence


def assign_slice(addresses: Sequence[str], index: int, count: int) -> list[str]:
    """The addresses assigned to activator `index` of `count`; `addresses` must be sorted.

    Slices of `len // count` pods each; the `len % count` pods left at the end go one each to the
    activators with the lowest indices. With more activators than pods, activator `i` takes pod
    `i % len` (pods are then shared). One pod or one activator: everything.
    """
    total = len(addresses)
    if count <= 1 or total <= 1:
        return list(addresses)
    if count > total:
        return [addresses[index % total]]
    size = total // count
    chosen = list(addresses[index * size : (index + 1) * size])
    remnants = total % count
    if index < remnants:
        chosen.append(addresses[total - remnants + index])
    return chosen
