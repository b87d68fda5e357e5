"""The data paths and speed options: the device-resident path's augmentation, its agreement with the
DataLoader path and that path's kept worker processes; channels-last convolutions and --compile."""
import functools
import os
import signal
import time

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch._dynamo.eval_frame import OptimizedModule

from runner import errors
from runner import batching
from runner import checkpoints
import datasets
from runner import noisy_data
import experiments
from runner import records
from conftest import built_run, interrupt_at_epoch, run_args
from models import create_model
from susceptibility import probe_step
from runner import training
from runner.training import fast_network


def coordinate_images(n: int) -> torch.Tensor:
    """Images whose channel 0 holds row + 1 and channel 1 column + 1, so a crop reveals its offset."""
    pixels = torch.arange(1, 33, dtype=torch.uint8)
    image = torch.stack([pixels[:, None].expand(32, 32), pixels[None, :].expand(32, 32),
                         torch.zeros(32, 32, dtype=torch.uint8)])
    return image.expand(n, 3, 32, 32).contiguous()


def recover_offsets_and_flips(crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert `crop_and_flip` on coordinate images, from the centre pixels (always inside)."""
    flips = crops[:, 1, 16, 16] < crops[:, 1, 16, 15]
    rows = crops[:, 0, 16, 16].long() - 1 - 16 + batching.PAD
    cols = crops[:, 1, 16, 16].long() - 1 - torch.where(flips, 15, 16) + batching.PAD
    return torch.stack([rows, cols], 1), flips


def test_centre_offset_without_flip_returns_the_original_image():
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    centre = torch.full((5, 2), batching.PAD)
    assert torch.equal(batching.crop_and_flip(images, centre, torch.zeros(5, dtype=torch.bool)), images)
    assert torch.equal(batching.crop_and_flip(images, centre, torch.ones(5, dtype=torch.bool)),
                       images.flip(-1))


def test_crop_shifts_content_and_fills_the_padding_with_zeros():
    images = torch.randint(1, 256, (1, 3, 32, 32), dtype=torch.uint8)
    crop = batching.crop_and_flip(images, torch.tensor([[0, 8]]), torch.tensor([False]))
    assert torch.equal(crop[0, :, 4:, :28], images[0, :, :28, 4:])
    assert (crop[0, :, :4] == 0).all() and (crop[0, :, :, 28:] == 0).all()


def test_recovery_of_offsets_is_exact():
    offsets = torch.tensor([[0, 0], [8, 8], [3, 7], [8, 0]])
    flips = torch.tensor([False, True, True, False])
    crops = batching.crop_and_flip(coordinate_images(4), offsets, flips)
    got_offsets, got_flips = recover_offsets_and_flips(crops)
    assert torch.equal(got_offsets, offsets) and torch.equal(got_flips, flips)


def test_random_offsets_cover_all_81_positions_uniformly_and_flip_half():
    n = 81 * 200
    crops = batching.random_augment(coordinate_images(n), torch.Generator().manual_seed(0))
    offsets, flips = recover_offsets_and_flips(crops)
    counts = np.bincount((offsets[:, 0] * 9 + offsets[:, 1]).numpy(), minlength=81)
    assert len(counts) == 81 and counts.min() > 0
    assert stats.chisquare(counts).pvalue > 1e-3  # a biased draw gives p far below 1e-10
    assert abs(flips.float().mean().item() - 0.5) < 0.02  # 5 standard deviations at this n


def loader_and_device(root, numsamples=40):
    train, test = datasets.load_cifar(root)
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=numsamples,
                                    corrupt_prob=0.5, probe_source="train", seed=0)
    cpu = torch.device("cpu")
    return (batching.DeviceBatches(data, cpu, 16, 30),
            batching.LoaderBatches(data, cpu, 16, 30, workers=0), data)


def test_both_paths_give_identical_test_batches(synthetic_cifar10):
    device_path, loader_path, _ = loader_and_device(synthetic_cifar10)
    for (x1, y1), (x2, y2) in zip(device_path.test_batches(), loader_path.test_batches(), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def every_augmentation(image: torch.Tensor) -> torch.Tensor:
    """All 162 crops and flips of one uint8 image, normalized."""
    grid = torch.cartesian_prod(torch.arange(9), torch.arange(9))
    offsets = torch.cat([grid, grid])
    flips = torch.arange(162) >= 81
    return batching.normalize(batching.crop_and_flip(image.expand(162, -1, -1, -1), offsets, flips))


@pytest.mark.parametrize("numsamples", [40, 33], ids=["remainder-8", "remainder-1"])
def test_both_paths_cover_the_epoch_with_the_same_labels_and_augmentations(synthetic_cifar10, numsamples):
    device_path, loader_path, data = loader_and_device(synthetic_cifar10, numsamples)
    generator = lambda: torch.Generator().manual_seed(1)
    pairs = lambda source: sorted((int(a), int(t)) for batch in source.train_batches(generator())
                                  for a, t in zip(batch.assigned, batch.true))
    assert pairs(device_path) == pairs(loader_path) == sorted(zip(data.assigned_labels.tolist(),
                                                                  data.true_labels.tolist()))
    positions = torch.arange(len(loader_path.train_set))
    for position in positions[:6]:
        augmented = loader_path.train_set[int(position)][0]
        source = torch.as_tensor(data.images[data.train_index[int(position)]])
        candidates = every_augmentation(source)
        assert any(torch.allclose(augmented, c, atol=1e-6) for c in candidates)


# --------------------------------------------------------------------------------------------------
# The DataLoader path: worker processes kept from pass to pass


def loader_path(root, workers: int) -> batching.LoaderBatches:
    train, test = datasets.load_cifar(root)
    data = noisy_data.make_noisy_data(train, test, num_classes=10, numsamples=100, corrupt_prob=0.5,
                                      probe_source="train", seed=0)
    return batching.LoaderBatches(data, torch.device("cpu"), 16, 30, workers)


def fresh_loader_pass(batches: batching.LoaderBatches, generator: torch.Generator) -> list[tuple]:
    """A training pass as a DataLoader made for it alone with the epoch's generator gives it: the
    order drawn first, then worker processes started and seeded from the generator."""
    order = torch.randperm(len(batches.train_set), generator=generator)
    sampler = [b.tolist() for b in batching.batch_slices(order, batches.batch_size)]
    loader = torch.utils.data.DataLoader(batches.train_set, batch_sampler=sampler, num_workers=batches.workers,
                                         generator=generator)
    return [(images, positions) for images, positions in loader]


@pytest.mark.e2e
@pytest.mark.parametrize("workers", [2, 3])
def test_kept_worker_processes_augment_every_pass_as_fresh_ones_would(synthetic_cifar10, workers):
    kept = loader_path(synthetic_cifar10, workers)
    for epoch in range(3):
        ours = list(kept.train_batches(torch.Generator().manual_seed(epoch)))
        theirs = fresh_loader_pass(kept, torch.Generator().manual_seed(epoch))
        assert len(ours) == len(theirs) == 7
        for batch, (images, positions) in zip(ours, theirs):
            assert torch.equal(batch.images, images) and torch.equal(batch.index, positions)
    workers_of = lambda: kept.loaders[kept.train_set]._iterator._workers
    started = list(workers_of())
    list(kept.train_batches(torch.Generator().manual_seed(9)))
    assert len(started) == workers and workers_of() == started  # the same processes, every pass


@pytest.mark.e2e
def test_loader_workers_leave_stop_signals_to_the_main_process(synthetic_cifar10):
    """Ctrl-C reaches the whole process group, a scheduler's SIGTERM every process of the job: the
    main process ends the run cleanly, and then its workers."""
    kept = loader_path(synthetic_cifar10, 2)
    list(kept.train_batches(torch.Generator().manual_seed(0)))
    for worker in kept.loaders[kept.train_set]._iterator._workers:
        for signum in (signal.SIGINT, signal.SIGTERM):
            os.kill(worker.pid, signum)
    time.sleep(0.5)
    assert len(list(kept.train_batches(torch.Generator().manual_seed(1)))) == 7


def pil_crop_and_flip(image: np.ndarray, offset: tuple[int, int], flip: bool) -> torch.Tensor:
    """One uint8 (3, 32, 32) image through the PIL transforms of the DataLoader path, at a given
    crop offset (row, column) of the zero-padded image and flip."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    picture = TF.crop(TF.pad(Image.fromarray(image.transpose(1, 2, 0)), batching.PAD), *offset, 32, 32)
    picture = TF.hflip(picture) if flip else picture
    return TF.normalize(TF.to_tensor(picture), batching.MEAN, batching.STD)


def test_tensor_crop_and_flip_equals_the_pil_transforms():
    images = np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    offsets = torch.tensor([[0, 0], [8, 8], [3, 7], [8, 0], [4, 4], [1, 6]])
    flips = torch.tensor([False, True, True, False, True, False])
    ours = batching.normalize(batching.crop_and_flip(torch.as_tensor(images), offsets, flips))
    for image, offset, flip, mine in zip(images, offsets.tolist(), flips.tolist(), ours):
        assert torch.equal(mine, pil_crop_and_flip(image, offset, bool(flip)))


def test_loader_probe_batch_comes_from_its_generator_alone_as_the_device_path_does(synthetic_cifar10):
    device_path, loader_path, _ = loader_and_device(synthetic_cifar10)
    batches = []
    for global_seed in (0, 1):  # a resumed run starts with another global random state
        torch.manual_seed(global_seed)
        batches.append(loader_path.probe_batch(torch.Generator().manual_seed(5)))
    expected = device_path.probe_batch(torch.Generator().manual_seed(5))
    for images, labels in batches:
        assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1])


