"""The public API names of the package stay the functions they name, whatever was imported before."""

from __future__ import annotations


def test_train_and_evaluate_are_functions_after_their_packages_are_imported():
    # a subpackage named like a public function replaces it on import (mpft.evaluate used to)
    import mpft
    import mpft.evaluation.metrics
    import mpft.training  # noqa: F401
    from mpft import Detector, evaluate, load_backbone, train

    assert callable(evaluate) and evaluate.__module__ == "mpft.evaluation.runner", evaluate
    assert train.__module__ == "mpft.training.loop", train
    assert mpft.evaluate is evaluate and mpft.train is train
    assert Detector.__module__ == "mpft.detector" and load_backbone.__module__ == "mpft.backbones.registry"
