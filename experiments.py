"""Train an image classifier on CIFAR with noisy labels and track its susceptibility ζ every epoch.

    python experiments.py --model resnet --filename run1 --modelfilename run1

Each epoch: the susceptibility probe (one optimizer step on random-label data, then undone), one
training epoch, and the test pass. The run record `results/<filename>_<model>_<epochs>_<lr>.csv` and
the checkpoint `checkpoint/<modelfilename>_<model>_<epochs>_<lr>.pt` are rewritten atomically after
every epoch; `--resume` continues an interrupted run exactly where it stopped.

Read from the bottom up: `main` parses the command line and takes the run's locks, `start` resolves
the configuration and builds the run (or continues it from its checkpoint), `train` runs the epochs,
and `probe_train_and_test` computes one.
"""
from __future__ import annotations

import math
import shlex
import sys
import time
from pathlib import Path

from tqdm import tqdm

from runner import checkpoints
from runner import command_line
from runner import config as run_config
import datasets
from runner import records
from runner import resume
from runner import safe_files
from runner.errors import DIVERGED, INTERRUPTED, USAGE, DataError, UsageError
from runner.interrupts import interrupts_deferred, one_line_errors
from runner.machine import (amp_refusal, channels_last_default, configure_device, prepare_determinism,
                            run_settings_restored, select_device)
from runner.run import Run, build_run, restore
from runner.run_files import RunFiles, run_files
from runner.streams import Stream
from susceptibility import derive_seed, torch_generator
from runner.tensorboard_log import TensorBoardLog
from susceptibility.traceless import seed_global_streams
from runner.training import NonFiniteLoss, clock, compile_seconds, evaluate, train_one_epoch, without_subsets

DESCRIPTION = __doc__.split("\n\n")[0]
LOCK_HELD = ("another process is writing this run ({error}); wait for it to end, or give this run another "
             "--filename and --modelfilename")
NOT_STARTED = "interrupted before training started; nothing was changed"
# Errors that end the program with one line: bad input, and a file that cannot be written.
ONE_LINE_ERRORS = (UsageError, DataError, safe_files.UnwritableFile)


def probe_train_and_test(run: Run, epoch: int) -> dict:
    """One epoch: the probes, the training pass, the test (and hold-out) passes and the schedule's
    step; returns the epoch's row of the run record."""
    config, started, compiled = run.config, clock(), compile_seconds()
    lr = run.optimizer.param_groups[0]["lr"]
    run.probe.measure(run.probe_network, run.optimizer)
    probed = clock()
    for probe in run.extra_probes.values():
        probe.measure(run.probe_network, run.optimizer)
    extra_probed = clock()
    seed_global_streams(derive_seed(config.seed, Stream.TRAIN_DROPOUT, epoch), run.device)
    train_generator = torch_generator(config.seed, run.generator_device, Stream.TRAIN, epoch)
    run.signals.start_epoch(epoch)
    with tqdm(total=run.batches.train_batch_count(), desc=epoch_label(epoch, config.epochs), leave=False,
              unit="batch", disable=None) as bar:
        train = train_one_epoch(run.network, run.optimizer, run.batches.train_batches(train_generator), bar,
                                run.signals)
    if not run.data.noise.ground_truth:
        train = without_subsets(train)
    test = (evaluate(run.network, run.batches.test_batches(), prefix=records.TEST, predictions=run.test_predictions)
            if len(run.data.test) else {})  # no test set: the test columns stay empty
    if len(run.data.holdout):
        test |= evaluate(run.network, run.batches.holdout_batches(), prefix=records.NOISY_HOLDOUT)
    run.scheduler.step()
    row = {"epoch": epoch, "lr": lr, "phi_before": run.probe.phi_before[epoch],
           "phi_after": run.probe.phi_after[epoch], **train, **test, **run.signals.summary(),
           "seconds": clock() - started, "probe_seconds": probed - started,
           "extra_probe_seconds": extra_probed - probed if run.extra_probes else math.nan,
           "compile_seconds": compile_seconds() - compiled if config.compile else math.nan,
           "susceptibility": run.probe.zeta, **batch_columns(run)}
    check_finite(row)
    return row


