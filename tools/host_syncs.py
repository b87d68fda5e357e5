"""Count the operations that make the host wait for a GPU, on any device.

    with HostSynchronizations(device) as syncs:
        ...                      # one epoch, say
    print(syncs.count, syncs.where)

A GPU runs ahead of the Python code that queues its work until the host needs a result: reading a
value (`item`, `tolist`, `if tensor:`), copying to the host, copying from pageable host memory
without `non_blocking`, or an operation whose output size depends on the values (`nonzero`, boolean
masks, `unique`, `bincount`, `repeat_interleave` without `output_size`). Each of those makes the host wait for everything queued before it. This mode sees
every operation torch dispatches and counts those of tensors on `device`, so that a CPU run counts
what the same code would make a GPU wait for, and a run on fake CUDA tensors counts the copies too.
It cannot see waits inside kernels or stream synchronizations, nor tell a `non_blocking` copy from
unpinned memory (which waits) from one from pinned memory: on a GPU, `tools/gpu_check.py` also runs
an epoch under CUDA's own sync debug mode, which sees those.
"""
from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# Operations that read values on the host, or size their output by them.
VALUE_DEPENDENT = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten._unique2, aten.unique_dim,
                   aten.unique_consecutive, aten.unique_dim_consecutive, aten.equal, aten.is_nonzero,
                   aten.bincount}
# Operations whose output size depends on the values unless it is given (`output_size`).
SIZED_BY_VALUES_UNLESS_TOLD = {aten.repeat_interleave}
MASK_INDEXED = {aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_}
# Tensor methods that read a CPU tensor's values without dispatching an operation (on a GPU they copy).
HOST_READERS = ("tolist", "numpy")


def on(tensor, device: torch.device) -> bool:
    """Whether `tensor` is a tensor on `device` (a device without an index matching every index)."""
    return (isinstance(tensor, torch.Tensor) and tensor.device.type == device.type
            and device.index in (None, tensor.device.index))


def masked(indices) -> bool:
    """Whether an index list holds a boolean mask, which a GPU first turns into positions (a `nonzero`)."""
    return any(isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8) for index in indices or ())


class HostSynchronizations(TorchDispatchMode):
    """Counts, by operation, what makes the host wait for `device` (see the module's docstring)."""

    def __init__(self, device: torch.device | str):
        super().__init__()
        self.device = torch.device(device)
        self.where: collections.Counter[str] = collections.Counter()

    @property
    def count(self) -> int:
        return sum(self.where.values())

    def __enter__(self) -> HostSynchronizations:
        """Also count `tolist` and `numpy`, which read a CPU tensor's values without dispatching."""
        self.readers = {name: getattr(torch.Tensor, name) for name in HOST_READERS}
        for name, read in self.readers.items():
            setattr(torch.Tensor, name, self.counted(name, read))
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        for name, read in self.readers.items():
            setattr(torch.Tensor, name, read)
        super().__exit__(*exc)

    def counted(self, name: str, read):
        """`read`, counting the reads of tensors on the device where nothing else would see them."""
        def reading(tensor: torch.Tensor, *args, **kwargs):
            if self.device.type == "cpu" and on(tensor, self.device):
                self.where[name] += 1
            return read(tensor, *args, **kwargs)
        return reading

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = self.waits(func, args, kwargs)
        if reason:
            self.where[reason] += 1
        return func(*args, **kwargs)

    def waits(self, func, args, kwargs) -> str | None:
        """Why `func(*args, **kwargs)` makes the host wait for the device, or None."""
        packet = func.overloadpacket
        source = args[0] if args else None
        if packet in VALUE_DEPENDENT and on(source, self.device):
            return packet.__name__
        if packet in SIZED_BY_VALUES_UNLESS_TOLD and on(source, self.device) and kwargs.get("output_size") is None:
            return f"{packet.__name__} without output_size"
        if packet in MASK_INDEXED and on(source, self.device) and masked(args[1] if len(args) > 1 else ()):
            return f"{packet.__name__} with a boolean mask"
        if packet is aten._to_copy:
            return self.copy_waits(source, kwargs.get("device", getattr(source, "device", None)),
                                   kwargs.get("non_blocking", False))
        if packet is aten.copy_ and len(args) > 1:
            return self.copy_waits(args[1], args[0].device, args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        return None

    def copy_waits(self, source, target: torch.device | None, non_blocking: bool) -> str | None:
        """A copy to the host from `device`, or a blocking copy to `device` from the host."""
        if not isinstance(source, torch.Tensor) or target is None or self.device.type == "cpu":
            return None
        target = torch.device(target)
        if on(source, self.device) and target.type == "cpu":
            return "copy to the host"
        if source.device.type == "cpu" and target.type == self.device.type and not non_blocking:
            return "blocking copy to the device"
        return None
