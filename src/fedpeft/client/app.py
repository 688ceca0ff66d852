"""The institution's Flower ClientApp: which message goes to which handler.

Training and evaluation (`fedpeft.client.rounds`) need torch, transformers and peft; the
secure-aggregation stages need only numpy and the crypto package. In a deployment Flower starts
a fresh ClientApp process for every message, so the heavy modules are imported inside the
handlers that use them: a key-exchange or unmasking message then costs well under a second of
imports instead of several.
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedpeft.client.stages import masking as secure_aggregation
from fedpeft.common.wire import secagg as secagg_wire

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of local training starting from the global adapter."""
    from fedpeft.client import rounds  # heavy: see the module docstring

    return rounds.train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the global adapter on the institution's local validation rows."""
    from fedpeft.client import rounds  # heavy: see the module docstring

    return rounds.evaluate(msg, context)


@app.train(secagg_wire.ACTIONS[secagg_wire.SETUP])
def secagg_setup(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 1 (see `fedpeft.client.stages.masking`)."""
    return secure_aggregation.handle_setup(msg, context)


@app.train(secagg_wire.ACTIONS[secagg_wire.SHARE])
def secagg_share(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 2."""
    return secure_aggregation.handle_share(msg, context)


@app.train(secagg_wire.ACTIONS[secagg_wire.CONFIRM])
def secagg_confirm(msg: Message, context: Context) -> Message:
    """Secure aggregation, consistency check (signs the survivor list)."""
    return secure_aggregation.handle_confirm(msg, context)


@app.train(secagg_wire.ACTIONS[secagg_wire.UNMASK])
def secagg_unmask(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 4."""
    return secure_aggregation.handle_unmask(msg, context)
