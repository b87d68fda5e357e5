"""The Susceptibility API in one's own loop: the numbers experiments.py records, no trace on training
with any optimizer, fp32 under autocast, checkpoint round trips, every input form, and bad input."""
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from runner import batching
from runner import checkpoints
import datasets
from runner import noisy_data
import experiments
from runner import records
import susceptibility
from conftest import (
    one_step_by_hand,
    as_format_1,
    assert_bit_identical,
    built_run,
    interrupt_at_epoch,
    make_batches,
    record_path,
    run_args,
    same_record,
    small_dropout_net,
)
from models import create_model
from susceptibility import Susceptibility

OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.05),
    "rmsprop": lambda params: torch.optim.RMSprop(params, lr=0.01, momentum=0.5),
}


def synthetic_set(count: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images (count, 3, 32, 32) and labels of 10 classes."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, 32, 32, generator=generator), torch.randint(0, 10, (count,), generator=generator)


def nan_equal(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


# --------------------------------------------------------------------------------------------------
# The same numbers as experiments.py


@pytest.mark.e2e
def test_api_in_a_user_style_loop_gives_the_phi_values_experiments_records(synthetic_cifar10, tmp_path):
    epochs, seed, batch_size = 3, 3, 32  # as in run_args; EfficientNet has dropout and drop-connect
    argv = run_args(synthetic_cifar10, tmp_path, "--model", "efficientnet", "--numsamples", "200",
                    "--no-channels-last", epochs=epochs)  # the hand-written loop keeps the plain layout
    assert experiments.main(argv) == 0
    recorded = records.read_record(tmp_path / "results" / f"t_efficientnet_{epochs}_0.05.csv").rows

    # A loop written by hand: the run's data, model, optimizer and schedule, ζ through the API.
    train, test = datasets.load_cifar(synthetic_cifar10)
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=200, corrupt_prob=0.5,
                                    probe_source="train", seed=seed)
    batches = batching.DeviceBatches(data, torch.device("cpu"), batch_size, 1000)
    torch.manual_seed(susceptibility.derive_seed(seed, "init"))
    model = create_model("efficientnet", 0.125, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    augment = lambda images: batching.normalize(batching.random_augment(images, torch.default_generator))
    zeta = Susceptibility(torch.as_tensor(data.images[data.probe.index]), num_classes=10,
                          batch_size=batch_size, seed=seed, augment=augment)
    for epoch in range(epochs):
        zeta.measure(model, optimizer)
        torch.manual_seed(susceptibility.derive_seed(seed, "train-dropout", epoch))
        model.train()
        for batch in batches.train_batches(susceptibility.torch_generator(seed, batches.device, "train", epoch)):
            loss = F.cross_entropy(model(batch.images), batch.assigned)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()

    assert zeta.phi_before == [row["phi_before"] for row in recorded]
    assert zeta.phi_after == [row["phi_after"] for row in recorded]
    assert nan_equal(zeta.zetas(), [row["susceptibility"] for row in recorded])


def test_each_epochs_probe_draws_from_the_streams_experiments_always_used(synthetic_cifar10):
    """Epoch k's batch comes from the generator of stream ("probe", k) and its dropout from
    ("probe-dropout", k), so records made before the API existed stay comparable."""
    batches = make_batches(synthetic_cifar10)
    zeta = Susceptibility.from_probe_batches(batches, seed=9, generator_device=batches.device)
    torch.manual_seed(0)
    model = small_dropout_net()
    optimizer = OPTIMIZERS["sgd"](model.parameters())
    for epoch in range(3):
        zeta.measure(model, optimizer)
        images, labels = batches.probe_batch(torch.Generator().manual_seed(
            susceptibility.derive_seed(9, "probe", epoch)))
        expected = one_step_by_hand(model, optimizer, images, labels,
                                    susceptibility.derive_seed(9, "probe-dropout", epoch))
        assert (zeta.phi_before[-1], zeta.phi_after[-1]) == expected


@pytest.mark.e2e
def test_experiments_resumes_a_checkpoint_written_without_the_probe_state(synthetic_cifar10, tmp_path,
                                                                          monkeypatch):
    whole = run_args(synthetic_cifar10, tmp_path / "whole", "--numsamples", "64", epochs=3)
    assert experiments.main(whole) == 0
    cut = run_args(synthetic_cifar10, tmp_path / "cut", "--numsamples", "64", epochs=3)
    interrupt_at_epoch(monkeypatch, 2)
    assert experiments.main(cut) == 130
    monkeypatch.undo()
    checkpoint = next((tmp_path / "cut" / "checkpoint").glob("*.pt"))
    state = checkpoints.load_checkpoint(checkpoint)
    assert len(state["probe"]["phi_before"]) == 2
    checkpoints.save_checkpoint(checkpoint, as_format_1(state, leave_out=("probe",)))
    assert experiments.main([*cut, "--resume"]) == 0
    assert same_record(record_path(tmp_path / "cut", epochs=3), record_path(tmp_path / "whole", epochs=3))


# --------------------------------------------------------------------------------------------------
# No trace on training


def train_one_pass(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                   labels: torch.Tensor) -> list[float]:
    """One shuffled pass in batches of 32, as a user's loop does it; returns the batch losses."""
    model.train()
    losses = []
    for batch in torch.randperm(len(images)).split(32):
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def train_loop(optimizer_name: str, epochs: int, with_probe: bool):
    """A user's loop: BatchNorm and dropout network, a step schedule, the global RNG seeded once."""
    images, labels = synthetic_set()
    torch.manual_seed(0)
    model = small_dropout_net()
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    zeta = Susceptibility(synthetic_set(64, seed=1)[0], num_classes=10, batch_size=32, seed=5)
    losses, rng_states = [], []
    for _ in range(epochs):
        if with_probe:
            zeta.measure(model, optimizer)
        losses += train_one_pass(model, optimizer, images, labels)
        scheduler.step()
        rng_states.append(torch.get_rng_state())
    return model, optimizer, losses, rng_states, zeta


@pytest.mark.e2e
@pytest.mark.parametrize("optimizer_name", sorted(OPTIMIZERS))
def test_training_with_and_without_the_probe_is_bit_identical(optimizer_name):
    probed, probed_opt, probed_losses, probed_rng, zeta = train_loop(optimizer_name, 3, with_probe=True)
    plain, plain_opt, plain_losses, plain_rng, _ = train_loop(optimizer_name, 3, with_probe=False)
    assert len(zeta.phi_before) == 3 and all(b != a for b, a in zip(zeta.phi_before, zeta.phi_after))
    assert probed_losses == plain_losses
    assert all(torch.equal(a, b) for a, b in zip(probed_rng, plain_rng))  # the caller's random stream
    assert_bit_identical(probed.state_dict(), plain.state_dict())
    probed_state, plain_state = probed_opt.state_dict(), plain_opt.state_dict()
    assert probed_state["state"].keys() == plain_state["state"].keys()
    for key in probed_state["state"]:
        assert_bit_identical(probed_state["state"][key], plain_state["state"][key])
    assert probed_state["param_groups"] == plain_state["param_groups"]
    for p, q in zip(probed.parameters(), plain.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_measure_leaves_modes_and_gradients_as_they_were():
    torch.manual_seed(0)
    model = small_dropout_net()
    optimizer = OPTIMIZERS["adam"](model.parameters())
    images, labels = synthetic_set(32)
    F.cross_entropy(model(images), labels).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.eval()
    Susceptibility(images, num_classes=10, batch_size=16).measure(model, optimizer)
    assert not any(module.training for module in model.modules())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert optimizer.state == {}


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_the_optimizer_state_tensors_anyone_holds_are_left_as_they_were(optimizer_name):
    """An optimizer loaded from a checkpoint dictionary shares its state tensors with that dictionary:
    the probe restores their values in place, so the dictionary, and every optimizer loaded from it
    afterwards, sees the state as it was."""
    torch.manual_seed(0)
    model = small_dropout_net()
    images, labels = synthetic_set(32)
    trained = OPTIMIZERS[optimizer_name](model.parameters())
    F.cross_entropy(model(images), labels).backward()
    trained.step()
    checkpoint = {"optimizer": trained.state_dict()}
    held = [value for state in checkpoint["optimizer"]["state"].values() for value in state.values()
            if torch.is_tensor(value)]
    before = [value.clone() for value in held]
    drops = []
    for _ in range(3):
        optimizer = OPTIMIZERS[optimizer_name](model.parameters())
        optimizer.load_state_dict(checkpoint["optimizer"])
        drops.append(Susceptibility(images, num_classes=10, batch_size=16).measure(model, optimizer))
        assert all(torch.equal(value, original) for value, original in zip(held, before))
    assert drops[0] == drops[1] == drops[2] != 0


def test_uint8_images_without_augment_are_probed_as_floats_in_0_1():
    torch.manual_seed(0)
    model = small_dropout_net()
    optimizer = OPTIMIZERS["sgd"](model.parameters())
    pixels = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    as_stored = Susceptibility(pixels, num_classes=10, batch_size=16, seed=4).measure(model, optimizer)
    scaled = Susceptibility(pixels.float() / 255, num_classes=10, batch_size=16, seed=4).measure(model, optimizer)
    assert as_stored == scaled


def test_more_classes_than_the_model_has_outputs_is_one_clear_error():
    torch.manual_seed(0)
    model = small_dropout_net(num_classes=10)
    optimizer = OPTIMIZERS["sgd"](model.parameters())
    weights = [p.clone() for p in model.parameters()]
    images, _ = synthetic_set(64)
    with pytest.raises(ValueError, match="the model gives 10 class scores, but the probe's random labels are "
                                         "drawn from 20 classes; set num_classes"):
        Susceptibility(images, num_classes=20, batch_size=64, seed=1).measure(model, optimizer)
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights)) and optimizer.state == {}


def test_the_probe_steps_at_the_learning_rate_the_scheduler_set_now():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))  # no dropout: r is exactly 0 at lr 0
    optimizer = OPTIMIZERS["adam"](model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0 if epoch == 0 else 0.0)
    zeta = Susceptibility(synthetic_set(64)[0], num_classes=10, batch_size=32, seed=1)
    first = zeta.measure(model, optimizer)
    scheduler.step()
    assert first > 0 and zeta.measure(model, optimizer) == 0.0


