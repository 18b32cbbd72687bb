"""The critic expert, trained with per-prefix TD targets, recovers the true chunk Q-values of a chain MDP.

Chain of N states; action a > 0 moves right, a <= 0 moves left (state 0 stays);
reaching state N-1 gives reward 1 and terminates. Data: random chunks from
random states. Target policy: always right. Then, for a chunk started in s,
``Q^{(j)}(s, a_{0..j}) = R_j + γ^{j+1} (1 - d_j) V(s_{j+1})`` with
``V(s) = γ^{N-2-s}`` (the steps to the goal under "always right"), which the
test computes in closed form and the critic must match.
"""

import numpy as np
import pytest
import torch

from corft_algos.corft import polyak_update
from corft_algos.losses import per_prefix_targets, prefix_td_loss
from corft_algos.networks.experts import CriticExpert

N_STATES, HORIZON, GAMMA = 5, 3, 0.9


def rollout(state: int, actions: np.ndarray):
    """Rewards, done, valid and next states of a chunk from ``state``."""
    rewards, done, valid, next_states = np.zeros(HORIZON), np.zeros(HORIZON, bool), np.zeros(HORIZON, bool), []
    ended = False
    for j, action in enumerate(actions):
        valid[j] = not ended
        if not ended:
            state = min(state + 1, N_STATES - 1) if action > 0 else max(state - 1, 0)
            rewards[j] = float(state == N_STATES - 1)
            ended = state == N_STATES - 1
        done[j] = ended
        next_states.append(state)
    return rewards, done, valid, np.array(next_states)


def true_q(state: int, actions: np.ndarray) -> np.ndarray:
    rewards, done, _, next_states = rollout(state, actions)
    values = GAMMA ** (N_STATES - 2 - next_states.astype(float))
    prefix = np.cumsum(rewards * GAMMA ** np.arange(HORIZON))
    return prefix + GAMMA ** np.arange(1, HORIZON + 1) * (1 - done) * values


WIDTH = 16


def context(states: torch.Tensor) -> torch.Tensor:
    """One context token per state: its one-hot code, zero-padded to the critic's width."""
    return torch.nn.functional.one_hot(states, WIDTH).float().unsqueeze(1)


@pytest.mark.slow
def test_critic_recovers_true_chunk_q_values_of_a_chain():
    torch.manual_seed(0)
    # every (state, chunk) pair once: 4 non-terminal states x 2^H chunks of ±1 actions
    pairs = [(s, np.array([1.0 if bits >> j & 1 else -1.0 for j in range(HORIZON)]))
             for s in range(N_STATES - 1) for bits in range(2**HORIZON)]
    states = torch.tensor([s for s, _ in pairs])
    actions = torch.tensor(np.stack([a for _, a in pairs])).float().unsqueeze(-1)
    rewards, done, valid, next_states = (torch.as_tensor(np.stack(x)) for x in zip(*[rollout(s, a) for s, a in pairs]))
    truth = torch.tensor(np.stack([true_q(s, a) for s, a in pairs])).float()

    network = dict(d_model=WIDTH, context_tokens=1, chunk_size=HORIZON, action_dim=1, layers=1, heads=2)
    critic, target = CriticExpert(n_critics=2, **network), CriticExpert(n_critics=2, **network)
    target.load_state_dict(critic.state_dict())
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    right = torch.ones(len(pairs) * HORIZON, HORIZON, 1)
    next_context = context(next_states.flatten())
    for _ in range(2000):
        with torch.no_grad():
            next_values = target(next_context, right)[:, :, -1].min(0).values.view(-1, HORIZON)
            targets, mask = per_prefix_targets(rewards.float(), done, valid, next_values, GAMMA)
        q = critic(context(states), actions)
        loss = sum(prefix_td_loss(q_k, targets, mask) for q_k in q)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        polyak_update(target, critic, 0.05)

    with torch.no_grad():
        q = critic(context(states), actions)
    error = (q - truth).abs()[:, valid].max().item()
    assert error < 0.05, f"largest error of a valid prefix's Q: {error:.3f}"
