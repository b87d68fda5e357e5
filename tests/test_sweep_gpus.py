"""How a sweep asks for and uses GPUs, checked without one: the GPU request of the Slurm batch script,
in the form chosen and only when GPUs are asked for; K local runs on each visible GPU; the CUDA MPS
daemon started and stopped around a local sweep (a stand-in control program notes what it is told)."""
import collections
import os
import types

import pytest

from conftest import write_sweep
import sweep
from runner.sweeps import grid
from runner.sweeps import gpus as gpus_module
from runner.sweeps import slurm
from runner.sweeps.jobs import Progress

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


# --------------------------------------------------------------------------------------------------
# Local sweeps: K runs on each visible GPU, and the MPS daemon when asked for


@pytest.mark.parametrize("jobs, runs_per_gpu, gpus, expected", [
    (None, None, [str(i) for i in range(8)], 8),
    (None, 3, ["0", "1"], 6),
    (None, None, ["0"], 1),
    (4, None, ["0"], 4),
    (None, None, [], 1),
    (2, None, [], 2),
], ids=["one-on-each-of-8", "three-on-each-of-2", "one-gpu", "jobs-given", "cpu", "cpu-jobs"])
def test_runs_at_once_default_to_the_gpu_count(jobs, runs_per_gpu, gpus, expected):
    assert gpus_module.runs_at_once(jobs, runs_per_gpu, gpus) == expected


@pytest.mark.parametrize("jobs, runs_per_gpu, gpus, message", [
    (2, 2, ["0"], "give --jobs N .* or --runs-per-gpu K .*, not both"),
    (None, 2, [], "--runs-per-gpu places runs on GPUs, and none is visible here"),
])
def test_a_gpu_placement_that_cannot_be_met_is_refused(jobs, runs_per_gpu, gpus, message):
    with pytest.raises(grid.SweepError, match=message):
        gpus_module.runs_at_once(jobs, runs_per_gpu, gpus)


class FakeRun:
    """A process of a run that ends after a few looks at it."""

    def __init__(self, gpu: str, running: list):
        self.gpu, self.running, self.looks, self.returncode = gpu, running, 0, None
        running.append(self)

    def poll(self):
        self.looks += 1
        if self.looks > 3 and self.returncode is None:
            self.returncode = 0
            self.running.remove(self)
        return self.returncode


@pytest.fixture
def fake_processes(monkeypatch):
    """Runs started as `FakeRun`s; yields the list of (environment, GPUs busy per GPU) at each start."""
    running, starts = [], []

    def start(run, cwd, env):
        busy = collections.Counter(process.gpu for process in running)
        process = FakeRun(env.get("CUDA_VISIBLE_DEVICES"), running)
        starts.append((env, busy | collections.Counter([process.gpu])))
        return process

    monkeypatch.setattr(sweep, "start_process", start)
    monkeypatch.setattr(sweep, "record_outcome", lambda run, code: "done")
    monkeypatch.setattr(sweep, "POLL_SECONDS", 0)
    return starts


def fake_points(count: int) -> list:
    return [types.SimpleNamespace(name=f"run{i}", args=types.SimpleNamespace(device="auto")) for i in range(count)]


def test_k_runs_go_on_each_visible_gpu_and_no_more(fake_processes, monkeypatch):
    monkeypatch.setattr(sweep, "visible_gpus", lambda: ["0", "1", "2"])
    jobs = gpus_module.runs_at_once(None, 2, sweep.visible_gpus())
    assert sweep.run_locally(fake_points(10), jobs, Progress(10, 0))
    assert len(fake_processes) == 10
    assert max(busy[gpu] for _, busy in fake_processes for gpu in "012") == 2
    assert sorted(env["CUDA_VISIBLE_DEVICES"] for env, _ in fake_processes[:6]) == ["0", "0", "1", "1", "2", "2"]


def fake_mps_control(tmp_path, monkeypatch, exit_code: int = 0):
    """An nvidia-cuda-mps-control on the PATH that notes its arguments, input and pipe folder."""
    log = tmp_path / "mps.log"
    script = tmp_path / "bin" / gpus_module.MPS_CONTROL
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$* $(cat -) pipe=$CUDA_MPS_PIPE_DIRECTORY" >> {log}\nexit {exit_code}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    return log


def test_the_mps_daemon_runs_for_the_sweep_and_its_runs_reach_it(fake_processes, tmp_path, synthetic_cifar10,
                                                                 monkeypatch):
    log = fake_mps_control(tmp_path, monkeypatch)
    monkeypatch.setattr(sweep, "visible_gpus", lambda: ["0"])
    path = write_sweep(tmp_path / "sweep", synthetic_cifar10, '[grid]\nmodel = "cnn"\nlr = [0.05, 0.1]\n')
    sweep.main([str(path), "--runs-per-gpu", "2", "--mps"])
    pipe = tmp_path / "sweep" / "results" / "logs" / "mps" / "pipe"
    assert log.read_text().splitlines() == [f"-d  pipe={pipe}", f" quit pipe={pipe}"]
    assert [env["CUDA_MPS_PIPE_DIRECTORY"] for env, _ in fake_processes] == [str(pipe)] * 2


def test_an_mps_daemon_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    fake_mps_control(tmp_path, monkeypatch, exit_code=1)
    with pytest.raises(grid.SweepError, match="nvidia-cuda-mps-control -d could not start the MPS daemon"):
        with gpus_module.mps_daemon(tmp_path / "mps", ["0"]):
            pass


@pytest.mark.parametrize("gpus, path, message", [([], True, "--mps shares GPUs among runs, and none is visible"),
                                                  (["0"], False, "--mps needs nvidia-cuda-mps-control")])
def test_mps_without_gpus_or_its_control_program_is_one_line(tmp_path, monkeypatch, gpus, path, message):
    if path:
        fake_mps_control(tmp_path, monkeypatch)
    else:
        monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(grid.SweepError, match=message):
        with gpus_module.mps_daemon(tmp_path / "mps", gpus):
            pass


def test_local_placement_options_are_refused_with_slurm(tmp_path, synthetic_cifar10, capsys):
    path = write_sweep(tmp_path, synthetic_cifar10, '[grid]\nmodel = "cnn"\nlr = [0.05]\n')
    assert sweep.main([str(path), "--slurm", "--time", "10", "--runs-per-gpu", "2"]) == 2
    assert "--runs-per-gpu applies to local runs" in capsys.readouterr().err
