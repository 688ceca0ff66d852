"""SecAgg+ (Bell et al., CCS 2020): the aggregator learns the weighted sum of the updates and
nothing else about any single one.

Protocol, one round (each arrow is one Flower message through the SuperLink):

1. Advertise: every institution creates two X25519 key pairs (cipher, mask) and sends the
   public halves, signed with its enrolled Ed25519 key and bound to the round's parameters.
   The server draws a public graph seed that fixes a random k-regular neighbour graph
   (`graph`) and sends each institution its neighbours' signed keys, which it verifies
   against its own roster and recomputed graph.
2. Share keys: each institution draws a self-mask seed b and Shamir-splits b and its mask
   private key among its neighbours and itself (`shamir`, threshold t); each neighbour's
   shares are AES-GCM encrypted under a key only the pair can derive (`agreement`). The
   server routes the ciphertexts.
3. Masked input: each institution encodes its update in fixed point (`encoding`), multiplies by
   its example count (the weight), appends the weight, and adds PRG(b) plus, for every
   neighbour that completed stage 2, +PRG(s_uv) or -PRG(s_uv) (`prg`), where s_uv is the pair's
   mask seed. Pairwise masks cancel in the sum.
4. Consistency check: the server sends every survivor the survivor list; each signs it and
   checks that `threshold` of its share holders signed the same list (`authentication`).
5. Unmask: for each survivor the server collects t shares of b and removes PRG(b); for each
   neighbour that dropped before sending its vector it collects t shares of the mask private
   key, recomputes the pairwise seeds and removes the masks survivors added for it. Then it
   decodes the weighted mean (`SecAggServer.unmask`).

Threat model: the aggregator (ServerApp, SuperLink relay and its database) may be malicious.
It sees public keys, AES-GCM ciphertexts and masked vectors, which are uniformly random without
the seeds. It cannot substitute advertised keys (they are signed with enrolled keys the
institutions check against their own roster), cannot invent neighbours or institutions
(graph recomputed from the public seed, names from the roster), cannot lower the threshold to
half of the holders or below degree + 1 - max_dropouts (refused by `SecAggParams`), and cannot
tell different dropout stories to different holders (signed consistency check, threshold >
half of the holders). A survivor's update stays hidden unless the server colludes with t of its
neighbours (who could pool shares of its mask key) or with all k of them (who together know
every pairwise mask it added). What remains: the roster is as trustworthy as the enrolment
that produced it (see docs/secure_aggregation.md), a malicious server can still make a round
fail or give a wrong aggregate (integrity is not protected), and without an identity (runs
that exchange unsealed updates) the server is only assumed honest-but-curious.

Dropout rule: with degree k and `secure_aggregation.max_dropouts` = d, the threshold is t = k +
1 - d (`SecureAggregationConfig.threshold`). Institutions missing at stage 1 or 2 are out of
the round and count as dropouts. An institution that completed stage 2 but sent no masked
vector is "dropped": its update is excluded and its pairwise masks are removed with its rebuilt
mask key. An institution that sent its masked vector is a survivor and its update is in the
result even if it vanishes before stage 4. The round completes as long as every survivor's seed
and every dropped node's mask key still has t live holders who answer stage 4; otherwise the
server raises `RoundAborted` naming the node and "k of t shares". More than max_dropouts
missing institutions in total, at any stage, also abort the round (server) and are refused
(client). A client never releases both secrets of one node.
"""

from fedpeft.common.crypto.secagg.authentication import Identity, SignedKeys
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
    "Identity",
    "MaskedInput",
    "SecAggClient",
    "SecAggParams",
    "SecAggServer",
    "SignedKeys",
    "combine",
    "decode_mean",
    "encode",
    "expand_mask",
    "neighbour_graph",
    "quantization_bound",
    "split",
]
