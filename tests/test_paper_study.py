"""The paper study's plumbing on a tiny preset, and its summary arithmetic against hand-computed cases."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.paper import (
    PRESETS,
    Preset,
    execute_flags,
    Run,
    claims,
    markdown_table,
    pooled_rows,
    relative_change,
    run_study,
    train_command,
)
from corft_algos.cli import main
from corft_algos.evaluation import load_model

TINY = Preset(tasks=("PickPlace",), demos=(3,),
              methods=("bc", "sft", "offline_rl_h1", "corft", "corft_no_calql", "corft_base"),
              seeds=(0,), eval_episodes=1, steps=2, batch_size=4, image_size=32, videos=1,
              policy_kwargs={"d_model": 32, "fusion_layers": 1, "vision_tokens": 2,
                             "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}})
KEYS = {"task", "method", "demos", "positions", "seed", "success_rate", "success_ci95", "cycle_time_steps",
        "cycle_time_s", "episodes", "successes"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("study")
    records = run_study(TINY, out, log=lambda line: None)
    yield out, records
    torch.set_num_threads(threads)


def record(method: str, positions: str, successes: int, episodes: int, cycle: float | None, seed: int = 0) -> dict:
    return {"task": "T", "demos": 30, "method": method, "positions": positions, "seed": seed,
            "success_rate": successes / episodes, "success_ci95": [0, 1], "cycle_time_steps": cycle,
            "cycle_time_s": None if cycle is None else cycle / 10, "episodes": episodes, "successes": successes}


def test_study_writes_records_table_plots_and_videos(study):
    out, records = study
    assert len(records) == len(TINY.methods) * 2
    assert {r["method"] for r in records} == set(TINY.methods) and {r["positions"] for r in records} == {"train",
                                                                                                         "unseen"}
    saved = json.loads((out / "results.json").read_text())
    assert saved == records and all(set(r) == KEYS for r in saved)
    table = (out / "results.md").read_text()
    assert "| PickPlace | 3 | corft_no_calql | unseen |" in table and "paper +57%" in table
    assert (out / "success.png").stat().st_size > 0 and (out / "cycle_time.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "videos" / "PickPlace_corft").iterdir()) == ["episode_000_seed_10000.mp4"]


def test_base_policy_is_pretrained_on_the_other_tasks_and_fine_tuned(study, tmp_path):
    out, _ = study
    run = Run("PickPlace", 3, "corft_base", 0)
    base = load_model(run.base().directory(out) / "model.zip", device="cpu")
    assert base.dataset_env_id == "corft/Push-v0"  # the first of the other tasks' stores
    instructions = base.policy.instructions
    assert any("block" in text for text in instructions) and any("cube" in text for text in instructions)
    assert not any("bowl" in text for text in instructions)  # nothing of the target task
    command = train_command(out, TINY, run)
    assert command[command.index("--init-from") + 1] == str(run.base().directory(out) / "model.zip")
    assert (run.directory(out) / "model.zip").is_file()


def test_study_resumes_without_redoing_finished_work(study):
    out, records = study
    model = Run("PickPlace", 3, "corft", 0).directory(out) / "model.zip"
    before = model.stat().st_mtime_ns
    assert run_study(TINY, out, log=lambda line: None) == records
    assert model.stat().st_mtime_ns == before


def test_methods_share_the_budget_and_ablations_reach_the_algorithm(tmp_path):
    corft = train_command(tmp_path, TINY, Run("PickPlace", 3, "corft_no_calql", 0))
    assert corft[corft.index("--il-steps") + 1] == "1" and corft[corft.index("--rl-steps") + 1] == "1"
    assert json.loads(corft[corft.index("--algo-kwargs") + 1]) == {"calql_alpha": 0.0}
    bc = train_command(tmp_path, TINY, Run("PickPlace", 3, "bc", 0))
    assert bc[bc.index("--steps") + 1] == "2" and bc[bc.index("--chunk-size") + 1] == "1"


def test_pooling_over_seeds_by_hand():
    # seed 0: 3/4 successes, mean 10 steps; seed 1: 1/4, 20 steps -> 4/8 = 50%, cycle (3*10 + 1*20) / 4 = 12.5
    rows = pooled_rows([record("sft", "train", 3, 4, 10.0, seed=0), record("sft", "train", 1, 4, 20.0, seed=1)])
    (row,) = rows
    assert row.success_rate == 0.5 and row.cycle_time_steps == 12.5 and (row.seeds, row.episodes) == (2, 8)
    # Wilson 95% for 4/8: centre (0.5 + 1.96^2/16) / (1 + 1.96^2/8) = 0.5, half-width 0.2941...
    assert row.success_ci95 == pytest.approx((0.2152, 0.7848), abs=1e-4)


def test_relative_changes_and_claims_by_hand():
    assert relative_change(0.66, 0.4) == pytest.approx(0.65)
    assert relative_change(35.0, 50.0) == pytest.approx(-0.3)
    assert relative_change(0.5, 0.0) is None and relative_change(None, 1.0) is None
    rows = pooled_rows([record("sft", "train", 4, 10, 50.0), record("corft", "train", 6, 10, 40.0),
                        record("sft", "unseen", 2, 10, 60.0), record("corft", "unseen", 5, 10, 45.0)])
    (line,) = claims(rows)
    assert "success vs SFT +50%" in line and "cycle time vs SFT -20%" in line and "unseen positions 50% vs SFT 20%" in line
    table = markdown_table(rows)
    assert "| T | 30 | corft | train | 60% [31%, 83%] | 40.0 (4.0) | +50% | -20% | 1 × 10 |" in table


def test_bench_command_line_refuses_an_unknown_preset(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["bench", "paper", "--preset", "huge", "--out", str(tmp_path)])
    assert "invalid choice: 'huge'" in capsys.readouterr().err


def test_receding_horizon_applies_to_methods_with_longer_chunks():
    quick = PRESETS["quick"]
    assert execute_flags(quick, Run("PickPlace", 30, "corft", 0)) == ["--execute", str(quick.execute)]
    assert execute_flags(quick, Run("PickPlace", 30, "bc", 0)) == []  # H = 1 runs its whole chunk
    assert execute_flags(TINY, Run("PickPlace", 30, "corft", 0)) == []  # no receding horizon asked
