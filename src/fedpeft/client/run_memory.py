"""The institution's memory of a run, kept in `Context.state` and rebuilt from its own ledger.

What the institution must remember within a run to refuse replays and to keep its DP-SGD
accounting (the last round it trained and version it evaluated, `fedpeft.client.admission`;
the newest global it accepted, `...stages.sealing.open_global`; the DP-SGD steps it took,
`fedpeft.client.rounds`) is kept in Flower's `Context.state`, per node and run. A deployed
node's `Context.state` lives in its SuperNode process: killed and started again within a
run, the node gets an empty state for that run, and a coordinator could then ask it again for
rounds it answered before, or have it count its example-level epsilon from zero.

So the institution's signed ledger is the source of truth, and `Context.state` only its cache:
the first message of a run that finds no memory in `Context.state` rebuilds it from the
ledger's records of that run (its federation and run id), after the whole chain has verified
with the institution's own key:

- the last round trained: the highest round of the run's `privacy-charge` records, written
  for every trained round before its update can leave (`fedpeft.client.privacy_account`);
- the last version evaluated: the highest round of its `evaluation-sent` records, written
  before the metrics leave;
- the newest global accepted: the later of the two (training in round r carries version
  r - 1, evaluation of version v carries v);
- the DP-SGD steps: the charges' example-level steps, summed, at their smallest noise
  multiplier and largest sampling rate, as `fedpeft.client.rounds` counts them.

A ledger that cannot be read or does not verify refuses the message (SecurityError naming the
file): starting from an empty memory is what the attacks above need. A missing ledger is a
memory of nothing: the ledger is created by the institution's first record, and deleting it
takes the institution's operator, not the coordinator (under a lifetime cap the privacy
account refuses a missing ledger anyway).

Not rebuilt, by choice: a global accepted by a message whose answer never left (nothing left
for it, and every version is still answered at most once); the optimizer moments of
`training.optimizer_state = "keep"` (quality, not safety: training goes on with fresh ones);
the secure-aggregation state of a round in progress (the node drops out of that round). An
unsealed run has no ledger (no key in use): its memory is `Context.state` alone, whole in a
simulation, whose contexts last as long as the run, and lost with a deployed node's process.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import ConfigRecord, Context

from fedpeft.client.identity import InstitutionKeys
from fedpeft.client.stages.ledger import EVALUATION_SENT
from fedpeft.common.audit import LEDGER_FILE
from fedpeft.common.audit.verify import check_ledger
from fedpeft.common.config import RunConfig
from fedpeft.common.errors import SecurityError

if TYPE_CHECKING:
    from fedpeft.common.privacy.lifetime import Charge

logger = logging.getLogger(__name__)

ANSWERED = "fedpeft-answered"
"""ConfigRecord in `Context.state`: the last train round and the last evaluated global
version this institution answered in the run (`fedpeft.client.admission`)."""

LAST_GLOBAL = "fedpeft-last-global"
"""ConfigRecord in `Context.state`: the newest global version received in the run
(`fedpeft.client.stages.sealing.open_global`)."""

DP_SGD_STATE = "fedpeft-dp-sgd"
"""ConfigRecord in `Context.state`: the example-level DP-SGD steps this institution has taken
in the run (`steps`), with the smallest noise multiplier and largest sampling rate they were
taken at (`fedpeft.client.rounds`)."""

RECALLED = "fedpeft-run-memory"
"""ConfigRecord in `Context.state`: the memory above is this node's for the run (rebuilt from
the ledger, or the run is new to it); absent in the first message after a (re)start."""


@dataclass(frozen=True)
class RunMemory:
    """What the ledger states about one run."""

    trained: int = 0
    """The last round trained (0: none)."""
    evaluated: int = -1
    """The last global version evaluated (-1: none)."""
    dp_steps: int = 0
    dp_noise_multiplier: float = float("inf")
    dp_sampling_rate: float = 0.0

    @property
    def newest_global(self) -> int:
        return max(self.trained - 1, self.evaluated)

    @property
    def empty(self) -> bool:
        return self.trained == 0 and self.evaluated == -1


def recall(context: Context, cfg: RunConfig, keys: InstitutionKeys | None, run_id: int) -> None:
    """Make sure `context.state` holds this node's memory of run `run_id` (see the module
    docstring); SecurityError when the ledger it would come from cannot be trusted."""
    if RECALLED in context.state.config_records:
        return
    source = "new run"
    if keys is not None:
        path = Path(keys.state_dir) / LEDGER_FILE
        memory = read_memory(path, keys, run_id, cfg.privacy.example_level)
        if not memory.empty:
            remember(context, memory)
            source = str(path)
            # a warning: the node was restarted within the run (and a ClientApp process
            # started by a SuperNode shows its warnings in the SuperNode's log, not its infos)
            logger.warning("%s: memory of run %d restored from its ledger %s: trained up to "
                           "round %d, evaluated up to version %d, %d DP-SGD step(s)", keys.name,
                           run_id, path, memory.trained, memory.evaluated, memory.dp_steps)
    context.state[RECALLED] = ConfigRecord({"source": source})


def read_memory(path: Path, keys: InstitutionKeys, run_id: int, example_level: bool) -> RunMemory:
    """The memory of run `run_id` in the ledger at `path`, verified with the institution's own
    key; the empty memory when there is no ledger yet. `example_level` (the run's signed
    privacy.example_level) says whether its charges' example-level steps are DP-SGD steps."""
    # numpy and the accountant: train and evaluate messages only (admission is imported by
    # the secure-aggregation handlers too, see tests/unit/test_client_imports.py)
    from fedpeft.common.privacy.lifetime import EXAMPLE, PRIVACY_CHARGE, Charge

    if not path.exists():
        return RunMemory()
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SecurityError(f"{path}: cannot be read ({err.strerror}); this institution "
                            f"cannot rebuild its memory of run {run_id}: refused") from None
    report = check_ledger(path, data, keys.signing_key.public_key())
    if not report.ok:
        raise SecurityError(f"{path}: {report.reason}; this institution cannot rebuild its "
                            f"memory of run {run_id} from it: refused")
    memory = RunMemory()
    for record in map(json.loads, data.splitlines()):
        body = record["body"]
        if body.get("run_id") != run_id or body.get("federation_id") != keys.federation_id:
            continue
        if record["kind"] == PRIVACY_CHARGE:
            memory = replace(memory, trained=max(memory.trained, _round(path, body)))
            if example_level:  # SecurityError when the charge cannot be read
                memory = _charged(memory, Charge.from_json(body.get(EXAMPLE)))
        elif record["kind"] == EVALUATION_SENT:
            memory = replace(memory, evaluated=max(memory.evaluated, _round(path, body)))
    return memory


