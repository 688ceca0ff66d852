"""The masking stage: the institution's half of secure aggregation (key exchange, masking,
consistency check, unmasking shares).

The protocol state (private keys, the self-mask seed, the shares other institutions sent) is
kept in Flower's `Context.state` between the round's messages: it lives on the institution's
node (the SuperNode, or the simulation's node state) and never travels to the SuperLink.

What an institution checks before it helps, against a server that may be malicious: the
parameters (threshold more than half of the holders and at least degree + 1 - max_dropouts,
`SecAggParams`); its neighbours (those of the graph the public seed fixes, no more missing
than max_dropouts, each one's keys signed by an institution of its own roster, no name twice:
`SecAggClient.share_keys`); the survivor list (at most max_dropouts missing in total, signed
once, and confirmed by `threshold` share holders before any share leaves). Every stage is
bound to one run and round (`secagg_wire.round_context`), and it masks only for the run and
round of the train message it is answering. An institution whose run config asks for secure
aggregation refuses to send an unmasked update. Every refusal is logged before it is raised.

The identity (name, signing key, roster) comes from the institution's bundle, located as for
sealing (`fedpeft.client.identity`). A run that exchanges unsealed updates, which a deployed
institution only joins with its explicit consent, has no identity: then nothing is signed and
the protocol only holds against an honest-but-curious server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.typing import ConfigRecordValues

from fedpeft.client.admission import admit_config
from fedpeft.client.identity import InstitutionKeys
from fedpeft.client.peers import load_roster
from fedpeft.client.stages.base import ClientStage, Outgoing, RoundInput
from fedpeft.common.config import RunConfig
from fedpeft.common.config.secure_aggregation import masking_plan, noise_headroom_problem
from fedpeft.common.crypto.secagg import Identity, SecAggClient, SecAggParams
from fedpeft.common.errors import ConfigError, SecurityError
from fedpeft.common.wire import secagg as wire
from fedpeft.common.wire.names import DP_CLIP_NORM, DP_NOISE_STD, NUM_EXAMPLES

logger = logging.getLogger(__name__)

_CLIENT = "client"
_CONTEXT = "context"


@contextmanager
def _logged(stage: str) -> Iterator[None]:
    """Log a refusal in the institution's own log before Flower turns it into an error reply."""
    try:
        yield
    except SecurityError as err:
        logger.error("secure aggregation %s refused: %s", stage, err)
        raise


def _params(msg: Message) -> tuple[SecAggParams, int]:
    record = msg.content.config_records.get(wire.RECORD)
    if record is None:
        raise SecurityError("secure aggregation message without its parameters")
    sid = record.get(wire.ID)
    if not isinstance(sid, int) or sid < 1:
        raise SecurityError(f"secure aggregation: bad protocol id {sid!r}")
    return SecAggParams.from_record(record), sid


def identity(keys: InstitutionKeys | None) -> Identity | None:
    """This institution's name, signing key and roster; None when the run is unsealed."""
    if keys is None:
        return None
    return Identity(keys.name, keys.signing_key, load_roster(keys.bundle_dir, keys.federation_id))


def bundle_identity(msg: Message, context: Context) -> Identity | None:
    """The identity of the institution on this node, for a message whose run config the
    server signed (`admit_config`): a relay cannot strip sealing from the config to make an
    institution accept unsigned neighbour keys."""
    _, keys = admit_config(msg, context)
    return identity(keys)


