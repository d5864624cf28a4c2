"""What every embedding answer must be before the router takes it: one vector per text, all
of one length (the asked `dimensions` when set), of finite numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from services.router.engines.base import ProviderUnavailable


def checked_vectors(
    raw: Sequence[Any], count: int, dimensions: int, provider: str
) -> tuple[tuple[float, ...], ...]:
    """`raw` as vectors; ProviderUnavailable (a malformed answer) when it is not `count`
    lists of `dimensions` (or, when 0, of one common length) finite numbers."""
    if len(raw) != count:
        raise ProviderUnavailable(f"{provider}: {len(raw)} vectors for {count} inputs")
    vectors = []
    for vector in raw:
        if not isinstance(vector, list) or not vector:
            raise ProviderUnavailable(f"{provider}: malformed embedding")
        values = []
        for value in vector:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ProviderUnavailable(f"{provider}: malformed embedding")
            if not math.isfinite(value):
                raise ProviderUnavailable(f"{provider}: malformed embedding")
            values.append(float(value))
        vectors.append(tuple(values))
    lengths = {len(v) for v in vectors}
    wanted = dimensions or len(vectors[0])
    if lengths != {wanted}:
        raise ProviderUnavailable(
            f"{provider}: vectors of {sorted(lengths)} dimensions, expected {wanted}"
        )
    return tuple(vectors)