def batch_columns(run: Run) -> dict[str, float]:
    """The latest r of each probe batch: `probe_r<j>` of the probe that defines ζ where it has
    several batches per epoch, `<source>_probe_r<j>` of each extra probe."""
    probes = {"probe": run.probe} if run.probe.batches_per_epoch > 1 else {}
    probes |= {f"{source}_probe": probe for source, probe in run.extra_probes.items()}
    return {records.batch_column(name, batch): drop
            for name, probe in probes.items() for batch, drop in enumerate(probe.batch_drops())}


def check_finite(row: dict) -> None:
    """Raise NonFiniteLoss if a loss of the row is NaN or infinite, before the row is recorded."""
    for column, quantity in records.MUST_BE_FINITE.items():
        if column in row and not math.isfinite(row[column]):
            raise NonFiniteLoss(quantity, row[column])


# --------------------------------------------------------------------------------------------------
# What the console shows


def epoch_label(epoch: int, epochs: int) -> str:
    """An epoch as the console shows it: the record's 0-based number, then how far the run is,
    padded so that every epoch of a run takes the same width: `epoch  9 (10/200)`."""
    width = len(str(epochs))
    return f"epoch {epoch:>{width}} ({epoch + 1:>{width}}/{epochs})"


def summary_line(row: dict, epochs: int) -> str:
    """One line per epoch with the key metrics in fixed-width columns; clean/noisy accuracies where
    they are known, and a dash for ζ in epoch 0, where it is not defined yet."""
    subsets = "".join(f"{name} {row[f'train_{name}_acc']:6.2f}%  " for name in ("clean", "noisy")
                      if math.isfinite(row[f"train_{name}_acc"]))
    zeta, test = row["susceptibility"], row.get("test_acc", math.nan)
    zeta_text = f"{zeta:8.4f}" if math.isfinite(zeta) else f"{'–':>8}"
    test_text = f"{test:6.2f}%" if math.isfinite(test) else f"{'–':>7}"
    return (f"{epoch_label(row['epoch'], epochs)}  lr {row['lr']:9.4g}  "
            f"train {row['train_acc']:6.2f}%  {subsets}test {test_text}  "
            f"zeta {zeta_text}  ({row['seconds']:6.1f} s)")


def opening_line(run: Run) -> str:
    """What the run trains and on what: the first line it prints."""
    config, noise = run.config, run.data.noise_summary()
    labels = (f"{noise['type']} noise, {noise['fraction_wrong']:.1%} wrong labels" if noise["ground_truth"]
              else "labels as given (ground truth unknown)")
    test = "" if len(run.data.test) else ", no test set (empty test columns)"
    return (f"{run.name}: {config.model} x{config.scale} on {len(run.data.train_index)} "
            f"{config.dataset} images, {labels}{test}, device {run.device}")


def nothing_saved(paths: RunFiles) -> str:
    """What is on disk when a run stops before its first epoch is saved."""
    return (f"{paths.record} still holds the earlier run, unchanged" if paths.record.exists()
            else "nothing was written")


def what_is_kept(run: Run, paths: RunFiles) -> str:
    """The epochs on disk when a run stops early."""
    if run.rows:
        return f"the {len(run.rows)} completed epochs are kept in {paths.record} and {paths.checkpoint}"
    return f"no epoch was saved, so {nothing_saved(paths)}"


def interruption_message(run: Run, paths: RunFiles, argv: list[str]) -> str:
    """What an interrupted run left on disk, and the command that continues or restarts it."""
    if not run.rows:
        command = shlex.join(["python", "experiments.py", *argv])
        return (f"interrupted in {epoch_label(0, run.config.epochs)}, before it was saved; "
                f"{nothing_saved(paths)}. Start it again with: {command}")
    kept = [a for a in argv if a not in ("--overwrite", "--resume")]
    command = shlex.join(["python", "experiments.py", *kept, "--resume"])
    return (f"interrupted: {len(run.rows)} of {run.config.epochs} epochs are saved in {paths.record} and "
            f"{paths.checkpoint}; continue with: {command}")


