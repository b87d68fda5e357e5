"""The errors a user can fix, and the exit codes of experiments.py and sweep.py.

Both errors are reported as one line with the exit code `USAGE`; nothing here imports another module
of the project, so every module may raise them.
"""

# Exit codes of experiments.py (and of sweep.py, which reads its runs' codes).
USAGE, DIVERGED, INTERRUPTED = 2, 3, 130


class UsageError(Exception):
    """A problem with the command line or the files it names; reported as one line."""


class DataError(Exception):
    """A data problem the user can fix (a missing folder, a corrupt batch, a label file that does not
    fit); its message is one line saying what and how."""
