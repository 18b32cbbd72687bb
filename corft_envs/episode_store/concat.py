"""Several episode stores read as one (:class:`ConcatEpisodeDataset`), and what identifies a store's episodes."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Sequence

import numpy as np

from corft_envs.episode_store.format import DatasetError, EpisodeRecord
from corft_envs.episode_store.reader import Episode, EpisodeDataset, EpisodeSource
from corft_envs.episode_store.spaces import observation_action_differences


class ConcatEpisodeDataset(EpisodeSource):
    """Several stores with the same spaces read as one, e.g. other tasks' demos to pretrain a base policy.

    Episodes are numbered store after store. ``root``, ``meta``, ``env_id`` and
    ``env_kwargs`` are the first store's (``roots`` lists them all); everything
    per episode (lengths, instructions, successes, ...) covers every store.

    :param roots: store directories, at least one.
    :raises DatasetError: if a store cannot be read, or its spaces differ from the first store's.
    """

    def __init__(self, roots: Sequence[str | os.PathLike[str]], *, validate: bool = True,
                 max_open_files: int = 32) -> None:
        if not roots:
            raise DatasetError("ConcatEpisodeDataset needs at least one store directory")
        parts = [EpisodeDataset(root, validate=validate, max_open_files=max_open_files) for root in roots]
        first = parts[0]
        for part in parts[1:]:
            problems = observation_action_differences(first, part)
            if problems:
                raise DatasetError(f"{part.root} cannot be read with {first.root}: " + "; ".join(problems)
                                   + " ('recorded' is the first store's); collect both with the same image size")
        super().__init__(first.root, first.meta)
        self._parts = parts
        self.roots = [part.root for part in parts]
        self._part_of = [(number, local) for number, part in enumerate(self.parts) for local in range(len(part))]

    @property
    def parts(self) -> list[EpisodeDataset]:
        """The stores read, in the order given."""
        return self._parts

    @property
    def records(self) -> tuple[EpisodeRecord, ...]:
        """Index records of every store's episodes, store after store."""
        return tuple(record for part in self.parts for record in part.records)

    @property
    def num_attempts(self) -> int:
        """Collection attempts made over all stores."""
        return sum(part.num_attempts for part in self.parts)

    @property
    def store_of_episode(self) -> np.ndarray:
        """``(N,)`` int64, the position in ``roots`` of each episode's store."""
        return np.array([number for number, _ in self._part_of], dtype=np.int64)

    def __getitem__(self, index: int) -> Episode:
        number, local = self._part_of[index]
        return self.parts[number][local]

    def close(self) -> None:
        """Close the files this process has open, in every store."""
        for part in self.parts:
            part.close()


def store_signatures(dataset: EpisodeSource) -> list[str]:
    """One digest per store read (``ConcatEpisodeDataset``'s in order) over what its index says of its
    episodes: the env id, and each episode's file, length, seed, instruction and outcome. Two folders
    with the same episodes have the same signature wherever they are; a store with other or more
    episodes has another. Read from the index only, so it is cheap for any store size."""
    signatures = []
    for store in dataset.parts:
        digest = hashlib.blake2b(digest_size=12)
        digest.update(json.dumps([store.env_id, [[r.file, r.length, r.seed, r.instruction, r.success]
                                                 for r in store.records]]).encode())
        signatures.append(digest.hexdigest())
    return signatures


def open_episodes(roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> EpisodeSource:
    """One store as :class:`EpisodeDataset`, several as :class:`ConcatEpisodeDataset`."""
    if isinstance(roots, (str, os.PathLike)):
        return EpisodeDataset(roots)
    return EpisodeDataset(roots[0]) if len(roots) == 1 else ConcatEpisodeDataset(roots)
