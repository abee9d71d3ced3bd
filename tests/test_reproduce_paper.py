"""The commands of docs/reproduce-paper.md, run on tiny generated datasets so they cannot rot.

The doc's fenced ``bash`` blocks that start with ``# tested: <name>`` are parsed here: the
placeholders ``$GENIMAGE``, ``$UFD`` and ``$OUT`` become tiny folders in ``tmp_path``, the sizes
shrink (see ``TRAIN_OVERRIDES`` / ``EVAL_OVERRIDES``), and the ``mpft`` commands run in-process
through :func:`mpft.cli.main` (``torchrun`` ones and the data-preparation step as subprocesses).

Fast tests use the ``random:tiny`` backbone; the ``random:l14`` runs (the doc's ViT-L/14 shape,
300 M random parameters) and the ``torchrun`` runs are marked slow.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mpft.cli import main

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reproduce-paper.md"

PLACEHOLDERS = ("GENIMAGE", "UFD", "OUT")
_PLACEHOLDER_RE = re.compile(r"\$\{?(" + "|".join(PLACEHOLDERS) + r")\}?(?![A-Za-z0-9_])")
_FENCE_RE = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
_MARKER_RE = re.compile(r"^# tested: ([\w-]+)\s*$")

#: Every tested block of the doc, and how this module runs it.
EXPECTED_BLOCKS = {
    "genimage-train": "mpft",
    "genimage-train-lora": "mpft",
    "genimage-eval": "mpft",
    "genimage-robustness": "mpft",
    "ufd-prepare": "bash",
    "ufd-train": "mpft",
    "ufd-eval": "mpft",
    "genimage-torchrun": "torchrun",
    "ufd-torchrun": "torchrun",
    "print-results": "bash",
}

#: GenImage's download layout, model folder -> generator folder (three of the eight here).
GENIMAGE_GENERATORS = {
    "stable_diffusion_v_1_4": "imagenet_ai_0419_sdv4",
    "stable_diffusion_v_1_5": "imagenet_ai_0424_sdv5",
    "BigGAN": "imagenet_ai_0419_biggan",
}
GENIMAGE_ALL = (
    "imagenet_midjourney", "imagenet_ai_0419_sdv4", "imagenet_ai_0424_sdv5", "imagenet_ai_0508_adm",
    "imagenet_glide", "imagenet_ai_0424_wukong", "imagenet_ai_0419_vqdm", "imagenet_ai_0419_biggan",
)
UFD_SETS = (
    "progan", "cyclegan", "biggan", "stylegan", "gaugan", "stargan", "deepfake", "seeingdark", "san",
    "crn", "imle", "guided", "ldm_200", "ldm_200_cfg", "ldm_100", "glide_100_27", "glide_50_27",
    "glide_100_10", "dalle",
)
# The object class "train" is in the tiny tree on purpose: CNNDetection has it (see the doc).
UFD_CLASSES = ("airplane", "train")


def train_overrides(backbone: str) -> dict[str, str]:
    """Option values that shrink a doc ``mpft train`` command to a CPU test."""
    return {
        "--backbone": backbone,
        "--shots": "4",
        "--epochs": "1",
        "--batch-size": "2",
        "--layers": "1",
        "--val-limit": "1",
        "--workers": "0",
        "--device": "cpu",
    }


EVAL_OVERRIDES = {"--limit": "1", "--n-boot": "0", "--batch-size": "4", "--workers": "0", "--device": "cpu"}


# --------------------------------------------------------------------------------------------------
# Reading the doc
# --------------------------------------------------------------------------------------------------


def bash_blocks(text: str) -> list[str]:
    """Bodies of the fenced ``bash`` blocks of a markdown text, in order."""
    return _FENCE_RE.findall(text)


def marked_blocks(text: str) -> dict[str, str]:
    """``{name: body}`` of the bash blocks whose first line is ``# tested: <name>``."""
    found: dict[str, str] = {}
    for body in bash_blocks(text):
        m = _MARKER_RE.match(body.splitlines()[0]) if body.strip() else None
        if m:
            assert m.group(1) not in found, f"two blocks are marked '# tested: {m.group(1)}'"
            found[m.group(1)] = body
    return found


