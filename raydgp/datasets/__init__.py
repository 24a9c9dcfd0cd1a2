"""The shipped tuning history (package data, ``shipped/``) and helpers to read it as a benchmark."""

from __future__ import annotations

from collections import Counter
from typing import Iterable


def layers_of(records: Iterable) -> dict[str, list[str]]:
    """Workload keys per dataset layer spec (a record's ``dataset:<spec>`` tag), most ``ok`` records first.

    One layer measured on two machine kinds has one key per kind (the key includes the target), so a benchmark that
    holds a layer out must leave out every key of its spec, and usually targets the key with the most records.
    """
    ok: Counter = Counter()
    keys: dict[str, set] = {}
    for r in records:
        if not r.tag.startswith("dataset:"):
            continue
        spec = r.tag.split("dataset:", 1)[1]
        keys.setdefault(spec, set()).add(r.workload.key)
        ok[r.workload.key] += r.result.ok
    return {s: sorted(ks, key=lambda k: (-ok[k], k)) for s, ks in keys.items()}