# --------------------------------------------------------------------------------------------------
# The run: start or continue, train, save


def run_record(run: Run, stopped_because: str | None = None) -> records.RunRecord:
    """The run record: the run's header, its status and every completed epoch."""
    status = {"epochs_completed": len(run.rows), "epochs_planned": run.config.epochs,
              "finished": run.finished, "stopped_because": stopped_because}
    return records.RunRecord({**run.header(), "status": status}, run.rows)


def write_record(run: Run, paths: RunFiles, stopped_because: str | None = None) -> None:
    """Rewrite the run record with every completed epoch and the run's status."""
    records.write_record(paths.record, run_record(run, stopped_because))


def save_epoch(run: Run, paths: RunFiles, row: dict) -> None:
    """Save the epoch as one unit: the per-sample scores, the test predictions and the record are
    written beside their old versions (the first two timed as `save_seconds`), then the checkpoint,
    which commits the epoch, and only then do the three replace their old versions. A save that
    fails before the checkpoint leaves the previous epoch's files as they were; one cut off after
    it is completed from the checkpoint on --resume (`repair_epoch_files`). Ctrl-C and SIGTERM wait
    until the save has ended. The row is complete before the checkpoint takes its copy, so a
    resumed run has every row as recorded. The checkpoint stays on the critical path: written while
    the next epoch ran, it would not be on disk when a SIGKILL (a scheduler's hard limit, an
    out-of-memory kill) ended that epoch, which would then lose two epochs."""
    with interrupts_deferred(), safe_files.written_together() as staged:
        started = time.perf_counter()
        stage_side_files(staged, run, paths)
        row["save_seconds"] = time.perf_counter() - started
        run.rows.append(row)
        try:
            staged.write(paths.record, records.render_record(run_record(run)).encode())
            checkpoints.save_checkpoint(paths.checkpoint, run.state_dict())
        except BaseException:
            run.rows.pop()
            raise
        staged.promote()


def stage_side_files(staged: safe_files.StagedFiles, run: Run, paths: RunFiles,
                     with_test_predictions: bool = True) -> None:
    """Write the per-sample scores and (unless told not to) the test predictions beside their old
    versions, to replace them with `staged.promote`."""
    staged.write(paths.samples, records.table_bytes(sample_scores(run)))
    if with_test_predictions:
        staged.write(paths.test_predictions, records.table_bytes(test_predictions(run)))


def epoch_files(paths: RunFiles) -> tuple[Path, ...]:
    """Every file a run rewrites each epoch."""
    return paths.record, paths.checkpoint, paths.samples, paths.test_predictions


def repair_epoch_files(run: Run, paths: RunFiles, has_test_predictions: bool) -> None:
    """Complete the files of the checkpoint's last epoch where its save was cut off after the
    checkpoint was written (the record then counts fewer epochs): the record, the per-sample scores
    and, where the checkpoint holds them, the test predictions."""
    if recorded_epochs(paths.record) == len(run.rows) and paths.samples.exists():
        return
    with safe_files.written_together() as staged:
        stage_side_files(staged, run, paths, with_test_predictions=has_test_predictions)
        staged.write(paths.record, records.render_record(run_record(run)).encode())
        staged.promote()
    print(f"completed {paths.record} and the files beside it with the {len(run.rows)} epochs saved in "
          f"{paths.checkpoint}")


def recorded_epochs(record: Path) -> int:
    """How many epochs the run record at `record` holds; none where there is no readable record."""
    try:
        return len(records.read_record(record).rows)
    except (OSError, ValueError):
        return 0


def sample_scores(run: Run) -> dict[str, list]:
    """Per training sample: its row in the dataset, assigned and true label (empty where unknown)
    and each score of `records.SAMPLE_SCORES` (empty where it has no value)."""
    data, scores = run.data, {name: values.cpu().tolist() for name, values in run.signals.scores().items()}
    counts = ("forgetting", "changes", "learned_at")
    scores |= {name: [None if math.isnan(value) else int(value) for value in scores[name]] for name in counts}
    truth = data.true_labels.tolist() if data.noise.ground_truth else [None] * len(data.train_index)
    return {"index": data.train_index.tolist(), "assigned": data.assigned_labels.tolist(), "true": truth, **scores}