# --------------------------------------------------------------------------------------------------
# Precision


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.e2e
def test_probe_under_autocast_still_measures_in_fp32():
    images = synthetic_set(64)[0]
    torch.manual_seed(0)
    model = create_model("resnet", 0.125)
    optimizer = OPTIMIZERS["sgd"](model.parameters())
    fp32 = Susceptibility(images, num_classes=10, batch_size=32, seed=2).measure(model, optimizer)
    with bf16_autocast():
        guarded = Susceptibility(images, num_classes=10, batch_size=32, seed=2).measure(model, optimizer)
        bf16 = Susceptibility(images, num_classes=10, batch_size=32, seed=2,
                              full_precision=False).measure(model, optimizer)
    assert guarded == pytest.approx(fp32, rel=1e-6, abs=1e-7)
    assert bf16 != pytest.approx(fp32, rel=1e-3)  # autocast does reach the probe when allowed


@pytest.mark.e2e
def test_experiments_amp_probe_runs_the_network_in_fp32(synthetic_cifar10, tmp_path):
    def built(*extra):
        return built_run(run_args(synthetic_cifar10, tmp_path, "--numsamples", "64", *extra))

    amp, plain = built("--amp"), built()
    assert amp.probe_network is not amp.network and plain.probe_network is plain.network
    images, labels = plain.batches.probe_batch(torch.Generator().manual_seed(0))
    logits = lambda network: network(images)
    assert torch.equal(logits(amp.probe_network), logits(plain.network))
    assert not torch.equal(logits(amp.network), logits(plain.network))  # the training pass is bf16


