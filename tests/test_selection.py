"""Critic-ranked chunk selection (best-of-N): candidates, values, choice, and a model that uses them."""

import numpy as np
import pytest
import torch

from corft_algos import CORFT, SFT
from corft_algos.selection import ChunkSelector, candidate_chunks, choose, pessimistic_chunk_values
from tests.helpers import TINY_POLICY


def test_candidates_are_the_mean_then_one_offset_per_candidate_shared_by_every_step():
    mean = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    candidates = candidate_chunks(mean, 5, noise=0.5, generator=torch.Generator().manual_seed(0))
    assert candidates.shape == (2, 5, 3, 2)
    assert torch.equal(candidates[:, 0], mean)
    offsets = candidates - mean.unsqueeze(1)
    assert torch.allclose(offsets, offsets[:, :, :1].expand_as(offsets))  # the same offset at every step
    assert offsets[:, 1:].abs().min() > 0
    again = candidate_chunks(mean, 5, noise=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(candidates, again)
    with pytest.raises(ValueError, match="at least 1"):
        candidate_chunks(mean, 0, noise=0.5)


class LinearCritic(torch.nn.Module):
    """Two copies: ``Q_k^{(j)}(c, a) = w_k · Σ_{i<=j} a_i[0] + c[0, 0]``, by hand."""

    def forward(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        prefix = actions[..., 0].cumsum(-1) + context[:, :1, 0]
        return torch.stack([1.0 * prefix, 2.0 * prefix])


def test_values_are_the_pessimistic_full_chunk_head():
    context = torch.tensor([[[0.5]], [[-1.0]]])  # (B=2, L=1, d=1)
    actions = torch.tensor([[[[1.0], [1.0]], [[-1.0], [0.0]]],
                            [[[0.0], [2.0]], [[1.0], [-3.0]]]])  # (B=2, N=2, H=2, A=1)
    values = pessimistic_chunk_values(LinearCritic(), context, actions)
    # sample 0: sums 2 and -1, + 0.5 -> copies (2.5, 5.0) and (-0.5, -1.0): minima 2.5, -1.0
    # sample 1: sums 2 and -2, - 1 -> copies (1.0, 2.0) and (-3.0, -6.0): minima 1.0, -6.0
    assert torch.allclose(values, torch.tensor([[2.5, -1.0], [1.0, -6.0]]))
    assert choose(values, "critic").tolist() == [0, 0]


def test_random_choice_is_uniform_over_the_candidates():
    values = torch.tensor([[3.0, 1.0, 2.0, 0.0]]).expand(4000, 4)
    picks = choose(values, "random", torch.Generator().manual_seed(0))
    counts = np.bincount(picks.numpy(), minlength=4)
    assert np.all(np.abs(counts / 4000 - 0.25) < 0.03), counts
    with pytest.raises(ValueError, match="selection must be one of"):
        choose(values, "best")


def test_a_critic_trained_on_successes_and_failures_makes_best_of_n_pick_a_succeeding_chunk():
    """Toy task: one state; a chunk succeeds (return 1) iff its first action's mean is positive, else fails (0).

    Trained on both outcomes, the critic ranks the candidates; best-of-N around a failing mean picks a
    succeeding candidate whenever one is among them, random choice only sometimes.
    """
    torch.manual_seed(0)
    horizon, dims = 4, 2
    from corft_algos.networks.experts import CriticExpert
    critic = CriticExpert(n_critics=2, d_model=8, context_tokens=1, chunk_size=horizon, action_dim=dims,
                          layers=1, heads=2)
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    context = torch.zeros(256, 1, 8)
    for _ in range(400):
        actions = torch.randn(256, horizon, dims)
        returns = (actions[..., 0].mean(-1) > 0).float()
        loss = ((critic(context, actions)[..., -1] - returns) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    generator = torch.Generator().manual_seed(1)
    failing_mean = torch.full((200, horizon, dims), -0.1)
    candidates = candidate_chunks(failing_mean, 8, noise=0.5, generator=generator)
    with torch.no_grad():
        values = pessimistic_chunk_values(critic, torch.zeros(200, 1, 8), candidates)
    succeeds = candidates[..., 0].mean(-1) > 0  # (200, 8)
    rows = torch.arange(200)
    best = succeeds[rows, choose(values, "critic")]
    random = succeeds[rows, choose(values, "random", generator)]
    has_one = succeeds.any(1)
    assert best[has_one].float().mean() > 0.95
    assert random[has_one].float().mean() < 0.7


@pytest.mark.integration
def test_selector_predicts_like_the_model_and_explains_what_it_needs(tiny_dataset, observation):
    model = CORFT(dataset=tiny_dataset, chunk_size=4, il_steps=2, critic_warmup_steps=0, policy_delay=1,
                  batch_size=4, seed=0, policy_kwargs=TINY_POLICY)
    model.learn(4)
    expert_chunk, _ = model.predict(observation)
    np.testing.assert_allclose(ChunkSelector(model, n_candidates=1).predict(observation)[0], expert_chunk,
                               atol=1e-6)
    selector = ChunkSelector(model, n_candidates=8, noise=0.3, seed=0)
    chunk, state = selector.predict(observation)
    assert chunk.shape == (4, 7) and state is None and selector.chunk_size == 4
    assert np.abs(chunk).max() <= 1.0
    np.testing.assert_array_equal(chunk[:, 6], expert_chunk[:, 6])  # the gripper is the expert's
    batch = {key: np.stack([value] * 3) for key, value in observation.items() if key != "instruction"}
    batch["instruction"] = [observation["instruction"]] * 3
    assert selector.predict(batch)[0].shape == (3, 4, 7)
    with pytest.raises(ValueError, match="needs a model with a critic"):
        ChunkSelector(SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, policy_kwargs=TINY_POLICY))
    with pytest.raises(ValueError, match="selection must be one of"):
        ChunkSelector(model, selection="best")


class FixedChunk:
    """A member model whose chunk is a constant, for any observation (``predict`` as the models' own)."""

    def __init__(self, model, value: float) -> None:
        self.action_space = model.action_space
        self.chunk = np.full(model.action_space.shape, value, np.float32)

    def predict(self, observation, deterministic=True):
        single = not isinstance(observation["instruction"], list)
        return (self.chunk if single else np.stack([self.chunk] * len(observation["instruction"]))), None


class SumOfX(torch.nn.Module):
    """A critic by hand: ``Q^{(j)} = Σ_{i<=j}`` of the normalised x actions (first action dim), two equal copies."""

    def forward(self, context: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return actions[..., 0].cumsum(-1).unsqueeze(0).expand(2, -1, -1)


@pytest.mark.integration
def test_ensemble_candidates_are_the_models_and_the_members_chunks_valued_as_env_actions(tiny_dataset, observation):
    model = CORFT(dataset=tiny_dataset, chunk_size=4, il_steps=2, critic_warmup_steps=0, policy_delay=1,
                  batch_size=4, seed=0, policy_kwargs=TINY_POLICY)
    model.learn(4)
    policy = model.policy
    policy.critic = SumOfX()
    low, high = FixedChunk(model, -0.5), FixedChunk(model, 0.9)
    selector = ChunkSelector(model, members=[low, high], seed=0)
    assert selector.n_candidates == 3 and selector.noise == 0.0
    chunk, _ = selector.predict(observation)
    np.testing.assert_array_equal(chunk, high.chunk)  # x = 0.9 on every step: the highest sum
    batch = {key: np.stack([value] * 2) for key, value in observation.items() if key != "instruction"}
    batch["instruction"] = [observation["instruction"]] * 2
    np.testing.assert_array_equal(selector.predict(batch)[0], np.stack([high.chunk] * 2))

    with torch.no_grad():  # the values the critic saw: (a - mean) / std of the env actions, for each candidate
        _, tensors = policy.observation_tensors(observation)
        context = policy.encode(tensors, tensors["instruction"])
        own = policy.raw_actions(*policy.action_expert(context))[0]
    expected = [((c[:, 0] - policy.action_mean[0]) / policy.action_std[0]).sum().item()
                for c in (own, torch.as_tensor(low.chunk), torch.as_tensor(high.chunk))]
    assert np.argmax(expected) == 2
    picks = [ChunkSelector(model, members=[low, high], selection="random", seed=seed).predict(observation)[0]
             for seed in range(30)]
    assert {round(float(p[0, 0]), 4) for p in picks} >= {-0.5, 0.9}  # random choice reaches the members' chunks
    with pytest.raises(ValueError, match="ensemble candidates need the same chunk size"):
        other = FixedChunk(model, 0.0)
        other.action_space = type(model.action_space)(-1, 1, (5, 7))
        ChunkSelector(model, members=[other])


def test_critic_diagnostics_auc_and_padded_chunks_by_hand():
    from benchmarks.critic_diagnostics import auc, recorded_chunks
    from corft_envs.episode_store import EpisodeData

    # pairs (positive, negative): (3,1) above, (3,3) tie, (2,1) above, (2,3) below -> (1 + 0.5 + 1 + 0) / 4
    assert auc([3.0, 2.0], [1.0, 3.0]) == pytest.approx(0.625)
    assert np.isnan(auc([1.0], []))
    actions = np.arange(5 * 2, dtype=np.float32).reshape(5, 2)
    episode = EpisodeData(observations={}, actions=actions, rewards=np.zeros(5, np.float32),
                          is_success=np.zeros(5, bool), instruction="x", seed=0, terminated=False, truncated=True)
    chunks = recorded_chunks(episode, [0, 3], horizon=4)
    np.testing.assert_array_equal(chunks[0], actions[:4])
    np.testing.assert_array_equal(chunks[1], [actions[3], actions[4], actions[4], actions[4]])