def test_channels_last_network_shares_the_model_and_the_probe_restores_it(synthetic_cifar10):
    device_path, _, _ = loader_and_device(synthetic_cifar10)
    model = create_model("resnet", 0.125)
    network = fast_network(model, channels_last=True)
    assert [p.data_ptr() for p in network.parameters()] == [p.data_ptr() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = device_path.probe_batch(torch.Generator().manual_seed(0))
    phi_before, phi_after = probe_step(network, optimizer, images, labels, seed=0)
    assert phi_before != phi_after
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def tiny_run(data_dir, out, model: str, epochs: int, *extra: str) -> int:
    """The tiny run of conftest with `model` on 64 images at lr 0.1, its files directly in `out`."""
    return experiments.main(run_args(data_dir, out, "--model", model, "--numsamples", "64", "--lr", "0.1",
                                     "--results-dir", str(out), "--checkpoint-dir", str(out), *extra,
                                     epochs=epochs, name="run"))


@pytest.mark.e2e
def test_channels_last_run_writes_a_normal_record(synthetic_cifar10, tmp_path):
    assert tiny_run(synthetic_cifar10, tmp_path, "resnet", 1, "--channels-last") == 0
    record = records.read_record(tmp_path / "run_resnet_1_0.1.csv")
    assert record.meta["args"]["channels_last"] is True and np.isfinite(record.rows[0]["phi_after"])


@pytest.mark.e2e
@pytest.mark.parametrize("flags, recorded", [((), True), (("--no-channels-last",), False)],
                         ids=["default", "turned-off"])
def test_channels_last_is_the_cpu_default_and_recorded_as_chosen(synthetic_cifar10, tmp_path, flags, recorded):
    assert tiny_run(synthetic_cifar10, tmp_path, "cnn", 1, *flags) == 0
    assert records.read_record(tmp_path / "run_cnn_1_0.1.csv").meta["args"]["channels_last"] is recorded
    assert checkpoints.load_checkpoint(tmp_path / "run_cnn_1_0.1.pt")["config"]["channels_last"] is recorded


@pytest.mark.e2e
@pytest.mark.parametrize("first", [False, True], ids=["started-off", "started-on"])
def test_a_run_resumed_without_the_flag_keeps_its_layout(synthetic_cifar10, tmp_path, monkeypatch, first):
    """A run started before channels-last became the CPU default continues with the same command."""
    interrupt_at_epoch(monkeypatch, 1)
    flag = "--channels-last" if first else "--no-channels-last"
    assert tiny_run(synthetic_cifar10, tmp_path, "cnn", 2, flag) == errors.INTERRUPTED
    monkeypatch.undo()
    assert tiny_run(synthetic_cifar10, tmp_path, "cnn", 2, "--resume") == 0
    record = records.read_record(tmp_path / "run_cnn_2_0.1.csv")
    assert record.meta["status"]["finished"] and record.meta["args"]["channels_last"] is first


@pytest.mark.e2e
@pytest.mark.slow
def test_compiled_network_trains_and_saves_the_plain_model(synthetic_cifar10, tmp_path):
    assert tiny_run(synthetic_cifar10, tmp_path, "cnn", 2, "--compile") == 0
    state = checkpoints.load_checkpoint(tmp_path / "run_cnn_2_0.1.pt")
    assert not any(key.startswith("_orig_mod") for key in state["model"])


# --------------------------------------------------------------------------------------------------
# --compile, and the time an epoch spends compiling


def compiled_graphs(network: nn.Module, batch_sizes: list[int]) -> int:
    """The graphs torch.compile makes (with its eager backend, which compiles nothing) for training
    steps on batches of `batch_sizes`, then evaluation passes on batches of the same sizes."""
    torch._dynamo.reset()
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01)
    network.train()
    for size in batch_sizes:
        nn.functional.cross_entropy(network(torch.rand(size, 3, 32, 32)), torch.zeros(size, dtype=torch.int64)).backward()
        optimizer.step()
    network.eval()
    with torch.no_grad():
        for size in batch_sizes:
            network(torch.rand(size, 3, 32, 32))
    return torch._dynamo.utils.counters["stats"]["unique_graphs"] - before


