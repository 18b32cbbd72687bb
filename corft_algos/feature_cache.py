"""Features of a frozen vision tower, computed once per frame and stored beside the episode store.

With a frozen pretrained tower (:class:`~corft_algos.networks.pretrained.PretrainedTower`) the
tower's output for a frame never changes, so training need not run it at every step: the
features of every frame and camera, in ``views`` versions (view 0 the image itself, views
``1..V-1`` randomly shifted copies, DrQ's augmentation with a fixed draw per frame), are
computed once and training reads them, at the speed of the heads.

Each store has its own cache, in its own folder, so stores read together (the target task's
demos co-trained with a base policy's data) reuse the caches each already has. A cache file is
named by a key over everything its values depend on: the content of every episode file of the
store (BLAKE2b over the bytes, in order), the tower's weights and input size, the image keys,
the views and the shift. A changed store or tower gives another key, so stale features are
never served; when a store changes, the files built for its old content are deleted. Files are
written under a temporary name and renamed when complete.

Layout: ``<store>/.features/<key>.npy``, float16 ``(N_frames, views, cameras, *feature_shape)``,
and ``<key>.json`` with what the key covers.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm import tqdm

from corft_algos.augmentation import DEFAULT_PAD, random_offsets, shift_images
from corft_algos.data import FrameStore
from corft_envs.episode_store import Episode, EpisodeDataset

#: Sub-folder of a store that holds its feature caches.
CACHE_FOLDER = ".features"
_CHUNK_BYTES = 1 << 22


def store_fingerprint(episodes: Iterable[Episode]) -> str:
    """BLAKE2b of the bytes of every episode's file, in order (a store's content)."""
    digest = hashlib.blake2b(digest_size=16)
    for episode in episodes:
        with open(episode.path, "rb") as handle:
            while block := handle.read(_CHUNK_BYTES):
                digest.update(block)
    return digest.hexdigest()


def module_fingerprint(module: torch.nn.Module) -> str:
    """BLAKE2b of a module's class, parameter and buffer names, shapes and values."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheSpec:
    """What a cache's values depend on; its hash names the file."""

    store: str
    encoder: str
    image_keys: tuple[str, ...]
    image_size: int
    views: int
    pad: int
    seed: int

    @property
    def key(self) -> str:
        return hashlib.blake2b(json.dumps(asdict(self), sort_keys=True).encode(), digest_size=12).hexdigest()


