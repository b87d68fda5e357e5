"""Sweeps: a grid of runs read from a TOML file (`grid`), their jobs and progress on one machine
(`jobs`), and their submission to a Slurm cluster (`slurm`)."""
