"""SecAgg+ (Bell et al., CCS 2020): the aggregator learns the weighted sum of the updates and
nothing else about any single one.

Protocol, one round (each arrow is one Flower message through the SuperLink):

1. Advertise: every institution creates two X25519 key pairs (cipher, mask) and sends the
   public halves. The server picks a random k-regular neighbour graph (`graph`) and sends each
   institution its neighbours' keys.
2. Share keys: each institution draws a self-mask seed b and Shamir-splits b and its mask
   private key among its neighbours and itself (`shamir`, threshold t); each neighbour's
   shares are AES-GCM encrypted under a key only the pair can derive (`agreement`). The
   server routes the ciphertexts.
3. Masked input: each institution encodes its update in fixed point (`encoding`), multiplies by
   its example count (the weight), appends the weight, and adds PRG(b) plus, for every
   neighbour that completed stage 2, +PRG(s_uv) or -PRG(s_uv) (`prg`), where s_uv is the pair's
   mask seed. Pairwise masks cancel in the sum.
4. Unmask: for each survivor the server collects t shares of b and removes PRG(b); for each
   neighbour that dropped before sending its vector it collects t shares of the mask private
   key, recomputes the pairwise seeds and removes the masks survivors added for it. Then it
   decodes the weighted mean (`SecAggServer.unmask`).

Threat model: the aggregator is honest but curious (it follows the protocol and tries to learn
from what it sees); Flower's SuperLink relay sees only public keys, AES-GCM ciphertexts and
masked vectors, which are uniformly random without the seeds. A survivor's update stays hidden
unless the server colludes with t of its neighbours (who could pool shares of its mask key) or
with all k of them (who together know every pairwise mask it added); with max_dropouts = 0,
t = k + 1, so the second case is the binding one. Active attacks by the server
or the relay (substituting advertised keys, lying about who dropped out) are out of scope: they
would need the advertised keys signed with the institutions' Ed25519 keys and SecAgg's
consistency round.

Dropout rule: with degree k and `secure_aggregation.max_dropouts` = d, the threshold is
t = k + 1 - d (`SecureAggregationConfig.threshold`). Institutions missing at stage 1 or 2 are
simply out of the round. An institution that completed stage 2 but sent no masked vector is
"dropped": its update is excluded and its pairwise masks are removed with its rebuilt mask key.
An institution that sent its masked vector is a survivor and its update is in the result even
if it vanishes before stage 4. The round completes as long as every survivor's seed and every
dropped node's mask key still has t live holders who answer stage 4; otherwise the server
raises `RoundAborted` naming the node and "k of t shares". The server never requests both
secrets of one node, and a client never releases both.
"""

from fedpeft.common.crypto.secagg.client import MaskedInput, SecAggClient
from fedpeft.common.crypto.secagg.encoding import decode_mean, encode, quantization_bound
from fedpeft.common.crypto.secagg.graph import neighbour_graph
from fedpeft.common.crypto.secagg.params import AdvertisedKeys, SecAggParams
from fedpeft.common.crypto.secagg.prg import expand_mask
from fedpeft.common.crypto.secagg.server import AggregateResult, SecAggServer
from fedpeft.common.crypto.secagg.shamir import combine, split

__all__ = [
    "AdvertisedKeys",
    "AggregateResult",
    "MaskedInput",
    "SecAggClient",
    "SecAggParams",
    "SecAggServer",
    "combine",
    "decode_mean",
    "encode",
    "expand_mask",
    "neighbour_graph",
    "quantization_bound",
    "split",
]
