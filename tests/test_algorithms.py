"""Conformance suite every registered algorithm passes, plus behaviour specific to each.

Train a few steps on a tiny real dataset -> predict (single and batched) ->
save -> load -> identical predictions; get/set parameters; clear errors for
bad observations and bad load arguments; resume; divergence.
"""

import copy
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.logger import configure

from corft_algos import BC, CORFT, SFT, OfflineRLH1
from corft_algos.common.base import TrainingDivergedError
from corft_algos.data import ChunkDataset
from corft_algos.registry import available_algorithms, get_algorithm
from tests.helpers import TINY_POLICY, make_algorithm

pytestmark = pytest.mark.integration

BUILTIN = ["bc", "sft", "offline_rl_h1", "corft"]


def test_builtin_algorithms_are_registered():
    assert set(BUILTIN) <= set(available_algorithms())
    assert get_algorithm("corft") is CORFT and get_algorithm("offline_rl_h1") is OfflineRLH1
    with pytest.raises(ValueError, match="unknown algorithm 'nope'; registered: .*corft"):
        get_algorithm("nope")


@pytest.mark.parametrize("name", BUILTIN)
def test_conformance(name, tiny_dataset, observation, tmp_path):
    model = make_algorithm(name, tiny_dataset)
    horizon = model.chunk_size
    assert model.action_space.shape == (horizon, 7)
    model.learn(4)
    assert model.num_timesteps == 4

    chunk, state = model.predict(observation)
    assert chunk.shape == (horizon, 7) and state is None
    assert np.all(np.abs(chunk) <= 1.0) and set(np.unique(chunk[:, 6])) <= {-1.0, 1.0}
    batch = {key: np.stack([value, value]) for key, value in observation.items() if key != "instruction"}
    batch["instruction"] = [observation["instruction"]] * 2
    batched, _ = model.predict(batch)
    assert batched.shape == (2, horizon, 7)
    np.testing.assert_allclose(batched[0], chunk, atol=1e-5)

    path = tmp_path / "model.zip"
    model.save(path)
    loaded = get_algorithm(name).load(path)
    np.testing.assert_array_equal(loaded.predict(observation)[0], chunk)
    assert loaded.num_timesteps == 4 and loaded.chunk_size == horizon

    parameters = copy.deepcopy(model.get_parameters())  # SB3 returns live state dicts
    with torch.no_grad():
        for parameter in model.policy.action_expert.parameters():
            parameter.add_(1.0)
    assert not np.array_equal(model.predict(observation)[0], chunk)
    model.set_parameters(parameters)
    np.testing.assert_array_equal(model.predict(observation)[0], chunk)


@pytest.mark.parametrize("name", BUILTIN)
def test_bad_observations_get_clear_errors(name, tiny_dataset, observation):
    model = make_algorithm(name, tiny_dataset)
    wrong = dict(observation, image_front=np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r"observation\['image_front'\] has shape \(64, 64, 3\); this model expects \(32, 32, 3\)"):
        model.predict(wrong)
    without_instruction = {key: value for key, value in observation.items() if key != "instruction"}
    with pytest.raises(ValueError, match="include_instruction=True"):
        model.predict(without_instruction)
    with pytest.raises(ValueError, match="missing key 'state'"):
        model.predict({key: value for key, value in observation.items() if key != "state"})


def test_load_refuses_conflicting_kwargs_and_other_algorithms(tiny_dataset, tmp_path):
    model = make_algorithm("sft", tiny_dataset)
    path = tmp_path / "sft.zip"
    model.save(path)
    with pytest.raises(ValueError, match=r"conflicting arguments: chunk_size=8 \(saved: 4\)"):
        SFT.load(path, chunk_size=8)
    with pytest.raises(ValueError, match="holds a 'sft' model; load it with that algorithm's class, not CORFT"):
        CORFT.load(path)


def test_bc_and_single_step_rl_refuse_chunks(tiny_dataset):
    with pytest.raises(ValueError, match="BC predicts single actions"):
        BC(dataset=tiny_dataset, chunk_size=4)
    with pytest.raises(ValueError, match="OfflineRLH1 is single-step"):
        OfflineRLH1(dataset=tiny_dataset, chunk_size=4)


