"""EvalSettings holds the evaluation defaults once; evaluate() and ``mpft eval`` must not drift from them."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from mpft.cli.eval import eval_cmd
from mpft.errors import ConfigError
from mpft.evaluation import evaluate
from mpft.evaluation.settings import DEFAULT_SWEEP_N_BOOT, NORMALIZE_PREFIX, EvalSettings, plan_conditions


def _setting_defaults() -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(EvalSettings)}


def test_evaluate_takes_settings_and_no_defaults_of_its_own() -> None:
    params = inspect.signature(evaluate).parameters
    assert params["settings"].default is None  # None: EvalSettings()
    assert not set(params) & set(_setting_defaults()), "evaluate() restates an EvalSettings default"
    base = EvalSettings(n_boot=7, perturb=("jpeg:75",))
    assert EvalSettings.with_options(base, device="cpu") == EvalSettings(n_boot=7, perturb=("jpeg:75",), device="cpu")
    assert EvalSettings.with_options(None, perturb=["blur:1"]).perturb == ("blur:1",)
    with pytest.raises(ConfigError, match="unknown options \\['nboot'\\]"):
        EvalSettings.with_options(None, nboot=3)


def test_cli_defaults_are_the_settings_defaults() -> None:
    params = inspect.signature(eval_cmd).parameters
    for name, default in _setting_defaults().items():
        got = params[name].default.default  # typer.Option(default, ...)
        assert (tuple(got) if name == "perturb" else got) == default, name


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"perturb": ("jpg:75",)}, "bad perturbation spec"),
        ({"normalize_format": "gif"}, "bad re-encode spec"),
        ({"target_fpr": 1.5}, "--target-fpr"),
        ({"limit": 0}, "--limit"),
        ({"n_boot": -1}, "--n-boot"),
        ({"sweep_n_boot": -1}, "--sweep-n-boot"),
        ({"batch_size": 0}, "--batch-size"),
        ({"mask": "blur:0.5"}, "--mask"),
        ({"precision": "int8", "device": "cuda"}, "int8"),
    ],
)
def test_bad_settings_fail_at_construction(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EvalSettings(**kw)


def test_condition_plans() -> None:
    s = EvalSettings(perturb=("jpeg:95,75", "blur:1"), normalize_format="png", n_boot=500)
    plans = plan_conditions(s)
    assert [p.name for p in plans] == ["clean", "jpeg:95", "jpeg:75", "blur:1", f"{NORMALIZE_PREFIX}png"]
    assert [p.n_boot for p in plans] == [500] + [DEFAULT_SWEEP_N_BOOT] * 4
    assert plan_conditions(EvalSettings(n_boot=50))[0].n_boot == 50
    assert EvalSettings(n_boot=50).sweep_resamples == 50  # never more than the clean condition's
    assert EvalSettings(n_boot=50, sweep_n_boot=7).sweep_resamples == 7
