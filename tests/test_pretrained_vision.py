"""The pretrained ImageNet MobileNetV2 tower, its feature cache, and GroupNorm in from-scratch towers."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from corft_algos import CORFT, SFT
from corft_algos.feature_cache import CACHE_FOLDER, FeatureCache
from corft_algos.networks.pretrained import (IMAGENET_MEAN, IMAGENET_STD, MobileNetV2, PretrainedTower,
                                             load_imagenet_mobilenet_v2, mobilenet_v2_weights_path)
from corft_algos.networks.vision import build_vision_model
from corft_envs.episode_store import open_episodes

pytestmark = pytest.mark.integration

#: A small policy on the pretrained tower: 7 MobileNetV2 blocks (32 channels, stride 8).
MOBILENET_POLICY = {"d_model": 32, "vision_arch": "mobilenet_v2", "vision_config": {"layers": 7},
                    "vision_pooling": "spatial_softmax", "vision_tokens": 2, "fusion_layers": 1, "heads": 2,
                    "critic_layers": 1}


def test_imagenet_weights_load_offline_with_every_key_matched():
    model = load_imagenet_mobilenet_v2()
    saved = torch.load(mobilenet_v2_weights_path(), map_location="cpu", weights_only=True)
    own = model.state_dict()
    assert set(own) == set(saved) and len(saved) > 300
    for name in ("features.0.0.weight", "features.13.conv.1.0.weight", "classifier.1.bias"):
        torch.testing.assert_close(own[name], saved[name])
    assert not model.training


def test_a_corrupt_weights_file_or_a_missing_key_is_refused(tmp_path):
    source = mobilenet_v2_weights_path()
    corrupt = tmp_path / source.name
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the b0353104 in its name"):
        load_imagenet_mobilenet_v2(corrupt)
    state = torch.load(source, map_location="cpu", weights_only=True)
    del state["features.3.conv.0.1.running_var"]
    with pytest.raises(RuntimeError, match="Missing key"):
        MobileNetV2().load_state_dict(state, strict=True)


def test_tower_normalises_pixels_as_imagenet_and_stays_frozen():
    tower = PretrainedTower(layers=1)
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    images = (pixels + 1) / 2
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = tower.features((images - mean) / std)
    torch.testing.assert_close(tower(pixels).last_hidden_state, expected)
    assert tower(pixels).last_hidden_state.shape == (2, 32, 16, 16)
    tower.train()
    assert not tower.training and not any(p.requires_grad for p in tower.parameters())
    assert PretrainedTower(layers=14)(pixels).last_hidden_state.shape == (2, 96, 2, 2)
    with pytest.raises(ValueError, match="layers must be in 1..19, got 20"):
        PretrainedTower(layers=20)


def test_bad_pretrained_tower_arguments_are_refused():
    with pytest.raises(ValueError, match="vision_config has no field 'hidden_size' for vision_arch='mobilenet_v2'"):
        build_vision_model(None, 32, {"hidden_size": 8}, vision_arch="mobilenet_v2")
    with pytest.raises(ValueError, match="freeze_vision=True needs a pretrained tower"):
        build_vision_model(None, 32, None, vision_arch="resnet", freeze=True)
    with pytest.raises(ValueError, match="vision_norm='layer' is unknown"):
        build_vision_model(None, 32, None, vision_arch="resnet", norm="layer")


def test_from_scratch_resnet_uses_group_norm_the_same_in_training_and_evaluation():
    tower = build_vision_model(None, 32, {"embedding_size": 8, "hidden_sizes": [8, 16]}, vision_arch="resnet")
    norms = [m for m in tower.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))]
    assert norms and all(isinstance(m, torch.nn.GroupNorm) for m in norms)
    images = torch.rand(3, 3, 32, 32)
    train_out = tower.train()(pixel_values=images).last_hidden_state
    eval_out = tower.eval()(pixel_values=images).last_hidden_state
    torch.testing.assert_close(train_out, eval_out)
    batch_norm = build_vision_model(None, 32, {"embedding_size": 8, "hidden_sizes": [8, 16]}, vision_arch="resnet",
                                    norm="batch")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in batch_norm.modules())


@pytest.fixture
def store_copy(tiny_dataset, tmp_path):
    """A private copy of the tiny store, free to modify."""
    return shutil.copytree(tiny_dataset, tmp_path / "store")


def _count_tower_calls(policy):
    calls = []
    policy.vision.model.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_feature_cache_holds_the_towers_features_and_is_reused(store_copy):
    model = SFT(dataset=store_copy, chunk_size=4, batch_size=4, seed=0, policy_kwargs=MOBILENET_POLICY)
    frames = model.dataset.frames
    cache = model.feature_cache
    assert cache.features.shape == (frames.num_frames, 3, 2, 32, 4, 4) and cache.features.dtype == torch.float16
    indices = np.array([0, 5, frames.num_frames - 1])
    for camera, key in enumerate(model.policy.image_keys):
        images = torch.from_numpy(frames.get(indices)[key]).permute(0, 3, 1, 2).float() / 255.0
        expected = model.policy.vision_features(images)
        torch.testing.assert_close(cache.features[indices, 0, camera].float(), expected, atol=2e-2, rtol=1e-2)
        assert not torch.equal(cache.features[indices, 1, camera], cache.features[indices, 0, camera])
    files = list((store_copy / CACHE_FOLDER).glob("*.npy"))
    assert len(files) == 1

    again = SFT(dataset=store_copy, chunk_size=4, batch_size=4, seed=1, policy_kwargs=MOBILENET_POLICY)
    calls = _count_tower_calls(again.policy)
    torch.testing.assert_close(again.feature_cache.features, cache.features)
    assert calls == [] and list((store_copy / CACHE_FOLDER).glob("*.npy")) == files


def test_feature_cache_is_rebuilt_when_the_store_or_the_encoder_changes(store_copy):
    model = SFT(dataset=store_copy, chunk_size=4, batch_size=4, seed=0, policy_kwargs=MOBILENET_POLICY)
    before = model.feature_cache.features.clone()
    old_file = next((store_copy / CACHE_FOLDER).glob("*.npy"))
    model.dataset.frames.dataset.close()

    first_episode = sorted(store_copy.glob("*.h5"))[0]
    with h5py.File(first_episode, "r+") as handle:
        key = model.policy.image_keys[0]
        images = handle[f"observations/{key}"]
        images[0] = 255 - images[0]
    changed = SFT(dataset=store_copy, chunk_size=4, batch_size=4, seed=0, policy_kwargs=MOBILENET_POLICY)
    after = changed.feature_cache.features
    assert not old_file.exists(), "the cache of the store's old content must be removed"
    assert not torch.equal(after[0, 0, 0], before[0, 0, 0])
    torch.testing.assert_close(after[1:], before[1:])

    other = SFT(dataset=store_copy, chunk_size=4, batch_size=4, seed=0,
                policy_kwargs={**MOBILENET_POLICY, "vision_config": {"layers": 4}})
    assert other.feature_cache.features.shape[3] == 24
    metas = [json.loads(p.read_text()) for p in (store_copy / CACHE_FOLDER).glob("*.json")]
    assert len(metas) == 2 and len({meta["encoder"] for meta in metas}) == 2


def test_stores_read_together_keep_their_own_caches_and_reuse_them(store_copy, tiny_dataset, tmp_path):
    other = shutil.copytree(tiny_dataset, tmp_path / "other")
    with h5py.File(sorted(other.glob("*.h5"))[0], "r+") as handle:
        images = handle["observations/image_front"]
        images[0] = 255 - images[0]
    alone = SFT(dataset=store_copy, chunk_size=4, batch_size=4, seed=0, policy_kwargs=MOBILENET_POLICY)
    own = alone.feature_cache.features
    own_files = sorted((store_copy / CACHE_FOLDER).glob("*.npy"))

    together = SFT(dataset=open_episodes([store_copy, other]), chunk_size=4, batch_size=64, seed=0,
                   store_mix=(1, 3), policy_kwargs=MOBILENET_POLICY)
    calls = _count_tower_calls(together.policy)
    features = together.feature_cache.features
    frames_of_other = together.dataset.frames.num_frames - len(own)
    # one probe of the feature shape, then batches of 64 frames x 3 views x 2 cameras of the other store only
    assert len(calls) == 1 + -(-frames_of_other // 64) * 3 * 2
    torch.testing.assert_close(features[:len(own)], own)
    assert not torch.equal(features[len(own)], own[0]), "the changed first frame has its own features"
    assert sorted((store_copy / CACHE_FOLDER).glob("*.npy")) == own_files, "the first store's cache is kept"
    assert len(list((other / CACHE_FOLDER).glob("*.npy"))) == 1

    drawn = torch.cat([together.next_batch(with_observations=False)["frame"] for _ in range(40)])
    assert (drawn >= len(own)).float().mean().item() == pytest.approx(0.75, abs=0.05)
    together.learn(2)
    together.save(tmp_path / "model.zip")
    assert SFT.load(tmp_path / "model.zip").store_mix == [1.0, 3.0]


def test_sft_on_cached_features_trains_the_heads_only_and_overfits(tiny_dataset, observation, tmp_path):
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=16, seed=0, learning_rate=3e-3,
                image_augmentation=False, policy_kwargs=MOBILENET_POLICY)
    tower = {name: value.clone() for name, value in model.policy.vision.model.state_dict().items()}
    batch = model.next_batch()
    first = model.imitation_loss(batch).item()
    calls = _count_tower_calls(model.policy)
    model.learn(150)
    assert calls == [], "training on cached features must not run the tower"
    last = model.imitation_loss(batch).item()
    assert last < 0.3 * first, (first, last)
    for name, value in model.policy.vision.model.state_dict().items():
        torch.testing.assert_close(value, tower[name])

    model.save(tmp_path / "model.zip")
    loaded = SFT.load(tmp_path / "model.zip")
    np.testing.assert_allclose(loaded.predict(observation)[0], model.predict(observation)[0], atol=1e-5)


def test_cached_and_uncached_features_give_the_same_contexts(tiny_dataset):
    cached = CORFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, il_steps=0,
                   policy_kwargs=MOBILENET_POLICY)
    uncached = CORFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, il_steps=0, feature_cache_views=0,
                     policy_kwargs=MOBILENET_POLICY)
    uncached.policy.load_state_dict(cached.policy.state_dict())
    torch.testing.assert_close(cached.frame_contexts(), uncached.frame_contexts(), atol=2e-2, rtol=1e-2)
    assert uncached.feature_cache is None
    with pytest.raises(ValueError, match="feature_cache_views must be an int >= 0"):
        SFT(dataset=tiny_dataset, feature_cache_views=-1, policy_kwargs=MOBILENET_POLICY)


def test_a_cache_needs_a_frozen_tower(tiny_dataset):
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0,
                policy_kwargs={**MOBILENET_POLICY, "freeze_vision": False})
    assert model.feature_cache is None and any(p.requires_grad for p in model.policy.vision.model.parameters())
    with pytest.raises(ValueError, match="a feature cache needs a frozen vision tower"):
        FeatureCache.build_or_load(model.dataset.frames, model.policy)


def test_language_film_on_a_frozen_tower_modulates_the_projected_map_and_keeps_the_cache_valid(tiny_dataset):
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, policy_kwargs=MOBILENET_POLICY)
    encoder = model.policy.vision
    assert model.policy.language_film, "on by default for a frozen tower"
    assert encoder.film is None and encoder.output_film is not None
    off = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0,
              policy_kwargs={**MOBILENET_POLICY, "language_film": False}).policy
    assert not off.language_film and off.vision.output_film is None
    images = torch.rand(2, 3, 32, 32)
    hidden = encoder.tower_features(images)
    condition = torch.randn(2, 32)
    torch.testing.assert_close(encoder.pool_features(hidden, film=condition), encoder.pool_features(hidden))
    torch.nn.init.normal_(encoder.output_film.weight)
    one, other = encoder.pool_features(hidden, film=condition), encoder.pool_features(hidden, film=-condition)
    assert not torch.allclose(one, other)
    torch.testing.assert_close(encoder(images, film=condition), one)  # images or cached features: the same
    # By hand: the projected map, scaled and shifted per channel, then the keypoints.
    gamma, beta = encoder.output_film(condition).chunk(2, dim=-1)
    projected = encoder.projection(hidden.permute(0, 2, 3, 1)) * (1 + gamma[:, None, None]) + beta[:, None, None]
    keypoints = encoder.keypoints(projected.permute(0, 3, 1, 2)).flatten(1)
    expected = encoder.norm(encoder.keypoint_tokens(keypoints).view(2, encoder.tokens, encoder.d_model))
    torch.testing.assert_close(one, expected)
    model.learn(2)
    assert model.feature_cache is not None