def test_missing_dataset_and_mismatched_env(tiny_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="corft collect"):
        SFT(dataset=tmp_path / "nothing")
    with pytest.raises(ValueError, match="needs a dataset"):
        SFT(env=gym.make("corft/PickPlace-v0", image_size=32))
    with pytest.raises(ValueError, match="the env does not fit the dataset"):
        SFT(dataset=tiny_dataset, env=gym.make("corft/PickPlace-v0", image_size=48), policy_kwargs=TINY_POLICY)
    model = SFT(dataset=tiny_dataset, env=gym.make("corft/Push-v0", image_size=32, include_instruction=True),
                policy_kwargs=TINY_POLICY, chunk_size=4)
    assert model.observation_space["image_front"].shape == (32, 32, 3)


def test_resume_continues_counters_and_optimizer_state(tiny_dataset, tmp_path):
    model = make_algorithm("corft", tiny_dataset)
    model.learn(3)
    model.save(tmp_path / "checkpoint.zip")
    resumed = CORFT.load(tmp_path / "checkpoint.zip", dataset=tiny_dataset)
    assert resumed.num_timesteps == 3 and resumed.rl_started
    state = resumed.critic_optimizer.state_dict()["state"]
    assert state and all(entry["step"].item() == 1 for entry in state.values())  # one critic step before saving
    resumed.learn(2, reset_num_timesteps=False)
    assert resumed.num_timesteps == 5


def test_non_finite_loss_stops_training_without_touching_parameters(tiny_dataset):
    model = make_algorithm("sft", tiny_dataset)
    with torch.no_grad():
        model.policy.action_expert.continuous_head.bias.fill_(float("nan"))
    before = {name: value.clone() for name, value in model.policy.state_dict().items()}
    with pytest.raises(TrainingDivergedError, match="imitation_loss is nan at gradient step 1"):
        model.learn(2)
    for name, value in model.policy.state_dict().items():
        torch.testing.assert_close(value, before[name], equal_nan=True)
    assert model.num_timesteps == 0


def test_logger_records_losses_q_statistics_and_gradient_norms(tiny_dataset, tmp_path):
    model = make_algorithm("corft", tiny_dataset)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(4, log_interval=4)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for column in ["train/imitation_loss", "train/td_loss", "train/calql_penalty", "train/q_mean",
                   "train/critic_grad_norm", "train/actor_q_term", "train/grad_norm", "time/gradient_steps"]:
        assert column in header


def test_stage_two_freezes_the_backbone_and_trains_the_critic(tiny_dataset):
    model = make_algorithm("corft", tiny_dataset)
    model.learn(2)  # stage 1 only
    backbone = [p.detach().clone() for p in model.policy.backbone_parameters()]
    critic = [p.detach().clone() for p in model.policy.critic_parameters()]
    model.learn(3, reset_num_timesteps=False)
    assert model.stage == 2
    assert all(torch.equal(a, b) for a, b in zip(backbone, model.policy.backbone_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(critic, model.policy.critic_parameters()))


def test_corft_starts_stage_two_from_an_sft_checkpoint(tiny_dataset, observation, tmp_path):
    sft = make_algorithm("sft", tiny_dataset)
    sft.learn(3)
    sft.save(tmp_path / "sft.zip")
    model = CORFT.from_sft(tmp_path / "sft.zip", dataset=tiny_dataset, batch_size=4, critic_warmup_steps=0)
    assert model.il_steps == 0 and model.stage == 2 and model.chunk_size == 4
    np.testing.assert_array_equal(model.predict(observation)[0], sft.predict(observation)[0])
    model.learn(2)


@pytest.mark.slow
def test_sft_overfits_a_tiny_dataset(tiny_dataset):
    torch.manual_seed(0)
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=16, learning_rate=1e-3, seed=0,
                image_augmentation=False, policy_kwargs=TINY_POLICY)
    first = model.train_step()["imitation_loss"]
    model.learn(400)
    losses = [model.train_step()["imitation_loss"] for _ in range(5)]
    assert np.mean(losses) < 0.15 * first, (first, losses)


def test_vision_tower_from_a_local_transformers_directory(tiny_dataset, observation, tmp_path):
    from transformers import ViTConfig, ViTModel

    folder = tmp_path / "tiny-vit"
    ViTModel(ViTConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                       image_size=32, patch_size=8)).save_pretrained(folder)
    kwargs = {**TINY_POLICY, "vision_model": str(folder)}
    kwargs.pop("vision_config")
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, policy_kwargs=kwargs)
    assert type(model.policy.vision.model).__name__ == "ViTModel"
    model.learn(2)
    assert model.predict(observation)[0].shape == (4, 7)
    with pytest.raises(FileNotFoundError, match="models are never downloaded by name"):
        SFT(dataset=tiny_dataset, policy_kwargs={"vision_model": "google/siglip-base"})


