"""The resumable JSON results file: one entry per configuration, saved as soon as it finishes,
reused on a rerun with the same settings on the same machine.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

SCHEMA = 1


class Store:
    """The JSON file: ``results[key]`` holds one configuration's figures, its params and machine."""

    def __init__(self, path: Path | None, *, force: bool, machine: dict):
        self.path, self.force, self.machine = path, force, machine
        self.data: dict = {"schema": SCHEMA, "meta": {}, "results": {}, "targets": {}}
        if path is not None and path.is_file():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise SystemExit(f"--json {path} is not valid JSON ({exc}); move it away or pass another") from None
            if old.get("schema") == SCHEMA:
                self.data = old
        self.measured: list[str] = []
        self.reused: list[str] = []

    @property
    def results(self) -> dict:
        return self.data["results"]

    def cached(self, key: str, params: dict) -> dict | None:
        r = self.results.get(key)
        if self.force or r is None or r.get("failed"):
            return None
        if r.get("params") != params:
            return None
        if r.get("machine") != self.machine:
            print(f"  {key}: cached figure is from another machine or thread count; measuring again")
            return None
        return r

    def put(self, key: str, params: dict, value: dict) -> dict:
        entry = {**value, "params": params, "machine": self.machine,
                 "finished": datetime.now(UTC).isoformat(timespec="seconds")}
        self.results[key] = entry
        self.save()
        return entry

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=_json_default) + "\n")
        os.replace(tmp, self.path)  # atomic: an interrupted write never corrupts finished entries

    def run(self, key: str, params: dict, fn: Callable[[], dict], show: Callable[[dict], str], *,
            force: bool = False) -> dict:
        hit = None if force else self.cached(key, params)
        if hit is not None:
            self.reused.append(key)
            print(f"  {key:<44} {show(hit)}  (cached)")
            return hit
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - one failed configuration must not lose the others
            traceback.print_exc()
            value = {"failed": True, "error": f"{type(exc).__name__}: {exc}"}
        value["wall_s"] = round(time.perf_counter() - t0, 2)
        entry = self.put(key, params, value)
        self.measured.append(key)
        print(f"  {key:<44} {show(entry) if not entry.get('failed') else 'FAILED: ' + entry['error']}")
        return entry


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))
