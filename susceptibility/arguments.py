"""Checks of what a caller hands the probe's entry points (`Susceptibility.measure` and
`load_state_dict`): each refuses a wrong argument with one line that names it, instead of a raw
error from deep inside torch or, worse, a silently meaningless r.

Part of the installable metric (see `susceptibility`), so it needs nothing but torch and numpy.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def model_placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of the model's parameters: where the probe batch goes, and the precision
    it is probed in (its own, for a model stored in bf16 or fp16). A model without parameters is
    refused, since no optimizer step can change it."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    first = next(model.parameters(), None)
    if first is None:
        raise ValueError(f"model ({type(model).__name__}) has no parameters, so an optimizer step cannot "
                         f"change it; pass the network being trained")
    return first.device, first.dtype


def check_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Refuse an optimizer that updates none of the model's parameters: its step would leave the
    model as it is, and r would be 0 whatever the model has memorized."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    own = {id(parameter) for parameter in model.parameters()}
    if not any(id(parameter) in own for group in optimizer.param_groups for parameter in group["params"]):
        raise ValueError("optimizer updates none of model's parameters, so its step cannot change the model "
                         "(r would be 0); pass the optimizer that trains this model")


def network_input(images: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The probe batch on the model's device; float images in the model's own precision, so that a
    model stored in bf16 or fp16 takes the batch that the probe scaled from uint8 to fp32."""
    return images.to(device=device, dtype=dtype) if images.is_floating_point() else images.to(device)


def state_problem(state: dict, keys_of_format: dict[int, tuple[str, ...]]) -> str | None:
    """What keeps the dict `state` from being a probe state of one of the formats in `keys_of_format` (the
    keys each must hold), as the words after "state"; None if nothing."""
    if not state:
        return "is empty"
    if "format" not in state:
        return "lacks format"
    if state["format"] not in keys_of_format:
        return f"has format {state.get('format')!r}, not one of {sorted(keys_of_format)}"
    missing = [key for key in keys_of_format[state["format"]] if key not in state]
    if missing:
        return f"lacks {', '.join(missing)}"
    return labels_problem(state["labels"]) or losses_problem(state)


def labels_problem(labels) -> str | None:
    """What keeps `labels` from being the probe set's random labels, one integer per image."""
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        return f"holds labels of type {type(labels).__name__}, not a tensor"
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex():
        return (f"holds labels of dtype {labels.dtype} and shape {tuple(labels.shape)}, not one integer "
                f"per image")
    return None


def losses_problem(state: dict) -> str | None:
    """What keeps the state's phi_before and phi_after from being losses of equally many epochs:
    one number per epoch (format 1) or one per batch of each epoch (format 2)."""
    shapes = set()
    for key in ("phi_before", "phi_after"):
        try:
            shapes.add(np.asarray(state[key], dtype=float).shape)
        except (TypeError, ValueError):
            return f"holds a {key} that is not a list of losses"
    epochs = len(state["phi_before"])
    expected = (epochs,) if state["format"] == 1 else (epochs, state["batches_per_epoch"])
    if (epochs and shapes != {expected}) or len(shapes) > 1:
        return (f"holds phi_before and phi_after of shapes {sorted(shapes)}, not {expected} "
                f"(epochs{'' if state['format'] == 1 else ', batches per epoch'})")
    return None
