"""An episode store as a Minari dataset, and back.

The dataset is written with Minari's own storage (HDF5, images as raw arrays: ``jpeg_encoding=False``), so
everything comes back exactly. An episode of ``T`` steps is a Minari episode of ``T`` steps: its ``T + 1``
observations (the store's keys), actions, rewards, ``terminations`` and ``truncations`` (true at the last step
when the episode was terminated / truncated), its seed, and ``infos["is_success"]`` (``T + 1`` values: the
reset's ``False``, then each step's). Each episode's metadata holds its ``instruction``. The dataset's metadata
holds the env spec (so ``dataset.recover_environment()`` makes the env) and, under ``corft_index``, the store's
``index.json`` (env arguments, collection settings, every attempt). A dataset recorded elsewhere (no
``corft_index``) is imported by :mod:`~corft_envs.interop.minari_foreign`.

``out`` is a dataset folder as Minari keeps one under its datasets root: ``out/data/metadata.json`` and
``out/data/main_data.hdf5``. Open it with ``minari.MinariDataset(out / "data")``, or move it to
``$MINARI_DATASETS_PATH/<dataset id>`` for ``minari.load_dataset(<dataset id>)``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from corft_envs.episode_store import (
    DatasetError,
    DatasetMeta,
    EpisodeData,
    EpisodeDataset,
    StoreIndex,
    read_index,
    space_differences,
)
from corft_envs.interop.common import existing_folder, index_from_json, new_output, require, write_store
from corft_envs.interop.minari_foreign import import_foreign_minari

#: The dataset metadata key of the store's index.
CORFT_INDEX = "corft_index"
#: Minari's file of dataset metadata, in the data folder.
METADATA = "metadata.json"


def default_dataset_id(store: Path, env_id: str) -> str:
    """``corft/<env name>/<store folder name>-v0``, e.g. ``corft/PickPlace/demos-v0`` for ``corft/PickPlace-v0``
    collected into ``demos``."""
    env_name = re.sub(r"-v\d+$", "", env_id.split("/")[-1])
    return "/".join(re.sub(r"[^-\w]", "_", part) for part in ("corft", env_name, store.resolve().name)) + "-v0"


def export_minari(store: Path, out: Path, dataset_id: str | None = None) -> None:
    """Write the episode store ``store`` as a Minari dataset folder ``out`` (new or empty).

    :param dataset_id: the Minari dataset id (default: :func:`default_dataset_id`).
    :raises DatasetError: if the store cannot be read, or ``out`` holds something.
    :raises ImportError: without ``minari`` (``pip install 'corft[interop]'``).
    """
    minari = require("minari")
    storage_module = require("minari.dataset.minari_storage")
    index = read_index(store)
    meta = index.meta
    with EpisodeDataset(store) as dataset, new_output(out):
        storage = storage_module.MinariStorage.new(
            out / "data", observation_space=meta.observation_space, action_space=meta.action_space,
            env_spec=_env_spec(meta), data_format="hdf5", jpeg_encoding=False)
        storage.update_metadata({
            "dataset_id": dataset_id or default_dataset_id(store, meta.env_id),
            "minari_version": minari.__version__,
            "algorithm_name": "scripted expert, teleoperation or a policy (corft collect)",
            "description": f"Episodes of {meta.env_id} exported from a corft episode store.",
            CORFT_INDEX: index.to_json(),
        })
        for number, episode in enumerate(dataset):
            storage.update_episodes([_buffer(minari, number, episode.load())])
        storage.update_episode_metadata([{"instruction": text} for text in dataset.instructions])


def import_minari(source: Path, out: Path, image_size: int | None = None, demos_succeed: bool = False,
                  instruction: str | None = None) -> None:
    """Write the Minari dataset ``source`` (its folder, or the ``data`` folder in it) as an episode store at
    ``out`` (new or empty).

    A dataset :func:`export_minari` wrote comes back as the store it was. One recorded elsewhere is converted by
    :func:`~corft_envs.interop.minari_foreign.import_foreign_minari`, which takes ``image_size``,
    ``demos_succeed`` and ``instruction``; for a corft export these must be left unset.

    :raises DatasetError: if ``source`` is missing, its spaces differ from those its corft index records, or
        ``out`` holds something.
    :raises ImportError: without ``minari`` (``pip install 'corft[interop]'``).
    """
    minari = require("minari")
    existing_folder(source, "a Minari dataset (data/metadata.json)")
    data_path = source / "data" if (source / "data" / METADATA).is_file() else source
    if not (data_path / METADATA).is_file():
        raise DatasetError(f"{source}: no {METADATA} here nor in {source / 'data'}; give a Minari dataset's folder")
    dataset = minari.MinariDataset(data_path)
    metadata = dataset.storage.metadata
    if CORFT_INDEX not in metadata:
        import_foreign_minari(dataset, out, image_size=image_size, demos_succeed=demos_succeed,
                              instruction=instruction or "")
        return
    if image_size is not None or demos_succeed or instruction is not None:
        raise DatasetError(f"{source} was written by `corft export` and comes back as the store it was: drop "
                           "--image-size, --demos-succeed and --instruction, which convert datasets recorded "
                           "elsewhere")
    index = index_from_json(metadata[CORFT_INDEX], str(data_path / METADATA))
    problems = (space_differences(index.meta.observation_space, dataset.observation_space, "observation_space")
                + space_differences(index.meta.action_space, dataset.action_space, "action_space"))
    if problems:
        raise DatasetError(f"{data_path}: the dataset does not hold what its corft index records "
                           "('recorded' is the index): " + "; ".join(problems))
    if dataset.total_episodes != len(index.episodes):
        raise DatasetError(f"{data_path}: {dataset.total_episodes} episodes, but its corft index lists "
                           f"{len(index.episodes)}")
    with new_output(out):
        write_store(out, index, _episodes(dataset, index))


def _env_spec(meta: DatasetMeta) -> gym.envs.registration.EnvSpec | None:
    """The spec of the env the store was collected in, with its arguments; ``None`` for an id not registered."""
    try:
        spec = gym.spec(meta.env_id)
    except gym.error.Error:
        return None
    return dataclasses.replace(spec, kwargs={**spec.kwargs, **meta.env_kwargs})


def _buffer(minari: Any, number: int, data: EpisodeData) -> Any:
    """One episode as Minari's ``EpisodeBuffer``."""
    ends = np.arange(data.length) == data.length - 1
    return minari.data_collector.EpisodeBuffer(
        id=number, seed=data.seed, observations=data.observations, actions=data.actions, rewards=data.rewards,
        terminations=ends & data.terminated, truncations=ends & data.truncated,
        infos={"is_success": np.concatenate([[False], data.is_success])})


def _episodes(dataset: Any, index: StoreIndex) -> Iterator[EpisodeData]:
    """The dataset's episodes, in order."""
    for episode, record in zip(dataset.iterate_episodes(), index.episodes):
        yield EpisodeData(observations=dict(episode.observations), actions=np.asarray(episode.actions),
                          rewards=episode.rewards, is_success=np.asarray(episode.infos["is_success"])[1:],
                          instruction=record.instruction, seed=record.seed,
                          terminated=bool(episode.terminations[-1]), truncated=bool(episode.truncations[-1]))