# --------------------------------------------------------------------------------------------------
# Checkpoints


def zeta_sequence(epochs: int, stop_after: int | None = None) -> list[float]:
    """ζ of a small loop, optionally saved after `stop_after` epochs and resumed in fresh objects."""
    images, labels = synthetic_set()
    unlabeled = synthetic_set(64, seed=1)[0]

    def fresh():
        torch.manual_seed(0)
        model = small_dropout_net()
        optimizer = OPTIMIZERS["sgd"](model.parameters())
        return model, optimizer, Susceptibility(unlabeled, num_classes=10, batch_size=32, seed=7)

    model, optimizer, zeta = fresh()
    for epoch in range(epochs):
        if epoch == stop_after:
            checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "zeta": zeta.state_dict()}
            model, optimizer, zeta = fresh()
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            zeta.load_state_dict(checkpoint["zeta"])
        zeta.measure(model, optimizer)
        torch.manual_seed(100 + epoch)
        train_one_pass(model, optimizer, images, labels)
    return zeta.zetas() + zeta.zetas("reference")


@pytest.mark.e2e
def test_a_loop_stopped_and_resumed_from_its_state_dict_gives_the_same_zeta_sequence():
    whole = zeta_sequence(4)
    assert nan_equal(zeta_sequence(4, stop_after=2), whole)
    assert all(math.isfinite(value) for value in whole[1:4])


def test_state_dict_of_another_probe_set_is_refused():
    images = synthetic_set(64)[0]
    state = Susceptibility(images, num_classes=10, batch_size=32, seed=1).state_dict()
    with pytest.raises(ValueError, match="another probe set"):
        Susceptibility(images, num_classes=10, batch_size=32, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="another probe set"):
        Susceptibility(images[:50], num_classes=10, batch_size=32, seed=1).load_state_dict(state)


# --------------------------------------------------------------------------------------------------
# Input forms and bad input


