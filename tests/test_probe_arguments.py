"""The `Susceptibility` API refuses wrong arguments in one line that names them (a ValueError or
TypeError), and probes models stored in bf16 or fp16 in their own precision."""
import math

import pytest
import torch
from torch import nn

from susceptibility import Susceptibility

IMAGES = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def small_net(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).to(dtype)


def probe(**settings) -> Susceptibility:
    return Susceptibility(IMAGES, 10, batch_size=8, **settings)


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_is_probed_in_its_own_precision_from_uint8_images(dtype):
    model = small_net(dtype)
    weights = [p.detach().clone() for p in model.parameters()]
    r = probe().measure(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert math.isfinite(r) and r != 0
    assert all(p.dtype == dtype and torch.equal(p, w) for p, w in zip(model.parameters(), weights))


def test_an_optimizer_of_another_model_is_refused_instead_of_giving_r_0():
    model, other = small_net(), small_net()
    with pytest.raises(ValueError) as error:
        probe().measure(model, torch.optim.SGD(other.parameters(), lr=0.1))
    assert "optimizer updates none of model's parameters" in one_line(error)


def test_an_optimizer_that_shares_parameters_with_the_model_is_accepted():
    model, extra = small_net(), nn.Parameter(torch.zeros(3))
    assert math.isfinite(probe().measure(model, torch.optim.SGD([*model.parameters(), extra], lr=0.1)))


def test_a_model_without_parameters_is_refused():
    with pytest.raises(ValueError) as error:
        probe().measure(nn.Flatten(), torch.optim.SGD(small_net().parameters(), lr=0.1))
    assert "model (Flatten) has no parameters" in one_line(error)


def test_arguments_of_the_wrong_type_are_refused_by_name():
    model = small_net()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        probe().measure("net", torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer, got list"):
        probe().measure(model, list(model.parameters()))


@pytest.mark.parametrize("seed", [-1, 2 ** 64, 2 ** 80])
def test_a_seed_torch_cannot_take_is_refused(seed):
    with pytest.raises(ValueError) as error:
        probe(seed=seed)
    assert one_line(error) == f"seed must be an integer from 0 to 2**64 - 1, got {seed}"


def test_the_largest_seed_works():
    model = small_net()
    assert math.isfinite(probe(seed=2 ** 64 - 1).measure(model, torch.optim.SGD(model.parameters(), lr=0.1)))


def measured_state() -> dict:
    zeta, model = probe(), small_net()
    zeta.measure(model, torch.optim.SGD(model.parameters(), lr=0.1))
    return zeta.state_dict()


@pytest.mark.parametrize("key", ["format", "seed", "labels", "batches_per_epoch", "phi_before", "phi_after"])
def test_a_partial_state_is_refused_and_leaves_the_probe_as_it_was(key):
    state, zeta = measured_state(), probe()
    zeta.load_state_dict(state)
    with pytest.raises(ValueError) as error:
        zeta.load_state_dict({k: v for k, v in state.items() if k != key})
    assert one_line(error).startswith(f"state lacks {key}, so it is not a Susceptibility state_dict")
    assert zeta.state_dict()["phi_before"] == state["phi_before"]


@pytest.mark.parametrize("spoil, message", [
    (lambda state: {}, "state is empty"),
    (lambda state: {**state, "format": 7}, "state has format 7, not one of [1, 2]"),
    (lambda state: {**state, "labels": None}, "state holds labels of type NoneType"),
    (lambda state: {**state, "labels": state["labels"].float()}, "state holds labels of dtype torch.float32"),
    (lambda state: {**state, "phi_before": [["x"]]}, "state holds a phi_before that is not a list of losses"),
    (lambda state: {**state, "phi_before": [1.0]}, "state holds phi_before and phi_after of shapes"),
])
def test_a_malformed_state_is_refused_in_one_line(spoil, message):
    with pytest.raises(ValueError) as error:
        probe().load_state_dict(spoil(measured_state()))
    assert one_line(error).startswith(message)


def test_a_state_that_is_not_a_dict_is_a_type_error():
    with pytest.raises(TypeError, match="state must be the dict that state_dict\\(\\) returned, got NoneType"):
        probe().load_state_dict(None)


def test_a_format_1_state_still_loads():
    zeta = probe()
    zeta.load_state_dict({"format": 1, "seed": 0, "labels": zeta.state_dict()["labels"],
                          "phi_before": [2.5, 2.0], "phi_after": [2.25, 1.5]})
    assert zeta.zetas() == pytest.approx([math.nan, 0.5], nan_ok=True)