def _check_terms(params: SecAggParams, cfg: RunConfig) -> None:
    """The round's terms must be the ones the signed run config fixes: the encoding and the
    tolerated dropouts as configured, at least federation.min_train_clients participants, and
    the degree and threshold the config's own rule gives for that many (`masking_plan`).
    Otherwise a server could claim more dropouts to lower the threshold to just over half of
    the share holders, so that fewer colluding neighbours rebuild a secret."""
    sa = cfg.secure_aggregation
    configured = {"ring_bits": sa.ring_bits, "quantization_bits": sa.quantization_bits,
                  "max_dropouts": sa.max_dropouts}
    for name, value in configured.items():
        if getattr(params, name) != value:
            raise SecurityError(f"secure aggregation {name}={getattr(params, name)}, but the "
                                f"signed run config fixes {value}: refused")
    if not math.isclose(params.clip_range, sa.clip_range):
        raise SecurityError(f"secure aggregation clip_range={params.clip_range:g}, but the "
                            f"signed run config fixes {sa.clip_range:g}: refused")
    if params.participants < cfg.federation.min_train_clients:
        raise SecurityError(f"secure aggregation round of {params.participants} institutions, "
                            f"below federation.min_train_clients="
                            f"{cfg.federation.min_train_clients}: refused")
    try:
        planned = masking_plan(sa, params.participants)
    except ConfigError as err:
        raise SecurityError(f"secure aggregation round the config cannot hold: {err}") from None
    if (params.degree, params.threshold) != (planned.degree, planned.threshold):
        raise SecurityError(
            f"secure aggregation degree {params.degree} and threshold {params.threshold} for "
            f"{params.participants} institutions, but the signed run config gives "
            f"{planned.degree} and {planned.threshold}: refused")


def _save(context: Context, client: SecAggClient, params: SecAggParams) -> None:
    context.state[wire.STATE] = ConfigRecord({_CLIENT: client.to_bytes(), _CONTEXT: params.context})


def _load(context: Context, params: SecAggParams, who: Identity | None) -> SecAggClient:
    record = context.state.config_records.get(wire.STATE)
    if record is None or record.get(_CONTEXT) != params.context:
        raise SecurityError("secure aggregation: no key exchange for this round on this node")
    data = record.get(_CLIENT)
    assert isinstance(data, bytes)
    client = SecAggClient.from_bytes(data, who)
    if client.params != params:
        raise SecurityError("secure aggregation: the parameters changed during the round")
    return client


def _reply(msg: Message, values: dict[str, ConfigRecordValues]) -> Message:
    return Message(RecordDict({wire.RECORD: ConfigRecord(values)}), reply_to=msg)


def handle_setup(msg: Message, context: Context) -> Message:
    """Stage 1: fresh key pairs for this round; the public halves go back, signed."""
    with _logged("setup"):
        params, sid = _params(msg)
        record = context.state.config_records.get(wire.STATE)
        if record is not None and record.get(_CONTEXT) == params.context:
            raise SecurityError("this node refuses a second key exchange for the same round")
        cfg, institution = admit_config(msg, context)
        _check_terms(params, cfg)
        who = identity(institution)
        if who is None:
            logger.warning("secure aggregation without an identity (unsealed run): the keys "
                           "are not signed and neighbours are not authenticated")
        client = SecAggClient(sid, params, who)
        keys = client.advertise()
        _save(context, client, params)
    return _reply(msg, wire.keys_record({sid: keys}))


def handle_share(msg: Message, context: Context) -> Message:
    """Stage 2: after checking the neighbours, Shamir shares of this institution's secrets,
    one ciphertext per neighbour."""
    with _logged("key sharing"):
        params, _ = _params(msg)
        client = _load(context, params, bundle_identity(msg, context))
        neighbours = wire.read_keys(msg.content.config_records[wire.RECORD])
        ciphertexts = client.share_keys(neighbours)
        _save(context, client, params)
    return _reply(msg, wire.payloads_record(ciphertexts))


def mask_update(msg: Message, context: Context, expected_context: bytes,
                values: np.ndarray, weight: int, who: Identity | None) -> tuple[np.ndarray, int]:
    """Stage 3: `values` (the flattened update) masked for this round's sum, packed for the
    wire (`secagg_wire.pack`), and how many values fell outside the clip range.

    `expected_context` is what this institution itself knows of the run and round (its
    federation, the message's run id and round), so a server cannot get a mask computed for
    another round out of it.
    """
    with _logged("masking"):
        params, _ = _params(msg)
        if params.context != expected_context:
            raise SecurityError("secure aggregation parameters are for another run or round")
        client = _load(context, params, who)
        client.receive_shares(wire.read_payloads(msg.content.config_records[wire.RECORD]))
        masked = client.mask(values, weight)
        _save(context, client, params)
    return wire.pack(masked.vector, params.ring_bits), masked.clipped


