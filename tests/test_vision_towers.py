"""Vision towers (``vision_arch``), language-steered pooling, FiLM in the ResNet tower, centred instructions and
the SFT lr schedule."""

import math

import numpy as np
import pytest
import torch

from corft_algos import CORFT, SFT
from corft_algos.networks.vision import SpatialSoftmax, VisionEncoder, build_vision_model

RESNET_POLICY = {
    "d_model": 32,
    "vision_pooling": "attention",
    "vision_arch": "resnet",
    "vision_config": {"embedding_size": 8, "hidden_sizes": [8, 16]},
    "language_pooling": True,
    "center_instructions": True,
    "fusion_layers": 1,
    "heads": 2,
    "critic_layers": 1,
}


def test_resnet_tower_gives_a_feature_map_with_position_embeddings():
    tower = build_vision_model(None, 32, {"embedding_size": 8, "hidden_sizes": [8, 16]}, vision_arch="resnet")
    encoder = VisionEncoder(tower, image_size=32, d_model=24, tokens=3, heads=2)
    assert encoder.positions is not None and encoder.positions.shape == (4 * 4, 24)  # 32 px / 8
    assert encoder(torch.rand(2, 3, 32, 32)).shape == (2, 3, 24)


def test_siglip_tower_has_no_cell_position_embedding():
    tower = build_vision_model(None, 32, {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                          "num_attention_heads": 2})
    assert VisionEncoder(tower, image_size=32, d_model=16, heads=2).positions is None


def test_condition_steers_the_pooling():
    tower = build_vision_model(None, 32, {"embedding_size": 8, "hidden_sizes": [8, 16]}, vision_arch="resnet")
    encoder = VisionEncoder(tower, image_size=32, d_model=16, tokens=2, heads=2).eval()
    images = torch.rand(2, 3, 32, 32)
    plain = encoder(images)
    torch.testing.assert_close(encoder(images, torch.zeros(2, 16)), plain)
    assert not torch.allclose(encoder(images, torch.randn(2, 16)), plain)


def test_bad_vision_arch_and_config_are_refused():
    with pytest.raises(ValueError, match="vision_arch='vgg' is unknown; use one of 'siglip', 'resnet'"):
        build_vision_model(None, 32, None, vision_arch="vgg")
    with pytest.raises(ValueError, match="vision_config has no field 'patch_size' for vision_arch='resnet'"):
        build_vision_model(None, 32, {"patch_size": 4}, vision_arch="resnet")


@pytest.mark.integration
def test_sft_with_resnet_trains_saves_and_loads(tiny_dataset, observation, tmp_path):
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, policy_kwargs=RESNET_POLICY)
    model.learn(3)
    chunk, _ = model.predict(observation)
    assert chunk.shape == (4, 7) and np.all(np.abs(chunk) <= 1.0)
    model.save(tmp_path / "model.zip")
    loaded = SFT.load(tmp_path / "model.zip")
    assert loaded.policy.arch["vision_arch"] == "resnet" and loaded.policy.language_pooling
    np.testing.assert_allclose(loaded.predict(observation)[0], chunk, atol=1e-5)


@pytest.mark.integration
def test_corft_with_resnet_runs_both_stages(tiny_dataset, observation):
    model = CORFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, policy_kwargs=RESNET_POLICY,
                  il_steps=2, rl_steps=2, critic_warmup_steps=0, policy_delay=1)
    model.learn(4)
    assert model.stage == 2 and model.predict(observation)[0].shape == (4, 7)


@pytest.mark.integration
def test_centred_instructions_are_standardised(tiny_dataset):
    policy = SFT(dataset=tiny_dataset, chunk_size=2, batch_size=2, seed=0, policy_kwargs=RESNET_POLICY).policy
    assert len(policy.instructions) > 1
    centred = (policy.instruction_embeddings - policy.instruction_center) * policy.instruction_scale
    torch.testing.assert_close(centred.mean(0), torch.zeros(centred.shape[1]), atol=1e-5, rtol=0)
    assert centred.norm(dim=-1).pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)
    plain = SFT(dataset=tiny_dataset, chunk_size=2, batch_size=2, seed=0,
                policy_kwargs={**RESNET_POLICY, "center_instructions": False}).policy
    assert not plain.instruction_center.any() and plain.instruction_scale.item() == 1.0


