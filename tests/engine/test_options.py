"""The engine's options: checks, clear refusals, and why they are no settings (no Ray started)."""

from __future__ import annotations

import sys

import pytest

from bpo.config import load_recipe, result_settings
from bpo.engine import EngineOptions
from bpo.errors import ConfigError


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (EngineOptions(engine="spark"), "unknown engine 'spark'; valid: local, ray"),
        (EngineOptions(engine="ray", replicas=0), "--replicas 0: need at least 1"),
        (EngineOptions(engine="ray", gpus_per_replica=-1), "--gpus-per-replica -1"),
        (EngineOptions(engine="ray", ray_address=""), "--ray-address is empty"),
    ],
)
def test_options_that_cannot_run_are_refused(options: EngineOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        options.check()


def test_without_ray_the_refusal_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'bpo\[ray\]'"):
        EngineOptions(engine="ray").check()
    EngineOptions().check()  # the local engine needs no Ray


def test_a_recipe_chooses_the_engine_without_it_becoming_a_setting() -> None:
    overrides = ["bootstrap.engine=ray", "bootstrap.replicas=4", "bootstrap.gpus_per_replica=1"]
    recipe = load_recipe(None, [*overrides, "bootstrap.ray_address=auto"])
    assert recipe.bootstrap.engine_options() == EngineOptions("ray", 4, 1.0, "auto")
    settings = result_settings(recipe)
    assert "bootstrap.seed" in settings
    for key in ("engine", "replicas", "gpus_per_replica", "ray_address"):
        assert f"bootstrap.{key}" not in settings  # a resumed run may change them
    with pytest.raises(ConfigError, match=r"bootstrap\.engine"):
        load_recipe(None, ["bootstrap.engine=spark"])