def handle_confirm(msg: Message, context: Context) -> Message:
    """Consistency check: sign the survivor list, once, if it leaves few enough out."""
    with _logged("consistency check"):
        params, _ = _params(msg)
        client = _load(context, params, bundle_identity(msg, context))
        survivors = wire.read_ids(msg.content.config_records[wire.RECORD], wire.SURVIVORS)
        signature = client.confirm_survivors(survivors)
        _save(context, client, params)
    return _reply(msg, wire.signature_record(signature))


def handle_unmask(msg: Message, context: Context) -> Message:
    """Stage 4: check the share holders confirmed the same survivors, then release the shares
    that remove the masks of the sum; the round's state is gone afterwards."""
    with _logged("unmasking"):
        params, _ = _params(msg)
        client = _load(context, params, bundle_identity(msg, context))
        signatures = wire.read_payloads(msg.content.config_records[wire.RECORD])
        shares = client.unmask(signatures)
        del context.state[wire.STATE]
    logger.info("secure aggregation: sent %d shares (%d share holders confirmed)", len(shares),
                len(signatures) + 1)
    return _reply(msg, wire.payloads_record(shares))


def _check_noise_share(rnd: RoundInput) -> None:
    """Refuse a noise share smaller than the round's size calls for, or one the clip range
    would truncate: either way the sum would carry less noise than the accountant charges."""
    params, _ = _params(rnd.msg)
    clip_norm = float(rnd.config[DP_CLIP_NORM])  # type: ignore[arg-type]
    std = float(rnd.config[DP_NOISE_STD])  # type: ignore[arg-type]
    guaranteed = params.participants - params.max_dropouts
    needed = rnd.cfg.privacy.noise_multiplier * clip_norm / math.sqrt(guaranteed)
    if std < needed * (1 - 1e-9):
        raise SecurityError(
            f"the noise share std {std:.4g} is below {needed:.4g}, what noise multiplier "
            f"{rnd.cfg.privacy.noise_multiplier:g} needs when only {guaranteed} of "
            f"{params.participants} institutions are guaranteed to be in the sum"
        )
    problem = noise_headroom_problem(params.clip_range, clip_norm, std)
    if problem:
        raise SecurityError(f"refusing to mask: {problem}")


class Masking(ClientStage):
    """Replaces the update by this round's masked vector: the round's change times its weight,
    with the weight appended, so that only the sum over institutions can be read."""

    name = "masking"
    needs_delta = True

    def apply(self, out: Outgoing, rnd: RoundInput) -> Outgoing:
        if wire.RECORD not in rnd.msg.content.config_records:
            raise SecurityError(
                "the run asks for secure aggregation but this train message has no masking "
                "parameters: refusing to send an unmasked update"
            )
        assert out.delta is not None  # the chain computes the delta whenever masking is on
        if DP_NOISE_STD in rnd.config:
            with _logged("masking"):
                _check_noise_share(rnd)
        expected = wire.round_context(rnd.federation_id, rnd.msg.metadata.run_id,
                                      rnd.server_round)
        who = identity(rnd.keys)
        packed, clipped = mask_update(rnd.msg, rnd.context, expected, wire.flatten(out.delta),
                                      out.weight, who)
        metrics = {k: v for k, v in out.metrics.items() if k != NUM_EXAMPLES}  # travels masked
        return out.but(state={wire.MASKED_ARRAY: packed},
                       metrics={**metrics, wire.CLIPPED: clipped},
                       ledger={**out.ledger, "form": "masked"})
