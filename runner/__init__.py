"""The experiment runner behind `experiments.py` and `sweep.py`: settings and flags, data and label
noise, batching, the run and its checkpoint, training, per-sample scores, machine facts, records and
safe files, interrupts, TensorBoard, what `--resume` does without this run's checkpoint
(`runner.resume`), a finished run's model for new images (`runner.predict`, also
`python -m runner.predict`), and `runner.sweeps` (grids, jobs, Slurm).

Nothing here is installed by `pip install .`; it runs from a checkout, imported by the entry points
at the top of the repository.
"""
