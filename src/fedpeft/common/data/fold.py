"""Fit the built-in dataset's banks to the number of institutions a user asked for.

The built-in data comes from five banks, and by default each bank is one institution. A user
who types `fedpeft simulate --clients 3` asks for three institutions, and the demo is only
worth running if they stay as different from each other as the banks are: so banks are merged
(3 institutions: banks 1+4, 2+5, 3) or split (8 institutions: some banks become two), never
reshuffled into identical iid shards.
"""

from __future__ import annotations

import numpy as np


def fold_sites(
    partitions: list[np.ndarray], names: list[str], count: int, seed: int
) -> tuple[list[np.ndarray], list[str]]:
    """`count` institutions made of whole sites (count < sites) or of site shares (count > sites).

    Merging is round-robin (institution i gets sites i, i+count, ...) so sizes stay close;
    splitting gives site s `count // sites` (+1 for the first `count % sites`) seeded shares.
    """
    sites = len(partitions)
    if count == sites:
        return partitions, names
    if count < sites:
        groups = [list(range(first, sites, count)) for first in range(count)]
        return (
            [np.sort(np.concatenate([partitions[s] for s in group])) for group in groups],
            [" + ".join(names[s] for s in group) for group in groups],
        )
    rng = np.random.default_rng(seed)
    folded: list[np.ndarray] = []
    folded_names: list[str] = []
    for site, (rows, name) in enumerate(zip(partitions, names, strict=True)):
        shares = count // sites + (1 if site < count % sites else 0)
        for index, part in enumerate(np.array_split(rng.permutation(rows), shares)):
            folded.append(np.sort(part))
            folded_names.append(name if shares == 1 else f"{name} ({index + 1}/{shares})")
    return folded, folded_names