def test_proprio_dims_choose_the_state_the_policy_reads(tiny_dataset, observation, tmp_path):
    model = make_algorithm("sft", tiny_dataset, policy_kwargs={**TINY_POLICY, "proprio_dims": [7]})
    chunk, _ = model.predict(observation, deterministic=True)
    moved = {**observation, "state": observation["state"].copy()}
    moved["state"][:7] += 0.1  # TCP pose: not read
    np.testing.assert_array_equal(model.predict(moved, deterministic=True)[0], chunk)
    moved["state"][7] += 0.01  # gripper opening: read
    assert not np.array_equal(model.predict(moved, deterministic=True)[0], chunk)
    model.save(tmp_path / "model.zip")
    loaded = type(model).load(tmp_path / "model.zip", device="cpu")
    np.testing.assert_array_equal(loaded.predict(observation, deterministic=True)[0], chunk)
    with pytest.raises(ValueError, match="proprio_dims must index the 15-D state"):
        make_algorithm("sft", tiny_dataset, policy_kwargs={**TINY_POLICY, "proprio_dims": [15]})


def test_cached_contexts_use_batchnorm_running_statistics_and_leave_them(tiny_dataset):
    """Stage 2's frozen backbone must see frames as at inference (eval-mode BatchNorm), not update it."""
    policy_kwargs = {key: value for key, value in TINY_POLICY.items() if key != "vision_config"}
    model = make_algorithm("corft", tiny_dataset, il_steps=1, policy_kwargs={**policy_kwargs, "vision_arch": "resnet",
                                                                       "vision_norm": "batch"})
    model.learn(1)  # stage 1 moves BatchNorm's running statistics away from their initial values
    statistics = {name: value.clone() for name, value in model.policy.named_buffers() if "running" in name}
    assert statistics
    model.policy.set_training_mode(True)
    contexts = model.frame_contexts()
    assert model.policy.training  # the mode is restored
    for name, value in model.policy.named_buffers():
        if name in statistics:
            torch.testing.assert_close(value, statistics[name])
    frames = model.dataset.frames
    indices = np.arange(3)
    observation = {key: torch.from_numpy(value) for key, value in frames.get(indices).items()}
    model.policy.set_training_mode(False)
    with torch.no_grad():
        expected = model.encode_batch(observation, torch.from_numpy(frames.instruction_ids[indices]), augment=False)
    torch.testing.assert_close(contexts[:3], expected)


def test_init_from_copies_batchnorm_statistics_and_the_sources_normalization(tiny_dataset, observation):
    policy_kwargs = {key: value for key, value in TINY_POLICY.items() if key != "vision_config"}
    policy_kwargs = {**policy_kwargs, "vision_arch": "resnet", "vision_norm": "batch"}
    source = make_algorithm("sft", tiny_dataset, policy_kwargs=policy_kwargs)
    source.learn(2)
    with torch.no_grad():  # as if pretrained on another dataset
        source.policy.action_mean.add_(1.0)
        source.policy.state_std.mul_(2.0)
    target = make_algorithm("corft", tiny_dataset, il_steps=0, policy_kwargs=policy_kwargs)
    copied = target.init_from(source)
    assert any("running_mean" in name for name in copied) and "action_mean" in copied
    for name, value in source.policy.state_dict().items():
        if "running" in name or name in ("action_mean", "state_std"):
            torch.testing.assert_close(target.policy.state_dict()[name], value)
    np.testing.assert_array_equal(target.normalization.action_mean, source.policy.action_mean.numpy())
    assert target.policy.normalization is target.normalization
    np.testing.assert_allclose(target.predict(observation)[0], source.predict(observation)[0], atol=1e-5)

    kept = make_algorithm("corft", tiny_dataset, il_steps=0, policy_kwargs=policy_kwargs)
    dataset_mean = kept.policy.action_mean.clone()
    assert "action_mean" not in kept.init_from(source, normalization="dataset")
    torch.testing.assert_close(kept.policy.action_mean, dataset_mean)
    with pytest.raises(ValueError, match="normalization must be 'source' or 'dataset'"):
        kept.init_from(source, normalization="base")


