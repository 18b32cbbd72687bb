"""CO-RFT's loss terms against hand-computed cases (DESIGN.md section 4)."""

import math

import pytest
import torch

from corft_algos.corft import polyak_update
from corft_algos.losses import (
    actor_q_term,
    calql_penalty,
    discounted_prefix_sums,
    last_valid_index,
    per_prefix_targets,
    prefix_td_loss,
)

GAMMA = 0.5


def test_discounted_prefix_sums():
    rewards = torch.tensor([[1.0, 2.0, 4.0]])
    # R_0 = 1, R_1 = 1 + 0.5*2 = 2, R_2 = 2 + 0.25*4 = 3
    assert discounted_prefix_sums(rewards, GAMMA).tolist() == [[1.0, 2.0, 3.0]]


def test_per_prefix_targets_with_a_terminal_inside_the_chunk():
    # H = 4; the episode terminates with reward 1 at j = 1 (t + 1 = T - 1): j = 2, 3 are past the end.
    rewards = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    done = torch.tensor([[False, True, True, True]])
    valid = torch.tensor([[True, True, False, False]])
    next_values = torch.tensor([[0.8, 0.6, 0.4, 0.2]])
    targets, mask = per_prefix_targets(rewards, done, valid, next_values, GAMMA)
    # y_0 = 0 + 0.5 * 0.8 = 0.4 (not done yet: bootstrap from c_{t+1})
    # y_1 = 0 + 0.5 * 1 + 0 (terminal: no bootstrap) = 0.5
    assert targets[0, :2].tolist() == pytest.approx([0.4, 0.5])
    assert mask.tolist() == [[True, True, False, False]]


def test_per_prefix_targets_of_a_truncated_episode_bootstrap_at_the_end():
    # time limit at j = 2: no terminal, so the last valid prefix still bootstraps from o_T.
    rewards = torch.zeros(1, 4)
    done = torch.zeros(1, 4, dtype=torch.bool)
    valid = torch.tensor([[True, True, True, False]])
    next_values = torch.tensor([[1.0, 1.0, 0.8, 0.8]])  # V at c_{t+1}, c_{t+2}, c_T (=c_{t+3}), clamped
    targets, mask = per_prefix_targets(rewards, done, valid, next_values, GAMMA)
    assert targets[0, :3].tolist() == pytest.approx([0.5, 0.25, 0.125 * 0.8])
    assert mask[0].tolist() == [True, True, True, False]


def test_boundary_only_keeps_the_last_valid_prefix():
    rewards = torch.zeros(2, 3)
    done = torch.zeros(2, 3, dtype=torch.bool)
    valid = torch.tensor([[True, True, True], [True, False, False]])
    targets, mask = per_prefix_targets(rewards, done, valid, torch.ones(2, 3), GAMMA, boundary_only=True)
    assert mask.tolist() == [[False, False, True], [True, False, False]]
    assert targets[0, 2].item() == pytest.approx(0.125) and targets[1, 0].item() == pytest.approx(0.5)
    assert last_valid_index(valid).tolist() == [2, 0]


def test_prefix_td_loss_sums_the_valid_prefixes_and_averages_the_samples():
    prediction = torch.tensor([[1.0, 5.0], [3.0, 100.0]])
    target = torch.tensor([[0.0, 5.0], [1.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False]])
    # sample 0: 1 + 0, sample 1: 4 (the masked entry ignored); over 2 samples
    assert prefix_td_loss(prediction, target, mask).item() == pytest.approx((1 + 0 + 4) / 2)


@pytest.mark.parametrize("horizon", [1, 10])
def test_the_full_chunk_heads_td_pull_does_not_depend_on_the_chunk_length(horizon):
    # one sample, every prefix valid, Q = 3 against targets of 1: d/dQ_head = 2 (3 - 1) = 4 for every H,
    # the balance a per-sample Cal-QL push of α on Q(c, a_data) meets (equilibrium Q_head = y + α/2)
    prediction = torch.full((1, horizon), 3.0, requires_grad=True)
    prefix_td_loss(prediction, torch.ones(1, horizon), torch.ones(1, horizon, dtype=torch.bool)).backward()
    assert prediction.grad[0, -1].item() == pytest.approx(4.0)