class FeatureCache:
    """Cached tower features of every frame: ``features[frame, view, camera]``.

    :param features: ``(N_frames, views, cameras, *feature_shape)`` float16.
    :param image_keys: the camera keys, in the order of the camera axis.
    """

    def __init__(self, features: np.ndarray, image_keys: tuple[str, ...]) -> None:
        self.features = torch.from_numpy(np.ascontiguousarray(features))
        self.image_keys = tuple(image_keys)

    @property
    def views(self) -> int:
        return int(self.features.shape[1])

    def get(self, frames: torch.Tensor, views: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """Per camera key, the features ``(B, *feature_shape)`` (float32, on ``device``) of ``frames[i]`` in
        view ``views[i]``."""
        selected = self.features[frames.cpu(), views.cpu()]  # (B, cameras, *feature_shape)
        return {key: selected[:, camera].to(device, torch.float32) for camera, key in enumerate(self.image_keys)}

    @classmethod
    def build_or_load(cls, frames: FrameStore, policy: Any, views: int = 3, pad: int = DEFAULT_PAD,
                      seed: int = 0, batch_size: int = 64, progress: bool = True) -> FeatureCache:
        """The cache of ``policy``'s frozen tower over ``frames``: each store's part read from
        ``<store>/.features`` when a file with the same key is there, else computed (and written there).

        :param frames: the training frames, of one store or several read as one.
        :param policy: a :class:`~corft_algos.policies.VLAPolicy` whose tower is frozen.
        :param views: versions of each frame: the image itself, then ``views - 1`` shifted copies.
        :param pad: the shift's range in pixels (:mod:`corft_algos.augmentation`).
        :param seed: seed of the shifts.
        :param batch_size: frames per forward pass.
        :param progress: show a progress bar while computing.
        :raises ValueError: if the tower is not frozen or ``views < 1``.
        """
        if not policy.vision_frozen:
            raise ValueError("a feature cache needs a frozen vision tower (vision_arch='mobilenet_v2', "
                             "freeze_vision=True)")
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        image_keys = tuple(policy.image_keys)
        image_size = int(frames.observation_space[image_keys[0]].shape[0])
        encoder = module_fingerprint(policy.vision.model)
        parts: list[np.ndarray] = []
        first_episode = 0
        for store in frames.dataset.parts:
            episodes = range(first_episode, first_episode + len(store))
            first_episode += len(store)
            spec = CacheSpec(store=store_fingerprint(store), encoder=encoder, image_keys=image_keys,
                             image_size=image_size, views=int(views), pad=int(pad), seed=int(seed))
            parts.append(_store_features(frames, episodes, store, policy, spec, batch_size, progress))
        return cls(parts[0] if len(parts) == 1 else np.concatenate(parts), image_keys)


def _store_features(frames: FrameStore, episodes: range, store: EpisodeDataset, policy: Any, spec: CacheSpec,
                    batch_size: int, progress: bool) -> np.ndarray:
    """The features of one store's frames (``frames``' episodes ``episodes``), read from its cache folder
    or computed and written there."""
    folder = Path(store.root) / CACHE_FOLDER
    path = folder / f"{spec.key}.npy"
    if path.is_file():
        return np.load(path)
    start, stop = int(frames.frame_offsets[episodes.start]), int(frames.frame_offsets[episodes.stop])
    features = _compute(frames, start, stop, policy, spec, batch_size, progress)
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder, spec.store)
    # Per-process temporary names: trainings started together on one store may build the same cache at once.
    temporary = folder / f".{spec.key}.{os.getpid()}.npy.tmp"
    with open(temporary, "wb") as handle:
        np.save(handle, features)
    meta = folder / f".{spec.key}.{os.getpid()}.json.tmp"
    meta.write_text(json.dumps({**asdict(spec), "shape": list(features.shape)}))
    os.replace(meta, folder / f"{spec.key}.json")
    os.replace(temporary, path)
    return features


@torch.no_grad()
def _compute(frames: FrameStore, start: int, stop: int, policy: Any, spec: CacheSpec, batch_size: int,
             progress: bool) -> np.ndarray:
    """Features of frames ``start..stop-1`` in every view, ``(stop - start, views, cameras, *feature_shape)``."""
    count = stop - start
    generator = torch.Generator().manual_seed(spec.seed)
    offsets = random_offsets(count * spec.views * len(spec.image_keys), spec.pad, generator)
    offsets = offsets.view(count, spec.views, len(spec.image_keys), 2)
    device = policy.device
    size = spec.image_size
    feature_shape = policy.vision_features(torch.zeros(1, 3, size, size, device=device)).shape[1:]
    output = np.empty((count, spec.views, len(spec.image_keys), *feature_shape), np.float16)
    bar = tqdm(total=count, unit="frame", desc="feature cache", disable=not progress, dynamic_ncols=True)
    for first in range(0, count, batch_size):
        rows = np.arange(first, min(first + batch_size, count))
        observation = frames.get(rows + start)
        for camera, key in enumerate(spec.image_keys):
            images = torch.from_numpy(observation[key]).to(device).permute(0, 3, 1, 2).float() / 255.0
            for view in range(spec.views):
                shifted = images if view == 0 else shift_images(
                    images, offsets[rows, view, camera].to(device), spec.pad)
                output[rows, view, camera] = policy.vision_features(shifted).to(torch.float16).cpu().numpy()
        bar.update(len(rows))
    bar.close()
    return output


def _remove_stale(folder: Path, store: str) -> None:
    """Delete the caches in ``folder`` built for another content of the store (never to be served again)."""
    for meta_path in folder.glob("*.json"):
        try:
            stale = json.loads(meta_path.read_text()).get("store") != store
        except (OSError, ValueError):
            stale = True
        if stale:
            meta_path.with_suffix(".npy").unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
