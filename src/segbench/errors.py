"""The errors a user can fix: bad input, a missing or corrupt file, a diverged run, a stop on a signal.

Every such error derives from :class:`SegbenchError`, and its message says what was received, what was
expected and what to run next. The CLI prints it as one line and exits non-zero; any other exception is
a bug and keeps its traceback. Invalid arguments raise ``ValueError``, as in the standard library.

The hierarchy (classes defined elsewhere are named by module)::

    SegbenchError
    ├── MissingInputError          also FileNotFoundError: an earlier step has not written it yet
    ├── ChecksumError              a file's md5, sha256 or size is not the published one
    ├── StoreError                 a preprocessed store is unreadable, outdated or lacks a field or attribute
    ├── DivergenceError            also FloatingPointError: the training loss stopped being finite
    ├── WeightsError               also KeyError: a state dict's keys do not match the network's
    ├── weights.WeightsFileError   a weights file is not torch.save's: a web page, empty, truncated
    ├── data.download.DownloadError, data.download.ExtractError
    ├── data.voc.DatasetError, data.nyud.NyudError, data.siftflow.SiftFlowError   raw files not as published
    ├── data.stats.StatsError, submission.SubmissionError, data.msd.TaskError (a Decathlon task's files)
    ├── evaluation.inference.UnusableMode   an inference mode that cannot run this net correctly here
    └── Preempted                  stopped by a signal after a checkpoint; exit code 75, rerun to resume
"""

from __future__ import annotations


class SegbenchError(Exception):
    """An error the user can fix; the message says what is wrong and what to do."""


class MissingInputError(SegbenchError, FileNotFoundError):
    """An input file or folder does not exist: the step that writes it has not run (or points elsewhere)."""


class ChecksumError(SegbenchError):
    """A file's checksum (or size) is not one of the expected values: delete it and download it again."""


class StoreError(SegbenchError):
    """A preprocessed store is missing, truncated, of an older format, or lacks a field or attribute."""


class DivergenceError(SegbenchError, FloatingPointError):
    """The training loss became inf or NaN: the learning rate is too high for the run's settings."""


class WeightsError(SegbenchError, KeyError):
    """A state dict's keys do not match the network it is loaded into (an unknown, unmapped or missing key)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class Preempted(SegbenchError):
    """Training stopped on a signal after writing its checkpoint; rerun the same command to resume."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h)