def logical_lines(body: str) -> list[str]:
    """Shell lines of a block with backslash continuations joined, comments and blanks dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def commands(body: str) -> list[list[str]]:
    """The block's commands as argument lists (shell quoting removed, placeholders kept)."""
    return [shlex.split(ln, comments=True) for ln in logical_lines(body)]


def fill(tok: str, env: dict[str, str]) -> str:
    """Replace the placeholders in one token; any other shell variable is an error."""
    tok = _PLACEHOLDER_RE.sub(lambda m: env[m.group(1)], tok)
    assert "$" not in tok, f"unknown shell variable in {tok!r} (placeholders: {PLACEHOLDERS})"
    return tok


def substitute(argv: list[str], env: dict[str, str]) -> list[str]:
    """Fill the placeholders and expand globs as the shell would (a glob must match something)."""
    out: list[str] = []
    for tok in argv:
        tok = fill(tok, env)
        if "*" in tok:
            matches = sorted(glob.glob(tok))
            assert matches, f"glob {tok!r} matches nothing in the test tree"
            out.extend(matches)
        else:
            out.append(tok)
    return out


def mpft_args(argv: list[str]) -> list[str] | None:
    """The arguments after ``mpft`` (``mpft ...`` or ``torchrun ... -m mpft ...``), else None."""
    if argv and argv[0] == "mpft":
        return argv[1:]
    for i in range(len(argv) - 1):
        if argv[i] == "-m" and argv[i + 1] == "mpft":
            return argv[i + 2:]
    return None


def with_overrides(args: list[str], overrides: dict[str, str]) -> list[str]:
    """Replace each overridden option's value, appending the option where the command lacks it."""
    args = list(args)
    for opt, value in overrides.items():
        if opt in args:
            args[args.index(opt) + 1] = value
        else:
            args += [opt, value]
    return args


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# Tiny datasets
# --------------------------------------------------------------------------------------------------


