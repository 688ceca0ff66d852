"""The institution's protections, one stage each, applied in order to the outgoing update.

`chain.chain` builds the stages a round's run asks for; `rounds.train` runs them after local
training. Mirrors the server's strategy wrappers (`fedpeft.server.strategies`). Nothing is
imported here, so that a secure-aggregation message's handler (`masking`) loads only what it
needs, not the training stack.
"""
