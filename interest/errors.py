"""What a job's exit code says to a scheduler, as two marker classes with no imports.

Every error a user can act on (bad config, missing or malformed input, a failed gate, a table
that is not ours) derives from ``UserError``: the job prints one line and exits 2, and retrying
without a change is pointless. ``RetryableError`` marks faults worth retrying as they are
(exit 75, EX_TEMPFAIL). Anything else is a bug: exit 1 with the traceback. The classes live
here, at the ground floor, so ``cli.main_guard`` knows them without importing a stage (and
TensorFlow with it) into jobs that never train.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2
EXIT_RETRYABLE = 75  # EX_TEMPFAIL (sysexits.h)


class UserError(Exception):
    """Bad input or configuration, explained in the message: exit 2."""


class RetryableError(Exception):
    """A transient fault (an unreachable service, a lost worker): exit 75, worth a retry."""
