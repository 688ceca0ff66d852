"""The per-round payload: the trainable part of the model as named float32 numpy arrays.

Keys and contents come from peft's own `get_peft_model_state_dict`, whose documented
invariant is that its keys load back with `set_peft_model_state_dict`; for sequence
classification that includes the head peft keeps in `modules_to_save`. Arrays are always
float32 copies, so a bf16 institution and a CPU institution send averageable payloads and a
payload never aliases live parameters that training later changes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

from fedpeft.common.errors import ModelError

AdapterState = dict[str, np.ndarray]


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(device="cpu", dtype=torch.float32, copy=True).numpy()


def peft_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """peft's adapter state dict, without the full embedding matrix.

    peft's default ("auto") asks the Hugging Face hub whether the vocabulary was resized, on
    every call: a network request per round, and one that stalls offline. fedpeft never resizes
    the vocabulary (padding reuses an existing token), so the embeddings are never payload.
    """
    return get_peft_model_state_dict(model, save_embedding_layers=False)


def adapter_state(model: PeftModel) -> AdapterState:
    """The adapter (and classification head) of `model`, in peft's key order."""
    return {key: _to_numpy(value) for key, value in peft_state_dict(model).items()}


def check_state_shapes(expected: Mapping[str, tuple[int, ...]],
                       state: Mapping[str, np.ndarray]) -> None:
    """Raise ModelError naming the first key of `state` missing, unexpected or misshapen."""
    missing = [key for key in expected if key not in state]
    if missing:
        raise ModelError(f"adapter state: key {missing[0]!r} is missing ({len(missing)} missing in "
                         "all)")
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise ModelError(
            f"adapter state: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected in all)"
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != tuple(shape):
            raise ModelError(
                f"adapter state: {key!r} has shape {tuple(state[key].shape)}, "
                f"the model expects {tuple(shape)}"
            )


def load_adapter_state(model: PeftModel, state: Mapping[str, np.ndarray]) -> None:
    """Overwrite the adapter of `model` with `state`; checks every key and shape first.

    A refused state leaves the model untouched, so an institution that receives a payload for a
    different setup keeps a usable model and the error names the offending key.
    """
    expected = peft_state_dict(model)
    check_state_shapes({key: tuple(tensor.shape) for key, tensor in expected.items()}, state)
    tensors = {key: torch.from_numpy(np.asarray(state[key])).to(dtype=tensor.dtype,
                                                                device=tensor.device)
               for key, tensor in expected.items()}
    # Every key was checked against peft's own state dict, whose keys peft guarantees to load.
    set_peft_model_state_dict(model, tensors)


def state_nbytes(state: Mapping[str, np.ndarray]) -> int:
    """Payload size in bytes (array data only, as sent on the wire before framing)."""
    return sum(int(array.nbytes) for array in state.values())


def full_model_nbytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter, base and adapter: the cost of exchanging the whole model."""
    return sum(param.numel() * param.element_size() for param in model.parameters())


def to_array_record(state: Mapping[str, np.ndarray]) -> ArrayRecord:
    """A Flower ArrayRecord with the same keys in the same order.

    ArrayRecord takes named arrays only as `Array` objects; a plain dict of numpy arrays is not
    one of its accepted inputs (a list would lose the names).
    """
    return ArrayRecord({key: Array(np.ascontiguousarray(value)) for key, value in state.items()})


def from_array_record(record: ArrayRecord) -> AdapterState:
    """Named numpy arrays back from an ArrayRecord (key order as received)."""
    state: AdapterState = {}
    for key, array in record.items():
        try:
            state[key] = array.numpy()
        except TypeError:
            raise ModelError(
                f"adapter state: {key!r} is not a numpy array (stype {array.stype!r}); "
                "sealed payloads must be opened before loading"
            ) from None
    return state
