"""The project's maintenance and study tools, run from the repository root as modules:
`python -m tools.<name>` (for example `python -m tools.gpu_check`)."""
