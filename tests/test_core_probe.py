"""The susceptibility probe leaves training untouched, and the bookkeeping it feeds is right."""
import math

import pytest
import torch
from torch.nn import functional as F

from runner import batching
import datasets
from runner import noisy_data
import susceptibility
from conftest import DEVICES, assert_bit_identical, make_batches, one_step_by_hand, small_dropout_net
from models import create_model
from susceptibility import probe_step
from runner.training import evaluate, train_one_epoch
from susceptibility.zeta import running_zetas


def train_epochs(build_model, batches, epochs: int, with_probe: bool, seed: int = 0):
    """Train with one global RNG seeding, optionally probing before every epoch; dropout masks then
    match only if the probe leaves the caller's random stream where it was."""
    torch.manual_seed(seed)
    model = build_model().to(batches.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    drops = []
    for epoch in range(epochs):
        if with_probe:
            images, labels = batches.probe_batch(susceptibility.torch_generator(seed, batches.device, "probe", epoch))
            before, after = probe_step(model, optimizer, images, labels, seed=1000 + epoch)
            drops.append((before - after).item())
        train_one_epoch(model, optimizer, batches.train_batches(
            susceptibility.torch_generator(seed, batches.device, "train", epoch)))
    return model, optimizer, drops


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("build_model", [lambda: create_model("resnet", 0.125), small_dropout_net],
                         ids=["resnet-batchnorm", "dropout"])
@pytest.mark.e2e
def test_probe_leaves_weights_batchnorm_and_optimizer_bit_identical(synthetic_cifar10, build_model, device):
    batches = make_batches(synthetic_cifar10, device=device)
    probed, probed_opt, drops = train_epochs(build_model, batches, 3, with_probe=True)
    plain, plain_opt, _ = train_epochs(build_model, batches, 3, with_probe=False)
    assert all(d != 0 for d in drops)  # the probe did take real steps
    assert_bit_identical(probed.state_dict(), plain.state_dict())  # weights, running stats, counters
    for state_a, state_b in zip(probed_opt.state_dict()["state"].values(),
                                plain_opt.state_dict()["state"].values()):
        assert_bit_identical(state_a, state_b)
    assert probed_opt.state_dict()["param_groups"] == plain_opt.state_dict()["param_groups"]


@pytest.mark.e2e
def test_probe_takes_one_step_of_the_runs_own_optimizer(synthetic_cifar10):
    batches = make_batches(synthetic_cifar10)
    torch.manual_seed(0)
    model = create_model("cnn", 0.125)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    train_one_epoch(model, optimizer, batches.train_batches(susceptibility.torch_generator(0, batches.device, "t")))
    images, labels = batches.probe_batch(susceptibility.torch_generator(0, batches.device, "p"))
    # The step by hand on copies, with the same momentum buffers and hyper-parameters (no dropout here).
    expected_before, expected_after = one_step_by_hand(model, optimizer, images, labels, dropout_seed=0)
    before, after = probe_step(model, optimizer, images, labels, seed=0)
    assert before.item() == pytest.approx(expected_before, rel=1e-6)
    assert after.item() == pytest.approx(expected_after, rel=1e-6)


def test_probe_batches_are_fixed_by_their_seed_and_use_the_fixed_random_labels(synthetic_cifar10):
    batches = make_batches(synthetic_cifar10)
    gen = lambda epoch: susceptibility.torch_generator(0, batches.device, "probe", epoch)
    images_a, labels_a = batches.probe_batch(gen(3))
    images_b, labels_b = batches.probe_batch(gen(3))
    images_c, _ = batches.probe_batch(gen(4))
    assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)
    assert not torch.equal(images_a, images_c)
    assert len(labels_a) == 32 and set(labels_a.tolist()) <= set(batches.probe_labels.tolist())


def test_running_means_match_hand_computed_values():
    before = [5.0, 4.0, 3.0, 2.5]
    after = [4.0, 3.0, 1.0, 2.0]  # drops r = 1, 1, 2, 0.5
    drops = [b - a for b, a in zip(before, after)]
    paper, reference = running_zetas(drops, "paper"), running_zetas(drops, "reference")
    assert math.isnan(paper[0]) and list(paper[1:]) == [1.0, 1.5, (1 + 2 + 0.5) / 3]
    assert math.isnan(reference[0]) and list(reference[1:]) == [0.0, 0.5, 3 / 3]


def brute_force_counts(model, batches_list):
    """Per-sample Python recount of clean/noisy loss and accuracy, like the reference code."""
    totals = {"clean": [0.0, 0, 0], "noisy": [0.0, 0, 0]}
    model.train()
    with torch.no_grad():
        for batch in batches_list:
            logits = model(batch.images)
            for out, assigned, true in zip(logits, batch.assigned, batch.true):
                group = totals["clean" if assigned == true else "noisy"]
                group[0] += F.cross_entropy(out[None], assigned[None]).item()
                group[1] += int(out.argmax() == assigned)
                group[2] += 1
    return totals


@pytest.mark.e2e
def test_clean_and_noisy_metrics_equal_a_per_sample_recount(synthetic_cifar10):
    batches = make_batches(synthetic_cifar10, numsamples=150, batch_size=40)
    batch_list = list(batches.train_batches(susceptibility.torch_generator(0, batches.device, "t")))
    torch.manual_seed(0)
    model = create_model("cnn", 0.125)
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # predictions measured before each step
    metrics = train_one_epoch(model, frozen, batch_list)
    totals = brute_force_counts(model, batch_list)
    for name, (loss, correct, count) in totals.items():
        assert count > 0
        assert metrics[f"train_{name}_loss"] == pytest.approx(loss / count, rel=1e-5)
        assert metrics[f"train_{name}_acc"] == pytest.approx(100 * correct / count)
    all_correct = totals["clean"][1] + totals["noisy"][1]
    assert metrics["train_acc"] == pytest.approx(100 * all_correct / 150)


@pytest.mark.e2e
def test_noisy_metrics_are_missing_when_no_label_is_wrong(synthetic_cifar10):
    train, test = datasets.load_cifar(synthetic_cifar10)
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=64, corrupt_prob=0.0,
                                    probe_source="train", seed=0)
    batches = batching.DeviceBatches(data, torch.device("cpu"), 32, 50)
    model = create_model("cnn", 0.125)
    metrics = train_one_epoch(model, torch.optim.SGD(model.parameters(), lr=0.01),
                              batches.train_batches(susceptibility.torch_generator(0, batches.device, "t")))
    assert math.isnan(metrics["train_noisy_acc"]) and metrics["train_clean_acc"] == metrics["train_acc"]


def test_evaluate_counts_every_test_image(synthetic_cifar10):
    batches = make_batches(synthetic_cifar10)
    model = create_model("cnn", 0.125).eval()
    with torch.no_grad():
        logits = model(batching.normalize(batches.test_images))
    expected = 100 * (logits.argmax(1) == batches.test_labels).float().mean().item()
    result = evaluate(model, batches.test_batches())
    assert result["test_acc"] == pytest.approx(expected)
    assert result["test_loss"] == pytest.approx(F.cross_entropy(logits, batches.test_labels).item(), rel=1e-5)
