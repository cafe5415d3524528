"""Results that depend only on the base model and the rows, computed once per base model (in memory)
and reused for every candidate checked against it: the relearning controls, the quantized base's
answers (what a guard-only candidate's weights give once quantized).

Keyed on the model object (weakly: a base that is let go takes its entries with it) and on the sum of
its parameters' version counters, which every in-place change of a tensor bumps: a base whose weights
were changed in place is not served stale results."""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable, Sequence
from typing import Any

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fingerprint(model) -> int:
    return sum(p._version for p in model.parameters())


def cached(base, key: tuple, compute: Callable[[], Any]) -> Any:
    """compute(), or what it returned for the same base (weights unchanged) and key before."""
    slot = _CACHE.setdefault(base, {})
    full_key = (_fingerprint(base), *key)
    if full_key not in slot:
        slot[full_key] = compute()
    return slot[full_key]


def rows_key(rows: Sequence[dict]) -> str:
    """A digest of the rows' questions, answers, lead-ins and lead-outs (what the cached computations read of them)."""
    body = json.dumps([[r["question"], r["answer"], r.get("lead_in") or "", r.get("lead_out") or ""] for r in rows],
                      ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def clear() -> None:
    """Forget everything (a benchmark measuring cold runs)."""
    _CACHE.clear()