def test_value_bounds_clip_the_bootstrapped_values(tiny_dataset):
    def bootstrap(bounds):
        model = make_algorithm("corft", tiny_dataset, il_steps=0, value_bounds=bounds)
        model._start_rl()
        for network in model.policy.critic_target.q_networks:  # every target Q is 5 (head: no weights, bias 5)
            torch.nn.init.zeros_(network.head.weight)
            torch.nn.init.constant_(network.head.bias, 5.0)
        batch = model.next_batch(with_observations=False)
        return model.bootstrap_values(model._contexts_for(batch)[1])

    assert torch.allclose(bootstrap(None), torch.full((4, 4), 5.0))
    assert torch.allclose(bootstrap((0.0, 1.0)), torch.ones(4, 4))  # a sparse reward of 1: no value above 1
    assert torch.allclose(bootstrap((6.0, 9.0)), torch.full((4, 4), 6.0))
    with pytest.raises(ValueError, match=r"value_bounds must be \(low, high\) with low < high"):
        make_algorithm("corft", tiny_dataset, value_bounds=(1.0, 0.0))


def test_step_cost_lowers_the_value_floor_by_its_discounted_sum(tiny_dataset):
    model = make_algorithm("corft", tiny_dataset, il_steps=0, step_cost=0.01, gamma=0.99)
    assert model.dataset.step_cost == 0.01 and model.bootstrap_bounds == pytest.approx((-1.0, 1.0))  # 0 - 0.01/0.01
    model._start_rl()
    for network in model.policy.critic_target.q_networks:  # every target Q is -5
        torch.nn.init.zeros_(network.head.weight)
        torch.nn.init.constant_(network.head.bias, -5.0)
    batch = model.next_batch(with_observations=False)
    assert torch.allclose(model.bootstrap_values(model._contexts_for(batch)[1]), torch.full((4, 4), -1.0))
    assert make_algorithm("corft", tiny_dataset, step_cost=0.01, gamma=1.0).bootstrap_bounds == (float("-inf"), 1.0)
    with pytest.raises(ValueError, match="the ChunkDataset has step_cost=0.0, the algorithm step_cost=0.01"):
        make_algorithm("corft", ChunkDataset(tiny_dataset, chunk_size=model.chunk_size), step_cost=0.01)


@pytest.mark.parametrize("heads", ["last", "all"])
@pytest.mark.parametrize("floor", ["all", "policy"])
def test_calql_options_penalise_the_heads_and_floor_the_samples_they_name(tiny_dataset, heads, floor):
    """Every critic copy outputs Q = -5 for any chunk, so the penalty has a closed form per sample."""
    model = make_algorithm("corft", tiny_dataset, il_steps=0, calql_heads=heads, calql_floor=floor, n_action_samples=3)
    for network in model.policy.critic.q_networks:
        torch.nn.init.zeros_(network.head.weight)
        torch.nn.init.constant_(network.head.bias, -5.0)
    batch = model.next_batch(with_observations=False)
    context, next_context = model._contexts_for(batch)
    data_q = model.policy.critic(context, model.policy.normalize_actions(batch["actions"]))
    penalty = model._calql_penalty(context, next_context[:, 0], data_q, batch)
    g = batch["mc_return"].double()
    if floor == "all":  # all 9 samples lifted to G (> -5)
        per_head = torch.logsumexp(g.unsqueeze(-1).expand(-1, 9), -1) + 5.0
    else:  # 3 uniform samples stay at -5, 6 of the policy's are lifted to G
        per_head = torch.log(3 * math.exp(-5.0) + 6 * torch.exp(g)) + 5.0
    heads_per_sample = batch["valid"].sum(-1).double() if heads == "all" else torch.ones_like(g)
    expected = 2 * (per_head * heads_per_sample).mean()  # two critic copies
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)


def test_calql_options_are_checked(tiny_dataset):
    with pytest.raises(ValueError, match=r"calql_heads must be one of \('last', 'all'\), got 'first'"):
        make_algorithm("corft", tiny_dataset, calql_heads="first")
    with pytest.raises(ValueError, match=r"calql_floor must be one of \('all', 'policy'\), got 'none'"):
        make_algorithm("corft", tiny_dataset, calql_floor="none")
