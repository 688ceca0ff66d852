"""Operator tooling of a deployed federation: its files, the SuperLink, SuperNodes, Flower's CLI.

Nothing here runs inside a round: these modules create credentials, start Flower's servers
and submit runs. The round itself is `fedpeft.server` (ServerApp) and `fedpeft.client`
(ClientApp).
"""
