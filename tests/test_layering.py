"""Layering: the env and everything below it (and Ray-free evaluation) load neither Ray nor torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

RAY_FREE = (
    "marl_bft_rllib.env",
    "marl_bft_rllib.events",
    "marl_bft_rllib.bft",
    "marl_bft_rllib.stl",
    "marl_bft_rllib.evaluation",
    "marl_bft_rllib.scenarios",
)


@pytest.mark.parametrize("module", RAY_FREE)
def test_lower_layers_import_neither_ray_nor_torch(module):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{module} loads {out.stdout.strip()}"


def test_the_check_bites_on_the_rllib_layer():
    code = "import sys, marl_bft_rllib.rllib; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
