"""The checks of tools/gpu_check.py give a verdict that follows what they check: each passes on this CPU
and fails on a deliberately broken input, and a missed speed or precision target is a warning."""
import functools
import io

import pytest
import torch

from tools import gpu_check_costs, gpu_check_promises
from tools.gpu_check_setup import Check, Sizes

TINY = Sizes(0.125, 96, 64, 32)


@pytest.fixture
def check(tmp_path) -> Check:
    """A self-check on this CPU at tiny sizes, its printed lines kept."""
    check = Check(torch.device("cpu"), TINY, tmp_path)
    check.out = io.StringIO()
    return check


def verdicts(check: Check, name: str) -> list[str]:
    return [status for status, line_name, _ in check.lines if line_name == name]


# --------------------------------------------------------------------------------------------------
# compile


@pytest.fixture
def compile_without_a_compiler(monkeypatch):
    """torch.compile with aot_eager: graphs are captured as with the default backend, compiled by none."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))


@pytest.mark.e2e
def test_the_compile_check_passes_where_the_batch_dimension_is_dynamic(check, compile_without_a_compiler):
    gpu_check_costs.compile_graphs(check)
    assert verdicts(check, "compile") == ["PASS"], check.lines
    assert "2 graphs compiled" in check.lines[-1][2]


@pytest.mark.e2e
def test_the_compile_check_fails_where_each_batch_size_compiles_again(check, compile_without_a_compiler, monkeypatch):
    monkeypatch.setattr(torch._dynamo, "maybe_mark_dynamic", lambda tensor, dim: None)
    gpu_check_costs.compile_graphs(check)
    assert verdicts(check, "compile") == ["FAIL"], check.lines
