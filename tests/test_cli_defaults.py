"""`mpft predict`, `mpft serve` and `mpft explain` options default to what the library defaults to (issue 12 item 3).

The train options are checked in tests/test_settings_defaults.py, the eval options in
tests/evaluation/test_settings.py. Each option is mapped to the library default it fills; a
deliberate difference is listed with its reason, so drift cannot pass silently.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import typer.main

from mpft.cli import app
from mpft.detector import Detector
from mpft.engines import DEFAULT_ENGINE
from mpft.engines.ray_data import predict_iter as ray_predict_iter
from mpft.explain import explain_image, render
from mpft.serve.settings import MIB, ServeSettings


def _params(command: str) -> dict[str, object]:
    return {p.name: p for p in typer.main.get_command(app).commands[command].params}  # type: ignore[attr-defined]


def _kwarg_default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


_SERVE = {f.name: f.default for f in dataclasses.fields(ServeSettings)}

# option -> (library default, the CLI default converted to the library's unit)
PREDICT = {
    "batch_size": (_kwarg_default(Detector.predict_iter, "batch_size"), lambda v: v),
    "workers": (_kwarg_default(Detector.predict_iter, "workers"), lambda v: v),
    "precision": (_kwarg_default(Detector.load, "precision"), lambda v: v),
    "views": (_kwarg_default(Detector.load, "views"), lambda v: v),  # None: the checkpoint's own views
    "model": (_kwarg_default(Detector.load, "path"), lambda v: v),  # None: the shipped detector
    "engine": (DEFAULT_ENGINE, lambda v: v),
    "actors": (_kwarg_default(ray_predict_iter, "actors"), lambda v: v),
    "address": (_kwarg_default(ray_predict_iter, "address"), lambda v: v),  # None: a local Ray
}
PREDICT_INTENDED = {
    "paths": "inputs: no library default",
    "fmt": "output formatting: CLI only",
    "output": "output file: CLI only",
    "resume": "appending to --output: CLI only (predict_resume)",
    "recursive": "folder expansion: CLI only (predict_io.expand_inputs)",
    "band": "None: the checkpoint's band (Decision)",
    "threshold": "None: the checkpoint's threshold (Decision)",
    "max_pixels": "None: data.limits.DEFAULT_MAX_PIXELS, the Detector's own default",
    "device": "'auto' picks a GPU when there is one; Detector.load defaults to 'cpu' for code that did not ask",
}
SERVE = {
    "max_upload_mb": (_SERVE["max_upload_bytes"], lambda v: round(v * MIB)),
    "max_files": (_SERVE["max_files"], lambda v: v),
    "max_concurrency": (_SERVE["max_concurrency"], lambda v: v),
    "queue_timeout": (_SERVE["queue_timeout_s"], lambda v: v),
    "batch_size": (_SERVE["batch_size"], lambda v: v),
    "batch_window_ms": (_SERVE["batch_window_s"], lambda v: v / 1000.0),
    "header_timeout": (_SERVE["header_timeout_s"], lambda v: v),
    "body_timeout": (_SERVE["body_timeout_s"], lambda v: v),
    "idle_timeout": (_SERVE["idle_timeout_s"], lambda v: v),
    "max_connections": (_SERVE["max_connections"], lambda v: v),
    "precision": (_kwarg_default(Detector.load, "precision"), lambda v: v),
    "views": (_kwarg_default(Detector.load, "views"), lambda v: v),
    "model": (_kwarg_default(Detector.load, "path"), lambda v: v),
}
SERVE_INTENDED = {
    "host": "network binding: CLI only (loopback by default)",
    "port": "network binding: CLI only",
    "max_pixels": "None: data.limits.DEFAULT_MAX_PIXELS (ServeSettings' default)",
    "workers_threads": "None: torch's own thread count",
    "device": "'cpu': a server takes the GPU only when asked (--device cuda / auto)",
}

EXPLAIN = {
    "group": (_kwarg_default(explain_image, "group"), lambda v: v),  # None: ~7x7 groups for the grid
    "dpi": (_kwarg_default(render, "dpi"), lambda v: v),
    "views": (_kwarg_default(Detector.load, "views"), lambda v: v),
    "model": (_kwarg_default(Detector.load, "path"), lambda v: v),
}
EXPLAIN_INTENDED = {
    "image": "input: no library default",
    "out": "None: no PNG unless asked (CLI only)",
    "method": "'occlusion', the only evidence method: checked by the CLI",
    "as_json": "output formatting: CLI only",
    "max_pixels": PREDICT_INTENDED["max_pixels"],
    "device": PREDICT_INTENDED["device"],
}
COMMANDS = {"predict": (PREDICT, PREDICT_INTENDED), "serve": (SERVE, SERVE_INTENDED),
            "explain": (EXPLAIN, EXPLAIN_INTENDED)}


@pytest.mark.parametrize("command,mapped,intended", [(c, *m) for c, m in COMMANDS.items()])
def test_every_option_is_mapped_or_explained(command, mapped, intended):
    names = set(_params(command))
    assert names == set(mapped) | set(intended), (
        f"`mpft {command}` options without a library default to check: {sorted(names - set(mapped) - set(intended))}; "
        f"stale entries: {sorted((set(mapped) | set(intended)) - names)}"
    )


@pytest.mark.parametrize("command,name", [(c, n) for c, (m, _) in COMMANDS.items() for n in m])
def test_option_default_equals_the_library_default(command, name):
    want, convert = COMMANDS[command][0][name]
    assert convert(_params(command)[name].default) == want, f"`mpft {command} --{name}` default drifted"