class RandomFlips(torch.utils.data.Dataset):
    """A map-style dataset whose items are (image, label) with a random flip drawn from torch's RNG."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i]
        return (image.flip(2) if torch.rand(()) < 0.5 else image), 0


def measured(images, caller_seed: int = 0, **kwargs) -> tuple[float, bool]:
    """r of a fresh probe, and whether the caller's global random stream came out as it went in."""
    torch.manual_seed(0)
    model = small_dropout_net()
    zeta = Susceptibility(images, num_classes=10, batch_size=16, seed=4, **kwargs)
    torch.manual_seed(caller_seed)
    caller = torch.get_rng_state()
    r = zeta.measure(model, OPTIMIZERS["sgd"](model.parameters()))
    return r, torch.equal(torch.get_rng_state(), caller)


@pytest.mark.e2e
def test_a_dataset_and_an_iterable_of_batches_probe_the_same_images_as_a_tensor():
    images = synthetic_set(48)[0]
    from_tensor = measured(images)
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(48))
    assert measured(dataset) == from_tensor
    assert measured(torch.utils.data.DataLoader(dataset, batch_size=10)) == from_tensor
    assert measured(list(images.split(7))) == from_tensor
    assert measured(images[:40]) != from_tensor


def test_random_transforms_are_fixed_by_the_seed_and_leave_the_callers_stream_alone():
    images = synthetic_set(48)[0]
    flip = lambda batch: torch.where(torch.rand(len(batch))[:, None, None, None] < 0.5, batch.flip(3), batch)
    unflipped, _ = measured(images)
    for kwargs in ({"images": RandomFlips(images)}, {"images": images, "augment": flip}):
        (r, kept), (again, kept_again) = measured(caller_seed=1, **kwargs), measured(caller_seed=2, **kwargs)
        assert kept and kept_again
        assert r == again != unflipped


def test_numpy_and_torch_integers_count_as_integers():
    images, _ = synthetic_set(32)
    torch.manual_seed(0)
    model = small_dropout_net()
    r = [Susceptibility(images, num_classes=n, batch_size=b, seed=s).measure(model, OPTIMIZERS["sgd"](model.parameters()))
         for n, b, s in ((10, 16, 3), (np.int64(10), np.int32(16), torch.tensor(3)))]
    assert r[0] == r[1]


def test_a_probe_on_the_cpu_seeds_no_accelerators_random_stream(monkeypatch):
    """torch.manual_seed would also reseed every GPU's stream, which the probe cannot restore."""
    torch.manual_seed(0)
    model = small_dropout_net()
    seeded = []
    for module in (torch.cuda, torch.mps):
        monkeypatch.setattr(module, "manual_seed_all", lambda seed: seeded.append(seed), raising=False)
        monkeypatch.setattr(module, "manual_seed", lambda seed: seeded.append(seed), raising=False)
    images = synthetic_set(32)[0]
    flip = lambda batch: torch.where(torch.rand(len(batch))[:, None, None, None] < 0.5, batch.flip(3), batch)
    Susceptibility(images, num_classes=10, batch_size=16, augment=flip).measure(model, OPTIMIZERS["sgd"](model.parameters()))
    assert seeded == []


@pytest.mark.parametrize("images, kwargs, message", [
    (torch.zeros(0, 3, 32, 32), {}, "no unlabeled images"),
    (torch.utils.data.TensorDataset(torch.zeros(0, 3, 32, 32)), {}, "no unlabeled images"),
    ([], {}, "no unlabeled images"),
    (torch.zeros(64, 3, 32, 32), {"num_classes": 1}, "num_classes must be an integer of at least 2"),
    (torch.zeros(64, 3, 32, 32), {"batch_size": 65}, "batch_size must be an integer from 1 to the 64"),
    (torch.zeros(64, 3, 32, 32), {"batch_size": 0}, "batch_size must be an integer from 1"),
    (torch.zeros(3, 32, 32), {}, r"images must have shape \(N, channels, height, width\), got shape \(3, 32, 32\)"),
    (torch.utils.data.TensorDataset(torch.zeros(8, 32, 32)), {}, "each image of the dataset must have shape"),
    ([torch.zeros(8, 3, 32, 32), torch.zeros(8, 3, 28, 28)], {}, "the image batches differ in image shape"),
    (42, {}, "images must be a tensor, a torch Dataset or an iterable of image batches, got int"),
    (torch.zeros(64, 3, 32, 32), {"seed": 1.5}, "seed must be an integer, got 1.5"),
    (torch.zeros(64, 3, 32, 32), {"num_classes": True}, "num_classes must be an integer of at least 2"),
], ids=["empty-tensor", "empty-dataset", "empty-iterable", "one-class", "batch-too-large", "batch-zero",
        "one-image", "dataset-wrong-shape", "batches-differ", "not-images", "float-seed", "bool-classes"])
def test_bad_input_is_one_clear_error(images, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message) as error:
        Susceptibility(images, **{"num_classes": 10, "batch_size": 8, **kwargs})
    assert "\n" not in str(error.value)
