"""The model zoo: every family at every width, its reference size, its randomness, and a run through
experiments.py with the susceptibility probe and checkpointing."""
import math

import pytest
import torch
from torch.nn import functional as F

from runner import checkpoints
import experiments
from runner import records
from models import FAMILIES, create_model, parameter_count
from models.efficientnet import drop_connect
from reference_counts import REFERENCE_PARAMETERS
from susceptibility import probe_step

NAMES = sorted(FAMILIES)
SCALES = [0.125, 0.25, 0.5, 1.0, 1.5]
CLASSES = [10, 100]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Batches of two images run fastest on one thread, and do not stall when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.e2e
@pytest.mark.parametrize("num_classes", CLASSES)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", NAMES)
def test_forward_gives_class_scores_and_backward_finite_gradients(name, scale, num_classes):
    torch.manual_seed(0)
    model = create_model(name, scale, num_classes)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, num_classes)
    F.cross_entropy(logits, torch.tensor([0, num_classes - 1])).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{parameter_name} takes no part in the forward pass"
        assert torch.isfinite(parameter.grad).all(), parameter_name


@pytest.mark.parametrize("num_classes", CLASSES)
@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_grows_with_the_scale(name, num_classes):
    counts = [parameter_count(name, scale, num_classes) for scale in SCALES]
    assert all(smaller < larger for smaller, larger in zip(counts, counts[1:])), counts


@pytest.mark.e2e
@pytest.mark.parametrize("name", NAMES)
def test_any_positive_scale_gives_a_consistent_network(name):
    """Scales far from the tested grid (odd widths, one-channel layers) still fit together."""
    for scale in (0.01, 0.07, 0.3, 0.77, 1.3, 2.0):
        with torch.device("meta"):
            model = create_model(name, scale, num_classes=100)
            assert model(torch.empty(2, 3, 32, 32)).shape == (2, 100), scale


@pytest.mark.parametrize("num_classes", CLASSES)
@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_at_scale_1_is_the_reference_count(name, num_classes):
    assert parameter_count(name, 1.0, num_classes) == REFERENCE_PARAMETERS[name][num_classes]


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        create_model("lenet")
    assert all(name in str(error.value) for name in NAMES)


@pytest.mark.parametrize("scale", [0.0, -0.5, math.nan])
def test_create_model_refuses_a_scale_that_is_not_positive(scale):
    with pytest.raises(ValueError, match="scale must be a positive number"):
        create_model("cnn", scale)


def cli(data_dir, out, model: str, scale: str, name: str = "zoo") -> list[str]:
    return ["--model", model, "--scale", scale, "--epochs", "1", "--numsamples", "16",
            "--batchsize", "8", "--lr", "0.1", "--corruptprob", "0.5", "--seed", "0",
            "--data-dir", str(data_dir), "--results-dir", str(out / "results"),
            "--checkpoint-dir", str(out / "checkpoint"), "--filename", name,
            "--modelfilename", name, "--device", "cpu"]


def test_dropout_and_drop_connect_draw_from_the_global_generator():
    torch.manual_seed(0)
    model = create_model("efficientnet", 0.125)
    images = torch.randn(4, 3, 32, 32)
    outputs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        outputs.append(model(images))
    assert torch.equal(outputs[0], outputs[1])
    assert not torch.equal(outputs[0], outputs[2])
    model.eval()
    assert torch.equal(model(images), model(images))


def test_drop_connect_drops_whole_samples_and_keeps_the_expectation():
    branch = torch.ones(20000, 2, 3, 3)
    torch.manual_seed(0)
    dropped = drop_connect(branch, 0.2, training=True)
    per_sample = dropped.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.8).all(1)).all()
    assert dropped.mean().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(drop_connect(branch, 0.2, training=False), branch)


@pytest.mark.e2e
@pytest.mark.parametrize("name", NAMES)
def test_probe_leaves_training_bit_identical(name):
    """Training with a probe before every step ends in exactly the weights, BatchNorm statistics and
    optimizer state of training without it, dropout and drop-connect included."""
    data = torch.Generator().manual_seed(0)
    images, probe_images = torch.randn(2, 8, 3, 32, 32, generator=data)
    labels, probe_labels = torch.randint(0, 10, (2, 8), generator=data)

    def train(with_probe: bool):
        torch.manual_seed(0)
        model = create_model(name, 0.125)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        drops = []
        for step in range(2):
            if with_probe:
                before, after = probe_step(model, optimizer, probe_images, probe_labels, seed=100 + step)
                drops.append((before - after).item())
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
        return model, optimizer, drops

    probed, probed_optimizer, drops = train(with_probe=True)
    plain, plain_optimizer, _ = train(with_probe=False)
    assert all(math.isfinite(d) and d != 0 for d in drops)
    for key, value in plain.state_dict().items():
        assert torch.equal(probed.state_dict()[key], value), key
    probed_state, plain_state = probed_optimizer.state_dict()["state"], plain_optimizer.state_dict()["state"]
    assert probed_state.keys() == plain_state.keys()
    for index in plain_state:
        assert torch.equal(probed_state[index]["momentum_buffer"], plain_state[index]["momentum_buffer"])


@pytest.mark.e2e
@pytest.mark.parametrize("name", NAMES)
def test_one_epoch_through_experiments_records_the_probe_and_saves_the_model(name, synthetic_cifar10,
                                                                           tmp_path):
    assert experiments.main(cli(synthetic_cifar10, tmp_path, name, "0.125")) == 0
    record = records.read_record(tmp_path / "results" / f"zoo_{name}_1_0.1.csv")
    (row,) = record.rows
    assert math.isfinite(row["phi_before"]) and math.isfinite(row["phi_after"])
    assert row["phi_before"] != row["phi_after"]
    checkpoint = tmp_path / "checkpoint" / f"zoo_{name}_1_0.1.pt"
    assert checkpoint.exists()
    model = create_model(name, 0.125)
    model.load_state_dict(checkpoints.load_checkpoint(checkpoint)["model"])


@pytest.mark.parametrize("name", NAMES)
def test_a_batch_of_one_image_trains_in_train_mode(name):
    """The last training batch of an epoch can hold one image: every BatchNorm layer also
    normalizes over spatial positions, so one sample is enough (the reference trains on it too)."""
    torch.manual_seed(0)
    model = create_model(name, 0.125).train()
    F.cross_entropy(model(torch.randn(1, 3, 32, 32)), torch.tensor([3])).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
