"""A one-node Slurm cluster on this machine, to try `sweep.py --slurm` without a cluster, and for the tests.

    sudo python3 -m tools.slurm_cluster start        # configure, start, wait until the node is idle
    export SLURM_CONF=/tmp/slurm-one-node/slurm.conf
    python sweep.py sweeps/smoke.toml --slurm --time 30 --gpus-per-run 0 --cpus-per-run 1 --wait
    sudo python3 -m tools.slurm_cluster wait         # until every job has left and the node is idle
    sudo python3 -m tools.slurm_cluster stop

It needs root and the Debian (or Ubuntu) packages `slurm-wlm` and `munge`, and no systemd: `start`
starts munged (as the `munge` user, unless it runs already), then slurmctld and slurmd with a
configuration written from this machine's host name and CPU count. One node, one partition, every
CPU a schedulable unit, no accounting (`sacct` is absent, as on many clusters' login nodes), and
processes tracked without cgroups. State, spool, logs and pid files stay in the folder given with
`--dir`; `stop` shuts the daemons down (and munged, if `start` started it) and leaves the folder.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_DIR = Path("/tmp/slurm-one-node")
DAEMONS = ("munged", "slurmctld", "slurmd")
# A requeued job waits for the credential of its last start to expire (Slurm's default: 120 s, its
# least: 5 s).
CREDENTIAL_SECONDS = 5
# Between a job's SIGTERM (cancelled, or at its time limit) and its SIGKILL (Slurm's default: 30 s).
KILL_WAIT_SECONDS = 10
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


class ClusterError(Exception):
    """The cluster cannot be started or reached; the message says why, in one line."""


def node_name() -> str:
    """This machine's short host name, which slurmd registers under."""
    return socket.gethostname().split(".")[0]


