"""Data-parallel training under torchrun (gloo on CPU), batch sharding and the on-device precision options.

The 2-process runs use the real launcher (``torch.distributed.run``) and the
real CLI; their logged metrics are averaged over the ranks, so they compare
with a single process training on the same global batch.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from corft_algos import CORFT, SFT
from corft_algos.augmentation import random_offsets, shift_images
from corft_algos.data import ChunkDataset
from corft_algos.distributed import Rank, shard_of
from corft_algos.model_format import read_model, read_model_config
from tests.helpers import TINY_POLICY

pytestmark = pytest.mark.integration

TRAIN = ["train", "--data", None, "--batch-size", "8", "--chunk-size", "4",
         "--policy-kwargs", json.dumps(TINY_POLICY), "--device", "cpu", "--threads", "1", "--quiet",
         "--log-interval", "1", "--checkpoint-every", "2"]


def run_train(data: Path, out: Path, processes: int, *extra: str) -> subprocess.CompletedProcess:
    args = [arg if arg is not None else str(data) for arg in TRAIN] + ["--out", str(out), *extra]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] \
        if processes > 1 else [sys.executable]
    result = subprocess.run([*launcher, "-m", "corft_algos.cli", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def logged(out: Path) -> list[dict[str, float]]:
    with open(out / "progress.csv") as file:
        return [{key: float(value) for key, value in row.items() if value} for row in csv.DictReader(file)]


def policy_parameters(path: Path) -> dict[str, torch.Tensor]:
    return {name: value for name, value in read_model(path).policy_state.items() if value.is_floating_point()}


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum(((a[name] - b[name]) ** 2).sum() for name in a)))


@pytest.mark.parametrize("algo, extra", [
    ("sft", ()),
    ("corft", ("--il-steps", "2", "--rl-steps", "3", "--algo-kwargs",
               '{"critic_warmup_steps": 0, "policy_delay": 1, "target_noise": 0.0, "calql_alpha": 0.0}')),
])
@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tiny_dataset, tmp_path, algo, extra):
    steps = () if algo == "corft" else ("--steps", "5")
    one, two = tmp_path / "one", tmp_path / "two"
    run_train(tiny_dataset, one, 1, "--algo", algo, *steps, *extra)
    printed = run_train(tiny_dataset, two, 2, "--algo", algo, *steps, *extra).stdout
    assert printed.count("training ") == 1 and "in 2 processes" in printed  # rank 0 alone prints

    single, parallel = logged(one), logged(two)
    assert len(single) == len(parallel) == 5
    # Step 1 starts from the same parameters: the all-reduced gradient is the global batch's.
    assert parallel[0]["train/imitation_loss"] == pytest.approx(single[0]["train/imitation_loss"], rel=1e-5)
    assert parallel[0]["train/grad_norm"] == pytest.approx(single[0]["train/grad_norm"], rel=1e-5)
    # Later steps drift by float summation order, which Adam's first steps amplify a little, and by each
    # shard dividing its masked means by its own count of valid steps.
    for key in ("td_loss", "critic_grad_norm", "actor_bc_loss"):
        first = next((k for k, row in enumerate(single) if f"train/{key}" in row), None)
        if first is not None:
            assert parallel[first][f"train/{key}"] == pytest.approx(single[first][f"train/{key}"], rel=0.01), key

    start = policy_parameters(one / "checkpoints" / "rl_model_2_steps.zip")
    end_one, end_two = policy_parameters(one / "model.zip"), policy_parameters(two / "model.zip")
    assert distance(end_one, end_two) < 0.1 * distance(end_one, start)


@pytest.mark.slow
def test_torchrun_resumes_from_rank_0s_checkpoint(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    run_train(tiny_dataset, out, 2, "--algo", "sft", "--steps", "2")
    printed = run_train(tiny_dataset, out, 2, "--algo", "sft", "--steps", "4").stdout
    assert f"resumed from {out / 'model.zip'} at gradient step 2" in printed
    assert read_model_config(out / "model.zip")["progress"]["num_timesteps"] == 4
    assert sorted(path.name for path in (out / "checkpoints").iterdir()) == ["rl_model_2_steps.zip",
                                                                               "rl_model_4_steps.zip"]


def test_a_global_batch_that_does_not_split_evenly_is_refused(tiny_dataset, tmp_path):
    args = [arg if arg is not None else str(tiny_dataset) for arg in TRAIN]
    args[args.index("--batch-size") + 1] = "5"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                             "-m", "corft_algos.cli", *args, "--out", str(tmp_path / "run"), "--algo", "sft",
                             "--steps", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "batch_size 5 is the global batch and must split evenly across 2 processes" in result.stderr


def test_shards_cover_the_global_batch_in_order():
    assert [shard_of(8, Rank(rank, 2)) for rank in (0, 1)] == [slice(0, 4), slice(4, 8)]
    assert shard_of(6, Rank()) == slice(0, 6)
    with pytest.raises(ValueError, match="use a multiple of 4"):
        shard_of(6, Rank(1, 4))


def test_loader_shards_concatenate_to_the_unsharded_batches(tiny_dataset):
    dataset = ChunkDataset(tiny_dataset, chunk_size=4)
    whole = next(iter(dataset.make_loader(8, seed=3)))
    halves = [next(iter(dataset.make_loader(8, seed=3, shard=shard_of(8, Rank(rank, 2))))) for rank in (0, 1)]
    for key in ("actions", "frame", "valid"):
        torch.testing.assert_close(torch.cat([half[key] for half in halves]), whole[key])


def test_shift_images_hand_computed_case():
    image = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)  # rows [0 1 2] [3 4 5] [6 7 8]
    # offset (dy, dx) = (0, 2) with pad 1: output (i, j) = input (clip(i - 1), clip(j + 1))
    shifted = shift_images(image, torch.tensor([[0, 2]]), pad=1)
    assert shifted[0, 0].tolist() == [[1, 2, 2], [1, 2, 2], [4, 5, 5]]
    torch.testing.assert_close(shift_images(image, torch.tensor([[1, 1]]), pad=1), image)
    offsets = random_offsets(1000, pad=4, generator=torch.Generator().manual_seed(0))
    assert offsets.min() == 0 and offsets.max() == 8 and offsets.shape == (1000, 2)


def test_bf16_autocast_trains_and_auto_precision_is_fp32_on_cpu(tiny_dataset):
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, policy_kwargs=TINY_POLICY, device="cpu")
    assert model.precision == "auto" and model.autocast_dtype is None
    bf16 = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, policy_kwargs=TINY_POLICY, device="cpu",
               precision="bf16")
    assert bf16.autocast_dtype is torch.bfloat16
    before = [p.detach().clone() for p in bf16.policy.parameters()]
    bf16.learn(2)
    assert all(p.dtype == torch.float32 for p in bf16.policy.parameters())  # autocast keeps fp32 weights
    assert any(not torch.equal(a, b) for a, b in zip(before, bf16.policy.parameters()))
    with pytest.raises(ValueError, match="precision='fp16' is unknown"):
        SFT(dataset=tiny_dataset, policy_kwargs=TINY_POLICY, precision="fp16")


def test_training_imports_neither_hardware_driver():
    """A GPU node without franky or libusb can train: the CLI loads the drivers only for real hardware."""
    code = ("import sys, corft_algos.cli, corft_robots; "
            "print(sorted(m for m in ('franky', 'pyrealsense2', 'franky_sim') if m in sys.modules)); "
            "corft_robots.SafetyLimits; print('pyrealsense2' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "False"]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_gpu_training_steps_make_no_host_device_sync(tiny_dataset, precision):
    for algorithm, kwargs in ((SFT, {}), (CORFT, {"il_steps": 1, "critic_warmup_steps": 0, "policy_delay": 1})):
        model = algorithm(dataset=tiny_dataset, chunk_size=4, batch_size=8, seed=0, device="cuda",
                          precision=precision, policy_kwargs=TINY_POLICY, **kwargs)
        model.learn(3)  # optimizer states, CO-RFT's context cache and first critic step
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                metrics = model.train_step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
        assert all(torch.isfinite(torch.as_tensor(value)) for value in metrics.values())