def test_calql_floor_lifts_sampled_q_to_the_monte_carlo_return():
    sample_q = torch.tensor([[0.1, 0.9]])
    data_q = torch.tensor([0.5])
    mc_return = torch.tensor([0.6])
    # max(0.1, 0.6) = 0.6, max(0.9, 0.6) = 0.9 -> logsumexp(0.6, 0.9) - 0.5
    expected = math.log(math.exp(0.6) + math.exp(0.9)) - 0.5
    assert calql_penalty(sample_q, data_q, mc_return).item() == pytest.approx(expected, rel=1e-6)
    # without the floor it would be logsumexp(0.1, 0.9) - 0.5: the floor raises it
    assert expected > math.log(math.exp(0.1) + math.exp(0.9)) - 0.5


def test_calql_penalty_averages_over_the_batch():
    sample_q = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    data_q = torch.tensor([0.0, 1.0])
    mc_return = torch.tensor([-1.0, -1.0])
    assert calql_penalty(sample_q, data_q, mc_return).item() == pytest.approx(math.log(2))


def test_calql_floors_only_the_samples_it_is_told_to():
    sample_q = torch.tensor([[0.1, 0.2, 0.9]])  # a uniform sample, then two of the policy's
    data_q, mc_return = torch.tensor([0.5]), torch.tensor([0.6])
    policy_only = torch.tensor([False, True, True])
    # uniform 0.1 stays, policy max(0.2, 0.6) = 0.6, max(0.9, 0.6) = 0.9
    expected = math.log(math.exp(0.1) + math.exp(0.6) + math.exp(0.9)) - 0.5
    assert calql_penalty(sample_q, data_q, mc_return, floored=policy_only).item() == pytest.approx(expected, rel=1e-6)
    every = math.log(2 * math.exp(0.6) + math.exp(0.9)) - 0.5
    assert calql_penalty(sample_q, data_q, mc_return).item() == pytest.approx(every, rel=1e-6)


def test_calql_on_heads_sums_the_masked_heads_per_sample_and_averages_the_samples():
    # B = 2 samples, N = 2 chunks, H = 2 heads; the floor G = 0 lifts nothing here but -1
    sample_q = torch.tensor([[[0.0, 1.0], [0.0, -1.0]],
                             [[2.0, 0.0], [2.0, 0.0]]])  # (B, N, H)
    data_q = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    mc_return = torch.tensor([0.0, 0.0])
    # sample 0, head 0: logsumexp(0, 0) - 0 = log 2; head 1: logsumexp(1, max(-1, 0)) - 1 = log(e + 1) - 1
    # sample 1, head 0: logsumexp(2, 2) - 1 = 1 + log 2; head 1: logsumexp(0, 0) - 0 = log 2
    heads = [[math.log(2), math.log(math.e + 1) - 1], [1 + math.log(2), math.log(2)]]
    every = torch.ones(2, 2, dtype=torch.bool)
    assert calql_penalty(sample_q, data_q, mc_return, head_mask=every).item() == pytest.approx(
        (sum(heads[0]) + sum(heads[1])) / 2, rel=1e-6)
    last_valid = torch.tensor([[False, True], [True, False]])  # sample 1 was cut after its first step
    assert calql_penalty(sample_q, data_q, mc_return, head_mask=last_valid).item() == pytest.approx(
        (heads[0][1] + heads[1][0]) / 2, rel=1e-6)


def test_actor_q_term_is_normalised_by_mean_absolute_q():
    prefix_q = torch.tensor([[2.0, -4.0, 100.0]], requires_grad=True)
    valid = torch.tensor([[True, True, False]])
    loss = actor_q_term(prefix_q, valid, weight=2.5)
    # mean Q over valid = -1, mean |Q| = 3 -> -2.5 * (-1) / 3
    assert loss.item() == pytest.approx(2.5 / 3)
    loss.backward()
    # the scale is a constant: d/dQ_j = -2.5 / (2 * 3) for valid j, 0 for the invalid one
    assert prefix_q.grad[0].tolist() == pytest.approx([-2.5 / 6, -2.5 / 6, 0.0])


def test_polyak_update():
    source, target = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    source.weight.data.fill_(1.0)
    target.weight.data.fill_(0.0)
    polyak_update(target, source, tau=0.25)
    assert target.weight.item() == pytest.approx(0.25)