def configuration(folder: Path, cpus: int) -> str:
    """slurm.conf for one node with `cpus` CPUs, keeping every file in `folder`."""
    host = node_name()
    return "\n".join([
        "ClusterName=onenode", f"SlurmctldHost={host}", "SlurmUser=root",
        "AuthType=auth/munge", f"AuthInfo=cred_expire={CREDENTIAL_SECONDS}",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/builtin", "SchedulerParameters=sched_interval=1",  # pending jobs start at once
        "ReturnToService=2", f"KillWait={KILL_WAIT_SECONDS}",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none", "MpiDefault=none", "MailProg=/bin/true",
        f"NodeName={host} CPUs={cpus} State=UNKNOWN",
        "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""])


def conf_path(folder: Path) -> Path:
    return folder / "slurm.conf"


def client_env(folder: Path) -> dict[str, str]:
    """The environment in which Slurm's commands (sbatch, squeue, ...) talk to the cluster of `folder`."""
    if not conf_path(folder).exists():
        raise ClusterError(f"no cluster was configured in {folder}")
    return {**os.environ, "SLURM_CONF": str(conf_path(folder))}


def missing_requirements() -> str | None:
    """Why this machine cannot run the cluster, or None."""
    absent = [name for name in (*DAEMONS, "sbatch", "squeue", "scontrol", "srun") if shutil.which(name) is None]
    if absent:
        return f"{', '.join(absent)} not found; install them with: apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "slurmd and munged must be started as root"
    return None


def munge_works() -> bool:
    """Whether a munged answers on its socket."""
    try:
        credential = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        return credential.returncode == 0 and subprocess.run(
            ["unmunge"], input=credential.stdout, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def start_munge(folder: Path) -> None:
    """Start munged as the munge user unless one runs already; note that this script started it."""
    if munge_works():
        return
    MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_SOCKET.parent, "munge", "munge")
    if not Path("/etc/munge/munge.key").exists():
        run(["runuser", "-u", "munge", "--", "mungekey", "--create"], "mungekey")
    run(["runuser", "-u", "munge", "--", "munged"], "munged")
    (folder / "munged.started").touch()
    wait_for(munge_works, 30, "munged to answer")


def run(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    """Run a command; its failure raises ClusterError with the last line it printed."""
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    if result.returncode != 0:
        said = result.stderr.strip() or result.stdout.strip() or f"exit code {result.returncode}"
        raise ClusterError(f"{what} failed: {said.splitlines()[-1]}")


def wait_for(condition, seconds: float, what: str, log: Path | None = None) -> None:
    """Poll `condition` until it holds; after `seconds` raise ClusterError naming what was awaited."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            hint = f"; see {log}" if log else ""
            raise ClusterError(f"waited {seconds:.0f} s for {what}{hint}")
        time.sleep(0.5)


def node_state(folder: Path) -> str:
    """The node's state as sinfo reports it (idle, mixed, allocated, down, ...), or "" if unknown."""
    result = subprocess.run(["sinfo", "--noheader", "--Node", "--nodes", node_name(), "--format=%T"],
                            capture_output=True, text=True, env=client_env(folder), timeout=30)
    return result.stdout.strip() if result.returncode == 0 else ""


def jobs_listed(folder: Path) -> bool:
    """Whether any job is pending, running or completing."""
    result = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True,
                            env=client_env(folder), timeout=30)
    return result.returncode != 0 or bool(result.stdout.strip())


def idle(folder: Path) -> bool:
    return node_state(folder) == "idle" and not jobs_listed(folder)


def wait_until_idle(folder: Path, seconds: float = 120) -> None:
    """Wait until no job is left and the node is idle, ready for the next."""
    wait_for(lambda: idle(folder), seconds, f"the node {node_name()} to be idle", folder / "slurmctld.log")


def start(folder: Path) -> Path:
    """Write the configuration, start the daemons, wait until the node is idle; returns slurm.conf.
    A cluster already started from `folder` is left as it runs."""
    problem = missing_requirements()
    if problem:
        raise ClusterError(problem)
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    start_munge(folder)
    if not any(running(pid) for pid in daemon_pids(folder)):
        start_daemons(folder)
    wait_until_idle(folder)
    return conf_path(folder)


def start_daemons(folder: Path) -> None:
    """Configure the node from this machine's host name and the CPUs this process may use (`nproc`),
    then start slurmctld and slurmd."""
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    folder.chmod(0o755)  # users' commands read slurm.conf
    conf_path(folder).write_text(configuration(folder, len(os.sched_getaffinity(0))))
    env = client_env(folder)
    if controller_answers(env):
        raise ClusterError(f"a Slurm controller already answers on {node_name()}; stop it first")
    run(["slurmctld", "-f", str(conf_path(folder))], "slurmctld", env)
    wait_for(lambda: controller_answers(env), 60, "slurmctld to answer", folder / "slurmctld.log")
    run(["slurmd", "-f", str(conf_path(folder)), "-N", node_name()], "slurmd", env)


def controller_answers(env: dict[str, str]) -> bool:
    return subprocess.run(["scontrol", "ping"], capture_output=True, env=env, timeout=30).returncode == 0


def running(pid: int) -> bool:
    """Whether a process runs (a zombie, which no parent may ever reap here, has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def daemon_pids(folder: Path) -> list[int]:
    """The process ids in slurmctld's and slurmd's pid files."""
    pids = []
    for name in ("slurmctld.pid", "slurmd.pid"):
        try:
            pids.append(int((folder / name).read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return pids


def stop(folder: Path) -> None:
    """Shut slurmctld and slurmd down (and munged, if `start` started it); their jobs end with them."""
    folder = folder.resolve()
    pids = daemon_pids(folder)
    subprocess.run(["scontrol", "shutdown"], capture_output=True, env=client_env(folder), timeout=30)
    wait_for(lambda: not any(running(pid) for pid in pids), 60, "slurmctld and slurmd to stop")
    if (folder / "munged.started").exists():
        run(["runuser", "-u", "munge", "--", "munged", "--stop"], "munged --stop")
        (folder / "munged.started").unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "wait", "stop"],
                        help="start the cluster, wait until it is idle, or stop it")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="folder of the configuration, state and logs")
    options = parser.parse_args(argv)
    try:
        if options.action == "start":
            conf = start(options.dir)
            print(f"a one-node Slurm cluster runs on {node_name()}; use it with: export SLURM_CONF={conf}")
        elif options.action == "wait":
            wait_until_idle(options.dir, seconds=24 * 3600)
        else:
            stop(options.dir)
    except ClusterError as error:
        print(f"slurm_cluster.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
