"""Everything that crosses the network between the aggregator and an institution.

Record and key names (`names`), sealed envelopes inside Flower messages (`envelopes`) and the
secure-aggregation records (`secagg`): the server and the client read and write a message
through these modules only, so the two halves cannot disagree on a name or a layout.
"""