@pytest.mark.integration
def test_cosine_schedule_warms_up_then_decays_to_zero(tiny_dataset):
    model = SFT(dataset=tiny_dataset, chunk_size=2, batch_size=2, seed=0, learning_rate=1e-3,
                lr_schedule_kind="cosine", lr_warmup_steps=2, policy_kwargs=RESNET_POLICY)
    model._total_timesteps = 12
    rates = [model.imitation_learning_rate(step) for step in range(12)]
    assert rates[:2] == pytest.approx([5e-4, 1e-3])
    assert rates[2] == pytest.approx(1e-3) and rates[7] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert all(a >= b for a, b in zip(rates[1:], rates[2:])) and rates[-1] < 1e-4
    model.learn(3)  # the optimizer holds the rate of the last step (step 2 of 3)
    assert model.optimizer.param_groups[0]["lr"] == pytest.approx(model.imitation_learning_rate(2))


@pytest.mark.integration
def test_cosine_schedule_spans_corft_imitation_stage(tiny_dataset):
    model = CORFT(dataset=tiny_dataset, chunk_size=2, batch_size=2, seed=0, learning_rate=1e-3,
                  lr_schedule_kind="cosine", lr_warmup_steps=0, il_steps=10, rl_steps=30, policy_kwargs=RESNET_POLICY)
    model._total_timesteps = 40
    assert model.imitation_learning_rate(5) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.integration
def test_bad_schedule_arguments_are_refused(tiny_dataset):
    with pytest.raises(ValueError, match="lr_schedule_kind='step' is unknown"):
        SFT(dataset=tiny_dataset, lr_schedule_kind="step")
    with pytest.raises(ValueError, match="lr_warmup_steps must be >= 0"):
        SFT(dataset=tiny_dataset, lr_warmup_steps=-1)


def _film_encoder(seed: int = 0) -> VisionEncoder:
    torch.manual_seed(seed)
    tower = build_vision_model(None, 32, {"embedding_size": 8, "hidden_sizes": [8, 16]}, vision_arch="resnet")
    return VisionEncoder(tower, image_size=32, d_model=16, tokens=2, heads=2, film_dim=12).eval()


def test_film_is_identity_at_init_and_separates_instructions_once_trained():
    encoder = _film_encoder()
    assert encoder.film is not None and [layer.out_features for layer in encoder.film.layers] == [2 * 8, 2 * 16]
    images = torch.rand(3, 3, 32, 32)
    plain = encoder(images)
    instructions = torch.randn(3, 12)
    torch.testing.assert_close(encoder(images, film=instructions), plain)  # zero-initialised FiLM
    # the tower itself: FiLM over the embedder and stages reproduces ResNetModel's last feature map
    pixels = images * 2 - 1
    torch.testing.assert_close(encoder.film(encoder.model, pixels, instructions),
                               encoder.model(pixel_values=pixels).last_hidden_state)

    # gradients reach the zero-initialised FiLM weights, and after a step instructions change the features
    encoder.train()
    encoder(images, film=instructions).pow(2).sum().backward()
    assert all(layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0 for layer in encoder.film.layers)
    with torch.no_grad():
        for layer in encoder.film.layers:
            layer.weight.normal_(std=0.1)
    encoder.eval()
    same_image = images[:1].expand(2, -1, -1, -1)
    features = encoder(same_image, film=torch.randn(2, 12))
    assert not torch.allclose(features[0], features[1], atol=1e-4)
    torch.testing.assert_close(encoder(same_image, film=instructions[:1].expand(2, -1)).diff(dim=0),
                               torch.zeros(1, 2, 16), atol=1e-6, rtol=0)
    assert not torch.allclose(encoder(images, film=instructions), plain, atol=1e-4)


def test_film_needs_a_resnet_and_film_dim():
    tower = build_vision_model(None, 32, {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                          "num_attention_heads": 2})
    with pytest.raises(ValueError, match="language_film needs a ResNet vision tower"):
        VisionEncoder(tower, image_size=32, d_model=16, heads=2, film_dim=16)
    plain = VisionEncoder(build_vision_model(None, 32, {"embedding_size": 8, "hidden_sizes": [8, 16]},
                                             vision_arch="resnet"), image_size=32, d_model=16, heads=2)
    with pytest.raises(ValueError, match="FiLM condition was given to a VisionEncoder built without film_dim"):
        plain(torch.rand(1, 3, 32, 32), film=torch.zeros(1, 16))