def _image(path: Path, fake: bool, seed: int, size: int = 24) -> None:
    """Generated: noise, saved as PNG; real: a smooth gradient, saved as JPEG (as in GenImage)."""
    rng = np.random.default_rng(seed)
    if fake:
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    else:
        ramp = np.linspace(0, 255, size, dtype=np.float32)
        arr = np.stack([np.add.outer(ramp, ramp[::-1]) / 2] * 3, -1)
        arr = np.clip(arr + rng.normal(0, 3, arr.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG" if fake else "JPEG", quality=90)


def _fill(folder: Path, fake: bool, n: int, seed: int) -> None:
    for i in range(n):
        _image(folder / f"img {i}.{'png' if fake else 'JPEG'}", fake, seed * 100 + i)


def genimage_as_downloaded(root: Path) -> Path:
    """GenImage's nested download layout, three generators, 2+2 train and 1+1 val images each."""
    for g, (model, gen) in enumerate(GENIMAGE_GENERATORS.items()):
        for s, (split, n) in enumerate((("train", 2), ("val", 1))):
            _fill(root / model / gen / split / "ai", True, n, seed=10 * g + 2 * s)
            _fill(root / model / gen / split / "nature", False, n, seed=10 * g + 2 * s + 1)
    return root


def ufd_as_downloaded(root: Path) -> Path:
    """UFD as downloaded: ProGAN train/val with object classes, two CNNDetection test sets
    (progan with classes, biggan without) and two diffusion sets with shared real pools."""
    seed = 0
    for top in ("progan_train", "progan_val", "test/progan"):
        for cls in UFD_CLASSES:
            for name, fake in (("0_real", False), ("1_fake", True)):
                _fill(root / top / cls / name, fake, 1, seed := seed + 1)
    _fill(root / "test" / "biggan" / "0_real", False, 1, seed := seed + 1)
    _fill(root / "test" / "biggan" / "1_fake", True, 1, seed := seed + 1)
    diff = root / "diffusion_datasets"
    for name, fake in (("guided/1_fake", True), ("ldm_200/1_fake", True),
                       ("imagenet/0_real", False), ("laion/0_real", False)):
        _fill(diff / name, fake, 1, seed := seed + 1)
    return root


# --------------------------------------------------------------------------------------------------
# Running blocks
# --------------------------------------------------------------------------------------------------


class DocRunner:
    """Runs the doc's tested blocks against one set of placeholder folders."""

    def __init__(self, tmp: Path, backbone: str) -> None:
        self.env = {
            "GENIMAGE": str(genimage_as_downloaded(tmp / "GenImage")),
            "UFD": str(ufd_as_downloaded(tmp / "UFD")),
            "OUT": str(tmp / "runs"),
        }
        self.backbone = backbone
        self.blocks = marked_blocks(doc_text())

    def _shrink(self, args: list[str]) -> list[str]:
        if args[0] == "train":
            return with_overrides(args, train_overrides(self.backbone))
        if args[0] == "eval":
            return with_overrides(args, EVAL_OVERRIDES)
        raise AssertionError(f"unexpected mpft command in a tested block: {args}")

    def mpft(self, name: str) -> list[list[str]]:
        """Run every command of block ``name`` in-process; returns the argument lists run."""
        ran = []
        for argv in commands(self.blocks[name]):
            args = mpft_args(argv)
            assert args is not None and argv[0] == "mpft", f"{name}: not an mpft command: {argv}"
            args = self._shrink(substitute(args, self.env))
            rc = main(args)
            assert rc == 0, f"{name}: `mpft {shlex.join(args)}` exited {rc}"
            ran.append(args)
        return ran

    def bash(self, name: str) -> str:
        """Run block ``name`` with bash (``python`` resolving to this interpreter); returns stdout."""
        bindir = Path(self.env["OUT"]).parent / "bin"
        bindir.mkdir(exist_ok=True)
        if not (bindir / "python").exists():
            (bindir / "python").symlink_to(sys.executable)
        env = dict(os.environ, **self.env, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
        proc = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", self.blocks[name]],
            capture_output=True, text=True, env=env, timeout=60,
        )
        assert proc.returncode == 0, f"{name}: bash exited {proc.returncode}: {proc.stderr[-2000:]}"
        return proc.stdout

    def torchrun(self, name: str, nproc: int = 2) -> None:
        """Run block ``name``'s torchrun commands with ``nproc`` CPU processes."""
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        for argv in commands(self.blocks[name]):
            assert argv[0] == "torchrun", f"{name}: not a torchrun command: {argv}"
            args = mpft_args(argv)
            assert args is not None, f"{name}: torchrun without -m mpft: {argv}"
            launcher = argv[1: len(argv) - len(args) - 2]
            launcher = with_overrides(launcher, {"--nproc-per-node": str(nproc)})
            cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "mpft",
                   *self._shrink(substitute(args, self.env))]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
            assert proc.returncode == 0, f"{name}: {shlex.join(cmd)} exited {proc.returncode}: {proc.stderr[-3000:]}"

    def out(self, *parts: str) -> Path:
        return Path(self.env["OUT"], *parts)

    def arg_after(self, args: list[str], opt: str) -> str:
        return args[args.index(opt) + 1]


def _metrics(report_dir: Path) -> dict:
    return json.loads((report_dir / "metrics.json").read_text(encoding="utf-8"))


def _clean_rows(report_dir: Path) -> dict[str, dict]:
    conds = _metrics(report_dir)["conditions"]
    return next(c for c in conds if c["name"] == "clean")["rows"]


def _training_settings(run_dir: Path) -> dict:
    return json.loads((run_dir / "best" / "config.json").read_text(encoding="utf-8"))["training"]["settings"]


def check_genimage_train(runner: DocRunner, ran: list[list[str]], tune: str) -> Path:
    """The run directory exists with both checkpoints and the doc's method settings."""
    (args,) = ran
    run = Path(runner.arg_after(args, "--out"))
    assert (run / "best" / "config.json").is_file() and (run / "last" / "config.json").is_file()
    settings = _training_settings(run)
    assert settings["backbone"] == runner.backbone
    assert settings["tune"]["strategy"] == tune
    # the masking settings come from the doc, not from the test's overrides
    assert (settings["mask"]["strategy"], settings["mask"]["ratio"]) == ("tam", 0.5)
    assert settings["shots"] == 4
    return run


def check_genimage_eval(runner: DocRunner, ran: list[list[str]]) -> None:
    (args,) = ran
    rows = _clean_rows(Path(runner.arg_after(args, "--out")))
    gens = set(GENIMAGE_GENERATORS.values())
    # generator rows are named after the imagenet_* folders; their val/ split (1+1 images) is used
    assert set(rows) == gens | {"mean", "overall"}
    for g in gens:
        assert (rows[g]["n_real"], rows[g]["n_fake"]) == (1, 1), g
    assert rows["mean"]["acc"] == pytest.approx(np.mean([rows[g]["acc"] for g in gens]))


def check_ufd(runner: DocRunner, train_ran: list[list[str]], eval_ran: list[list[str]]) -> None:
    (targs,) = train_ran
    run = Path(runner.arg_after(targs, "--out"))
    cfg = json.loads((run / "best" / "config.json").read_text(encoding="utf-8"))
    # both object classes trained, the class named "train" included (it is no split folder)
    assert set(cfg["training"]["n_train"]["generators"]) == set(UFD_CLASSES)
    assert cfg["training"]["settings"]["backbone"] == runner.backbone
    (eargs,) = eval_ran
    rows = _clean_rows(Path(runner.arg_after(eargs, "--out")))
    assert set(rows) == {"progan", "biggan", "guided", "ldm_200", "mean", "overall"}
    sets = ("progan", "biggan", "guided", "ldm_200")
    for s in sets:
        assert (rows[s]["n_real"], rows[s]["n_fake"]) == (1, 1), s
        assert 0.0 <= rows[s]["ap"] <= 1.0
    assert rows["mean"]["ap"] == pytest.approx(np.mean([rows[s]["ap"] for s in sets]))


# --------------------------------------------------------------------------------------------------
# Fast: the doc itself
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def wide_help(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Callable[[str], str]:
    """``mpft <command> --help`` output, rendered wide enough that no option name is cut."""
    monkeypatch.setenv("COLUMNS", "300")

    def get(command: str) -> str:
        capsys.readouterr()
        assert main([*command.split(), "--help"]) == 0
        return capsys.readouterr().out

    return get


def test_doc_has_every_tested_block_with_placeholders() -> None:
    blocks = marked_blocks(doc_text())
    assert set(blocks) == set(EXPECTED_BLOCKS), "a tested block was added, renamed or removed"
    env = {p: f"/placeholder/{p.lower()}" for p in PLACEHOLDERS}
    for name, body in blocks.items():
        assert _PLACEHOLDER_RE.search(body), f"{name}: uses none of the placeholders {PLACEHOLDERS}"
        if EXPECTED_BLOCKS[name] != "bash":  # bash blocks set their own loop variables
            for argv in commands(body):
                for tok in argv:
                    fill(tok, env)  # no other shell variable may slip in
        kinds = {("torchrun" if argv[0] == "torchrun" else "mpft") for argv in commands(body)}
        if EXPECTED_BLOCKS[name] != "bash":
            assert kinds == {EXPECTED_BLOCKS[name]}, f"{name}: commands of kinds {kinds}"


def test_every_documented_option_exists(wide_help: Callable[[str], str]) -> None:
    helps = {cmd: wide_help(cmd) for cmd in ("train", "eval")}
    known = {cmd: set(re.findall(r"--[a-z][a-z0-9-]*", text)) for cmd, text in helps.items()}
    checked = 0
    for body in bash_blocks(doc_text()):
        for argv in commands(body):
            args = mpft_args(argv)
            if not args:
                continue
            if args[0] in known:
                for tok in args[1:]:
                    if tok.startswith("--"):
                        assert tok.split("=")[0] in known[args[0]], f"`mpft {args[0]}` has no option {tok}"
                        checked += 1
            else:  # e.g. `mpft backbone info ...`: the subcommand must exist
                assert main([*args[:2], "--help"]) == 0, f"no command `mpft {shlex.join(args[:2])}`"
    assert checked > 50
    # the test's own overrides must be real options too, or they would test nothing
    assert set(train_overrides("random:tiny")) <= known["train"]
    assert set(EVAL_OVERRIDES) <= known["eval"]


def test_doc_lists_the_benchmarks_generators() -> None:
    text = doc_text()
    for gen in GENIMAGE_ALL:
        assert re.search(rf"^\| [^|]*`{gen}`", text, re.M), f"GenImage generator {gen} missing from a table"
    table_sets = re.findall(r"^\| ([a-z0-9_]+) \| n/a", text, re.M)
    assert tuple(table_sets) == UFD_SETS
    for s in UFD_SETS[11:]:  # the diffusion sets are linked in by the preparation step
        assert s in marked_blocks(text)["ufd-prepare"]
    assert "| **mean** | **98.2** |" in text and "| **mean** | **94.6** |" in text


def test_parsing_helpers() -> None:
    body = '# tested: x\nmpft eval "$OUT/r" \\\n    "$GENIMAGE"/*/a_* --out "${OUT}/e"  # trailing\n'
    (argv,) = commands(body)
    assert argv[:3] == ["mpft", "eval", "$OUT/r"] and argv[-2:] == ["--out", "${OUT}/e"]
    assert substitute(["${OUT}/e"], {"OUT": "/o"}) == ["/o/e"]
    with pytest.raises(AssertionError, match="unknown shell variable"):
        fill("$OUTSIDE/x", {"OUT": "/o"})
    assert with_overrides(["train", "d", "--shots", "9"], {"--shots": "4", "--epochs": "1"}) == [
        "train", "d", "--shots", "4", "--epochs", "1"]
    assert mpft_args(["torchrun", "--standalone", "-m", "mpft", "eval", "r"]) == ["eval", "r"]


# --------------------------------------------------------------------------------------------------
# Fast: every tested block on random:tiny
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocRunner]:
    yield DocRunner(tmp_path_factory.mktemp("paper-tiny"), "random:tiny")


@pytest.fixture(scope="module")
def tiny_genimage_run(tiny: DocRunner) -> Path:
    return check_genimage_train(tiny, tiny.mpft("genimage-train"), "last-k")


def test_genimage_train_and_eval(tiny: DocRunner, tiny_genimage_run: Path) -> None:
    check_genimage_eval(tiny, tiny.mpft("genimage-eval"))


def test_genimage_lora_variant(tiny: DocRunner) -> None:
    run = check_genimage_train(tiny, tiny.mpft("genimage-train-lora"), "lora")
    assert _training_settings(run)["tune"]["lora_rank"] == 8


def test_genimage_robustness_and_format(tiny: DocRunner, tiny_genimage_run: Path) -> None:
    degraded, fmt = tiny.mpft("genimage-robustness")
    names = [c["name"] for c in _metrics(Path(tiny.arg_after(degraded, "--out")))["conditions"]]
    assert names[0] == "clean" and len(names) == 7  # clean + the six degraded conditions
    assert {"jpeg:30", "blur:5", "lowres:64"} <= set(names)
    report_dir = Path(tiny.arg_after(fmt, "--out"))
    assert [c["name"] for c in _metrics(report_dir)["conditions"]] == ["clean", "normalize:jpeg:95"]
    assert "Format normalisation" in (report_dir / "report.md").read_text(encoding="utf-8")


def test_ufd_prepare_train_eval_and_print(tiny: DocRunner) -> None:
    ufd = Path(tiny.env["UFD"])
    out = tiny.bash("ufd-prepare")
    assert "skipping ldm_100" in out and "skipping guided" not in out
    assert (ufd / "test" / "guided" / "0_real").resolve() == (ufd / "diffusion_datasets" / "imagenet" / "0_real")
    assert (ufd / "test" / "ldm_200" / "0_real").resolve() == (ufd / "diffusion_datasets" / "laion" / "0_real")
    for top in ("progan_train", "progan_val", "test/progan"):  # the object class keeps its name
        assert (ufd / top / "train" / "1_fake").is_dir() and not (ufd / top / "train_class").exists()
    tiny.bash("ufd-prepare")  # running it twice changes nothing
    assert not (ufd / "test" / "guided" / "1_fake" / "1_fake").exists()

    check_ufd(tiny, tiny.mpft("ufd-train"), tiny.mpft("ufd-eval"))

    printed = dict(line.split(" ", 1) for line in tiny.bash("print-results").splitlines())
    assert set(printed) == {"progan", "biggan", "guided", "ldm_200", "mean", "overall"}
    rows = _clean_rows(tiny.out("eval-ufd"))
    acc, ap = (float(v) for v in printed["mean"].split())
    assert (acc, ap) == (round(100 * rows["mean"]["acc"], 1), round(100 * rows["mean"]["ap"], 1))


def test_cnndetection_train_class_is_not_a_split(tmp_path: Path) -> None:
    from mpft.data.layouts import discover, has_splits
    from mpft.evaluation.inputs import eval_split

    ufd = ufd_as_downloaded(tmp_path / "UFD")
    assert not has_splits(ufd / "progan_train")
    samples = discover(ufd / "progan_train", layout="ufd")
    assert {s.generator for s in samples} == set(UFD_CLASSES)
    assert eval_split(ufd / "test") is None
    assert {s.generator for s in discover(ufd / "test", layout="ufd")} == {"progan", "biggan"}


# --------------------------------------------------------------------------------------------------
# Slow: the doc's ViT-L/14 shape, and torchrun
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def l14(tmp_path_factory: pytest.TempPathFactory) -> DocRunner:
    return DocRunner(tmp_path_factory.mktemp("paper-l14"), "random:l14")


@pytest.mark.slow
def test_l14_genimage_train_and_eval(l14: DocRunner) -> None:
    check_genimage_train(l14, l14.mpft("genimage-train"), "last-k")
    check_genimage_eval(l14, l14.mpft("genimage-eval"))


@pytest.mark.slow
def test_l14_ufd_prepare_train_and_eval(l14: DocRunner) -> None:
    l14.bash("ufd-prepare")
    check_ufd(l14, l14.mpft("ufd-train"), l14.mpft("ufd-eval"))


@pytest.mark.slow
def test_torchrun_blocks(tmp_path: Path) -> None:
    runner = DocRunner(tmp_path, "random:tiny")
    runner.torchrun("genimage-torchrun")
    check_genimage_eval(runner, [["eval", "--out", str(runner.out("eval-genimage-ddp"))]])
    assert (runner.out("genimage-sd14-ddp") / "best" / "config.json").is_file()
    runner.bash("ufd-prepare")
    runner.torchrun("ufd-torchrun")
    rows = _clean_rows(runner.out("eval-ufd-ddp"))
    assert set(rows) == {"progan", "biggan", "guided", "ldm_200", "mean", "overall"}