@pytest.mark.e2e
def test_compile_makes_one_graph_for_training_and_one_for_evaluation_whatever_the_batch_size(monkeypatch):
    compile_eagerly = functools.partial(torch.compile, backend="eager")
    monkeypatch.setattr(torch, "compile", compile_eagerly)
    torch.manual_seed(0)
    sizes = [32, 32, 20, 32]  # on a CPU, oneDNN's kernel choice for batches under 16 would add a graph
    assert compiled_graphs(torch.compile(create_model("cnn", 0.125)), sizes) == 3  # one more for the last batch
    assert compiled_graphs(fast_network(create_model("cnn", 0.125), compile=True), sizes) == 2


def test_the_probe_runs_uncompiled_beside_a_compiled_network(synthetic_cifar10, tmp_path):
    for extra in ([], ["--amp"]):
        run = built_run(run_args(synthetic_cifar10, tmp_path, "--compile", "--numsamples", "64", *extra))
        compiled = lambda network: any(isinstance(module, OptimizedModule) for module in network.modules())
        assert compiled(run.network) and not compiled(run.probe_network)


@pytest.mark.e2e
def test_compile_time_is_recorded_apart_from_the_epochs_time(synthetic_cifar10, tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda network, **options: network)  # its time is stood in for
    compiling = [0.0]
    for module in (training, experiments):
        monkeypatch.setattr(module, "compile_seconds", lambda: compiling[0])
    run = built_run(run_args(synthetic_cifar10, tmp_path, "--compile", "--numsamples", "64"))
    measure = run.probe.measure

    def compiling_probe(*args):
        time.sleep(0.5)
        compiling[0] += 0.5
        return measure(*args)

    monkeypatch.setattr(run.probe, "measure", compiling_probe)
    started = time.perf_counter()
    row = experiments.probe_train_and_test(run, 0)
    wall = time.perf_counter() - started
    assert row["compile_seconds"] == 0.5 and wall - 0.5 - 0.05 < row["seconds"] < wall - 0.5
    assert 0 < row["probe_seconds"] < row["seconds"]