def remember(context: Context, memory: RunMemory) -> None:
    """Write `memory` into `context.state`, in the records its users read."""
    context.state[ANSWERED] = ConfigRecord({"train": memory.trained,
                                            "evaluate": memory.evaluated})
    if memory.newest_global >= 0:
        context.state[LAST_GLOBAL] = ConfigRecord({"version": memory.newest_global})
    if memory.dp_steps:
        context.state[DP_SGD_STATE] = ConfigRecord({
            "steps": memory.dp_steps, "noise-multiplier": memory.dp_noise_multiplier,
            "sampling-rate": memory.dp_sampling_rate})


def _charged(memory: RunMemory, charge: Charge) -> RunMemory:
    """`memory` with one more round's DP-SGD steps (a charge without noise: multiplier 0)."""
    return replace(
        memory, dp_steps=memory.dp_steps + charge.steps,
        dp_noise_multiplier=min(memory.dp_noise_multiplier, charge.noise_multiplier or 0.0),
        dp_sampling_rate=max(memory.dp_sampling_rate, charge.sampling_rate))


def _round(path: Path, body: dict) -> int:
    value = body.get("round")
    if not isinstance(value, int) or isinstance(value, bool):
        raise SecurityError(f"{path}: a record of the run names no round ({value!r}); this "
                            "institution cannot rebuild its memory of the run from it: refused")
    return value
