"""On-disk episode store: one HDF5 file per episode plus an ``index.json``.

The package is split by job; this module is its public face:

* :mod:`~corft_envs.episode_store.spaces`: Gymnasium spaces as JSON, and how two spaces differ;
* :mod:`~corft_envs.episode_store.format`: the layout, the metadata records, the errors, reading one file;
* :mod:`~corft_envs.episode_store.writer`: :class:`EpisodeWriter` and atomic episode files;
* :mod:`~corft_envs.episode_store.reader`: :class:`EpisodeDataset`, one store read lazily, and
  :class:`EpisodeSource`, what it shares with :class:`ConcatEpisodeDataset`;
* :mod:`~corft_envs.episode_store.concat`: :class:`ConcatEpisodeDataset`, several stores read as one.
"""

from corft_envs.episode_store.concat import ConcatEpisodeDataset, open_episodes, store_signatures
from corft_envs.episode_store.format import (
    FORMAT_VERSION,
    INDEX_NAME,
    DatasetError,
    DatasetMeta,
    DiskFullError,
    EpisodeData,
    EpisodeRecord,
    StoreIndex,
    episode_files,
    project_version,
    read_episode_metadata,
    read_index,
)
from corft_envs.episode_store.reader import Episode, EpisodeDataset, EpisodeSource, LazyArray
from corft_envs.episode_store.spaces import space_differences, space_from_json, space_to_json
from corft_envs.episode_store.writer import EpisodeWriter, episode_file_image, write_episode_file

__all__ = [
    "FORMAT_VERSION",
    "INDEX_NAME",
    "ConcatEpisodeDataset",
    "DatasetError",
    "DatasetMeta",
    "DiskFullError",
    "Episode",
    "EpisodeData",
    "EpisodeDataset",
    "EpisodeRecord",
    "EpisodeSource",
    "EpisodeWriter",
    "LazyArray",
    "StoreIndex",
    "episode_file_image",
    "episode_files",
    "open_episodes",
    "project_version",
    "read_episode_metadata",
    "read_index",
    "space_differences",
    "space_from_json",
    "space_to_json",
    "store_signatures",
    "write_episode_file",
]