@pytest.mark.integration
def test_policy_with_language_film_feeds_instructions_into_the_tower(tiny_dataset, observation, tmp_path):
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0,
                policy_kwargs={**RESNET_POLICY, "language_film": True})
    policy = model.policy
    assert policy.language_film and policy.vision.film is not None
    film_names = {name for name, _ in policy.named_parameters() if ".film." in name}
    assert film_names and film_names <= {name for name, _ in policy.named_parameters()}
    assert {id(p) for p in policy.vision.film.parameters()} <= {id(p) for p in policy.backbone_parameters()}
    # identity at initialisation: the same weights without FiLM give the same chunk
    plain = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, policy_kwargs=RESNET_POLICY).policy
    plain.load_state_dict({k: v for k, v in policy.state_dict().items() if ".film." not in k})
    np.testing.assert_allclose(policy.predict(observation)[0], plain.predict(observation)[0], atol=1e-5)
    model.learn(3)
    assert any(layer.weight.abs().sum() > 0 for layer in policy.vision.film.layers)
    chunk, _ = model.predict(observation)
    model.save(tmp_path / "model.zip")
    loaded = SFT.load(tmp_path / "model.zip")
    assert loaded.policy.arch["language_film"] and loaded.policy.vision.film is not None
    np.testing.assert_allclose(loaded.predict(observation)[0], chunk, atol=1e-5)


@pytest.mark.integration
def test_language_film_is_off_by_default_for_a_trainable_tower(tiny_dataset):
    policy = SFT(dataset=tiny_dataset, chunk_size=2, batch_size=2, seed=0, policy_kwargs=RESNET_POLICY).policy
    assert not policy.language_film and policy.vision.film is None and policy.vision.output_film is None


@pytest.mark.integration
def test_language_film_is_refused_with_a_siglip_tower(tiny_dataset):
    with pytest.raises(ValueError, match="language_film needs a ResNet vision tower"):
        SFT(dataset=tiny_dataset, chunk_size=2, batch_size=2, seed=0,
            policy_kwargs={"d_model": 16, "heads": 2, "fusion_layers": 1, "language_film": True,
                           "vision_arch": "siglip", "vision_pooling": "attention",
                           "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                             "num_attention_heads": 2}})


def test_spatial_softmax_finds_the_peak_and_pools_a_feature_map():
    features = torch.full((1, 2, 4, 5), -1e4)
    features[0, 0, 0, 4] = 0.0  # top right
    features[0, 1, 3, 0] = 0.0  # bottom left
    keypoints = SpatialSoftmax()(features)
    torch.testing.assert_close(keypoints, torch.tensor([[[1.0, -1.0], [-1.0, 1.0]]]))
    tower = build_vision_model(None, 32, {"embedding_size": 8, "hidden_sizes": [8, 16]}, vision_arch="resnet")
    encoder = VisionEncoder(tower, image_size=32, d_model=16, tokens=3, heads=2, film_dim=8, pooling="spatial_softmax")
    assert encoder.pool is None and encoder(torch.rand(2, 3, 32, 32), film=torch.randn(2, 8)).shape == (2, 3, 16)
    with pytest.raises(ValueError, match="spatial-softmax pooling takes no condition"):
        encoder(torch.rand(1, 3, 32, 32), torch.zeros(1, 16))
    siglip = build_vision_model(None, 32, {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                           "num_attention_heads": 2})
    with pytest.raises(ValueError, match="'spatial_softmax' needs a convolutional tower"):
        VisionEncoder(siglip, image_size=32, d_model=16, heads=2, pooling="spatial_softmax")
    with pytest.raises(ValueError, match="vision_pooling='max' is unknown"):
        VisionEncoder(tower, image_size=32, d_model=16, heads=2, pooling="max")


@pytest.mark.integration
def test_policy_with_film_and_spatial_softmax_trains_and_refuses_language_pooling(tiny_dataset, observation):
    kwargs = {**RESNET_POLICY, "language_pooling": False, "language_film": True, "vision_pooling": "spatial_softmax"}
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, policy_kwargs=kwargs)
    model.learn(2)
    assert model.predict(observation)[0].shape == (4, 7)
    with pytest.raises(ValueError, match="language_pooling steers attention pooling"):
        SFT(dataset=tiny_dataset, chunk_size=2, batch_size=2, seed=0,
            policy_kwargs={**kwargs, "language_pooling": True})
