"""Errors a user can act on.

Every failure that is the user's to fix (a missing file, a bad column, a bad config value)
is a `FedpeftError`: the CLI prints its message on one line and exits with its code, without a
traceback. Security refusals are a separate family because callers must never treat them as
ordinary input mistakes to be retried or ignored.
"""

from __future__ import annotations


class FedpeftError(Exception):
    """A problem the user can fix; the message names the file, field, column or value."""

    exit_code: int = 2


class ConfigError(FedpeftError):
    """An invalid configuration value (file, flag or combination)."""


class DataError(FedpeftError):
    """Training or test data that cannot be used as configured."""


class ModelError(FedpeftError):
    """A base model or PEFT setting that cannot be loaded or applied."""


class RunError(FedpeftError):
    """A federated run that could not complete (e.g. every institution failed a round)."""

    exit_code = 3


class SecurityError(FedpeftError):
    """Input refused for security reasons: bad signature, tampered ciphertext, unknown node.

    Deliberately terse: the message says what was refused and why in one line but never echoes
    key material or plaintext.
    """

    exit_code = 4


class DeploymentError(FedpeftError):
    """A SuperLink or SuperNode operation that failed: unreachable, refused, or exited non-zero."""

    exit_code = 3


class RoundAborted(RunError):
    """A round that cannot produce a correct aggregate (e.g. more secure-aggregation dropouts
    than the threshold tolerates): the global adapter stays as it was and the run goes on."""


class RunInterrupted(RunError):
    """A run stopped on request (SIGTERM, SIGINT): its folder keeps the checkpoint of the last
    complete round, from which `fedpeft resume` continues."""

    exit_code = 130
