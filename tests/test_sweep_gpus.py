"""How a sweep asks for and uses GPUs, checked without one: the GPU request of the Slurm batch script,
in the form chosen and only when GPUs are asked for."""
import pytest

from conftest import write_sweep
import sweep
from runner.sweeps import grid
from runner.sweeps import slurm

submitit = pytest.importorskip("submitit", reason="the Slurm batch script is written by submitit")


def batch_script(tmp_path, data, monkeypatch, *options: str) -> list[str]:
    """The #SBATCH lines of the batch script `sweep.py --slurm` would submit with `options`."""
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # as if srun were here
    path = write_sweep(tmp_path, data, '[grid]\nmodel = "cnn"\nlr = [0.05, 0.1]\n')
    parsed = sweep.parse_options([str(path), "--slurm", "--time", "10", *options])
    executor = slurm.executor_for(grid.load_sweep(path), parsed)
    text = executor._executor._make_submission_file_text("python job.py", "0")
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def gpu_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "gpu" in line or "gres" in line]


@pytest.mark.parametrize("options, requested", [
    ((), ["#SBATCH --gpus-per-node=1"]),
    (("--gpus-per-run", "4"), ["#SBATCH --gpus-per-node=4"]),
    (("--gpus-per-run", "2", "--gpu-request", "gres"), ["#SBATCH --gres=gpu:2"]),
    (("--gpus-per-run", "0"), []),
    (("--gpus-per-run", "0", "--gpu-request", "gres"), []),
], ids=["default", "gpus-per-node", "gres", "cpu-only", "cpu-only-gres"])
def test_the_batch_script_asks_for_gpus_once_in_the_form_chosen(tmp_path, synthetic_cifar10, monkeypatch, options,
                                                                requested):
    lines = batch_script(tmp_path, synthetic_cifar10, monkeypatch, *options)
    assert gpu_lines(lines) == requested and "#SBATCH --cpus-per-task=8" in lines


def test_other_generic_resources_pass_through(tmp_path, synthetic_cifar10, monkeypatch):
    lines = batch_script(tmp_path, synthetic_cifar10, monkeypatch, "--gpu-request", "gres",
                         "--slurm-option", "account=lab")
    assert gpu_lines(lines) == ["#SBATCH --gres=gpu:1"] and "#SBATCH --account=lab" in lines


@pytest.mark.parametrize("option", ["gres=gpu:a100:1", "gpus-per-node=2", "gpus=1"])
def test_a_second_gpu_request_among_the_extra_options_is_one_line(tmp_path, synthetic_cifar10, capsys, option):
    path = write_sweep(tmp_path, synthetic_cifar10, '[grid]\nmodel = "cnn"\nlr = [0.05]\n')
    assert sweep.main([str(path), "--slurm", "--time", "10", "--slurm-option", option]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--slurm-option {option} asks for GPUs" in err


def test_the_gpu_request_form_applies_to_slurm_only(tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, '[grid]\nmodel = "cnn"\nlr = [0.05]\n')
    assert sweep.main([str(path), "--gpu-request", "gres"]) == 2
    assert "--gpu-request applies to --slurm only" in capsys.readouterr().err