def test_predictions(run: Run) -> dict[str, list]:
    """Per test image, in the dataset's order: its label and the class the latest model predicts."""
    labels = run.data.test.labels.tolist()
    return {"index": list(range(len(labels))), "label": labels, "predicted": run.test_predictions.cpu().tolist()}


def start(args, argv: list[str], paths: RunFiles) -> Run:
    """Resolve the configuration and build the run, loading its checkpoint when resuming, or saying
    that there is none."""
    prepare_determinism(args.deterministic)  # before CUDA starts
    device = select_device(args.device)
    refusal = amp_refusal(device) if args.amp else None
    if refusal:
        raise UsageError(refusal)
    configure_device(device, args.deterministic)
    checkpoint = None
    if args.resume and paths.checkpoint.exists():
        checkpoint = checkpoints.load_checkpoint(paths.checkpoint, device)
    elif args.resume:  # another run's checkpoint this one extends, or none (see runner.resume)
        checkpoint = resume.checkpoint_elsewhere(args, paths, device)
    train, test = datasets.load_dataset(args.data_dir, args.dataset, args.num_classes)
    recorded_layout = checkpoint["config"].get("channels_last") if checkpoint else None
    layout = next(choice for choice in (args.channels_last, recorded_layout, channels_last_default(device))
                  if choice is not None)
    config = run_config.resolve(args, num_classes=datasets.class_count(train, test, args.num_classes),
                                channels_last=bool(layout))
    command = (checkpoint["command"] if checkpoint else None) or argv
    run = build_run(config, command, device, train, test)
    if checkpoint is not None:
        restore(run, checkpoint, paths.checkpoint)
        repair_epoch_files(run, paths, "test_predictions" in checkpoint)
        if len(run.rows) < config.epochs:
            print(f"resuming {paths.record.name}: {len(run.rows)} of {config.epochs} epochs done, "
                  f"continuing with epoch {len(run.rows)}")
    return run


def train(run: Run, paths: RunFiles, argv: list[str]) -> int:
    """The epoch loop; returns the process exit code."""
    print(opening_line(run))
    board = TensorBoardLog(run.config.tensorboard, run.name, run.rows) if run.config.tensorboard else None
    try:
        for epoch in range(len(run.rows), run.config.epochs):
            row = probe_train_and_test(run, epoch)
            save_epoch(run, paths, row)
            if board:
                board.add_row(row)
            tqdm.write(summary_line(row, run.config.epochs))
    except NonFiniteLoss as error:
        reason = f"non-finite {error.quantity} in epoch {len(run.rows)} ({error})"
        if run.rows:
            write_record(run, paths, stopped_because=reason)
        print(f"stopped: {reason}; try a lower --lr; {what_is_kept(run, paths)}", file=sys.stderr)
        return DIVERGED
    except safe_files.UnwritableFile as error:
        print(f"experiments.py: error: {error}; {what_is_kept(run, paths)}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print(f"\n{interruption_message(run, paths, argv)}", file=sys.stderr)
        return INTERRUPTED
    finally:
        if board:
            board.close()
    print(f"done: {paths.record} and the final model in {paths.checkpoint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the experiment the command line describes; return the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with one_line_errors("experiments.py", ONE_LINE_ERRORS, LOCK_HELD, NOT_STARTED) as outcome, \
            run_settings_restored():
        args = command_line.parse(argv, DESCRIPTION)
        paths = run_files(args)
        with safe_files.exclusive_lock(paths.locks[0]), safe_files.exclusive_lock(paths.locks[1]):
            checkpoints.check_paths(args, paths)  # under the locks: two processes never write the same run
            for path in epoch_files(paths):  # left by a process killed while writing them, then a trial write
                safe_files.remove_stale_temporaries(path)
                safe_files.check_writable(path)
            run = start(args, argv, paths)
            if run.finished:
                print(f"{paths.record} is already complete ({run.config.epochs} epochs)")
                return 0
            return train(run, paths, argv)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
