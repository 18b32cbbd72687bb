"""The paper study's plumbing on a tiny preset, and its summary arithmetic against hand-computed cases."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace

import pytest
import torch

from benchmarks.paper import (
    PRESETS,
    Preset,
    executed_actions,
    in_parallel,
    Run,
    claims,
    critic_share_lines,
    markdown_table,
    paired_difference,
    paired_lines,
    same_preset,
    needed_datasets,
    parse_args,
    plan_lines,
    planned_runs,
    plot,
    pooled_rows,
    relative_change,
    report_study,
    run_from_args,
    run_study,
    train_request,
    ROLLOUT_SEED,
)
from corft_algos.runs.training import cotraining_store_mix
from corft_envs.episode_store import read_index
from corft_algos.evaluation import load_model
from tests.helpers import TINY_POLICY

pytestmark = pytest.mark.integration

TINY = Preset(tasks=("PickPlace",), demos=(3,), methods=("bc", "sft", "offline_rl_h1", "corft"),
              ablations=("corft_no_calql", "corft_base", "sft_cotrain", "corft_rollouts_cotrain", "base"),
              rl_kwargs={"actor_q_weight": 0.5}, rollouts=2,
              seeds=(0,), eval_episodes=1, steps=2, il_fraction=0.5, batch_size=4, image_size=32, videos=1,
              execute=None,
              base_model=None, base_episodes=2, base_steps=2, finetune_steps=1, finetune_rl_steps=1,
              finetune_learning_rate=3e-4,
              policy_kwargs=TINY_POLICY)
KEYS = {"task", "method", "demos", "positions", "seed", "success_rate", "success_ci95", "cycle_time_steps",
        "cycle_time_s", "episodes", "successes", "distractors", "init", "named_object_first_rate", "outcomes",
        "stage2_data"}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("study")
    records = run_study(TINY, out, log=lambda line: None, jobs=2)  # trainings in two worker processes
    yield out, records
    torch.set_num_threads(threads)


def record(method: str, positions: str, successes: int, episodes: int, cycle: float | None, seed: int = 0) -> dict:
    return {"task": "T", "demos": 30, "method": method, "positions": positions, "seed": seed,
            "success_rate": successes / episodes, "success_ci95": [0, 1], "cycle_time_steps": cycle,
            "cycle_time_s": None if cycle is None else cycle / 10, "episodes": episodes, "successes": successes}


def test_study_writes_records_table_plots_and_videos(study):
    out, records = study
    assert len(records) == (len(TINY.methods) + len(TINY.ablations)) * 2
    assert [r["method"] for r in records[::2]] == [*TINY.methods, *TINY.ablations]  # the planned order
    assert {r["method"] for r in records} == {*TINY.methods, *TINY.ablations} and {r["positions"] for r in records} == {"train",
                                                                                                         "unseen"}
    saved = json.loads((out / "results.json").read_text())
    assert saved == records and all(set(r) == KEYS for r in saved)
    table = (out / "results.md").read_text()
    assert "| PickPlace | 3 | corft_no_calql | unseen |" in table and "paper +57%" in table
    assert (out / "success.png").stat().st_size > 0 and (out / "cycle_time.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "videos" / "PickPlace_corft").iterdir()) == ["episode_000_seed_10000.mp4"]


def test_base_policy_is_pretrained_on_lift_and_place_and_fine_tuned_or_evaluated_alone(study, tmp_path):
    out, records = study
    base = load_model(out / "base" / "model.zip", device="cpu")
    assert base.dataset_env_id == "corft/Lift-v0"  # the first pretraining store's
    instructions = base.policy.instructions
    assert instructions and all("cube" in text for text in instructions)
    assert not any("bowl" in text for text in instructions)  # nothing of the target task
    seen = json.loads((out / "base" / "manifest.json").read_text())["tasks"]
    assert seen["Lift"]["episodes"] == seen["Place"]["episodes"] == 2
    run = Run("PickPlace", 3, "corft_base", 0)
    request = train_request(out, TINY, run)
    assert request.init_from == out / "base" / "model.zip"
    assert (run.directory(out) / "model.zip").is_file()
    assert request.learning_rate == 3e-4  # the fine-tuning recipe's
    assert request.il_steps == request.rl_steps == 1
    cotrain = Run("PickPlace", 3, "sft_cotrain", 0)
    request = train_request(out, TINY, cotrain)
    assert request.data == (out / "data" / "PickPlace_3", out / "base" / "data" / "Lift", out / "base" / "data" / "Place")
    assert request.store_mix == [1.0, 0.5, 0.5]  # the demos half of every batch, each pretraining task a quarter
    assert load_model(cotrain.directory(out) / "model.zip", device="cpu").store_mix == [1.0, 0.5, 0.5]
    # Building a request collects nothing: the study fills the base's data once, before trainings run
    # several at a time (two collectors on one store would be refused).
    fresh = tmp_path / "fresh"
    train_request(fresh, TINY, cotrain)
    assert not fresh.exists()
    zero_shot = Run("PickPlace", 3, "base", 0)
    assert not (zero_shot.directory(out) / "model.zip").exists()  # evaluated as it is, not trained
    # ... in the target task's env, not in the base's own (Lift, its first store's)
    assert json.loads((zero_shot.directory(out) / "eval_train.json").read_text())["env_id"] == "corft/PickPlace-v0"
    inits = {r["method"]: r["init"] for r in records}
    assert inits["base"] == inits["corft_base"] == inits["sft_cotrain"] == "base" and inits["sft"] == "scratch"
    assert all(r["distractors"] is True and 0 <= r["named_object_first_rate"] <= 1 for r in records)


def test_a_stage2_row_starts_from_its_source_model_with_that_models_own_rollouts(study):
    out, records = study
    run, source = Run("PickPlace", 3, "corft_rollouts_cotrain", 0), Run("PickPlace", 3, "sft_cotrain", 0)
    assert run.stage2_source == source
    request = train_request(out, TINY, run)
    assert request.init_from == source.directory(out) / "model.zip"
    assert (request.il_steps, request.rl_steps) == (0, 1)  # stage 2 alone: the source did the imitation
    rollouts = out / "rollouts" / "PickPlace" / "demos_3" / "sft_cotrain" / "seed_0"
    assert request.data == (out / "data" / "PickPlace_3", rollouts, out / "base" / "data" / "Lift",
                            out / "base" / "data" / "Place")
    assert request.store_mix == [1.0, 1.0, 1.0, 1.0]  # demos and rollouts half of every batch, the base's the other
    index = read_index(rollouts)
    assert len(index.episodes) == 2 and index.meta.keep_failures  # the source model acting, failures kept
    assert [episode.seed for episode in index.episodes] == [ROLLOUT_SEED, ROLLOUT_SEED + 1]
    stage2 = {r["method"]: r["stage2_data"] for r in records}
    assert stage2["corft_rollouts_cotrain"] == "demos+rollouts" and stage2["corft"] == "demos"
    assert stage2["sft"] is None and stage2["base"] is None
    assert "corft_rollouts_cotrain − sft_cotrain" in (out / "results.md").read_text()


def test_a_stage2_rows_source_is_planned_before_it():
    alone = Preset(tasks=("Push",), demos=(30,), methods=("corft_no_q_rollouts_cotrain", "corft_rollouts_cotrain"),
                   seeds=(0, 1), eval_episodes=1, steps=1)
    assert [(run.method, run.seed) for run in planned_runs(alone)] == [
        ("sft_cotrain", 0), ("corft_no_q_rollouts_cotrain", 0), ("corft_rollouts_cotrain", 0),
        ("sft_cotrain", 1), ("corft_no_q_rollouts_cotrain", 1), ("corft_rollouts_cotrain", 1)]
    lines = plan_lines(alone)
    assert lines[0] == "demonstrations: 30 Push"
    assert "sft_cotrain: 2 trainings of 3000 steps" in lines
    assert "corft_rollouts_cotrain: 2 trainings of 0 imitation + 1000 offline RL steps" in lines
    assert "rollouts: 2 models × 100 episodes = 200 episodes" in lines  # one source per seed, shared by both rows
    assert lines[-1] == "evaluations: 12 × 1 episodes = 12 episodes"


def test_cotraining_store_mix_by_hand():
    assert cotraining_store_mix(2) == [1.0, 0.5, 0.5]  # the demos half, Lift and Place a quarter each
    assert cotraining_store_mix(2, 2) == [1.0, 1.0, 1.0, 1.0]  # demos and rollouts a quarter each
    assert cotraining_store_mix(3, 2) == pytest.approx([1.0, 1.0, 2 / 3, 2 / 3, 2 / 3])  # 2 : 2 between halves


def test_study_resumes_without_redoing_finished_work(study):
    out, records = study
    model = Run("PickPlace", 3, "corft", 0).directory(out) / "model.zip"
    before = model.stat().st_mtime_ns
    assert run_study(TINY, out, log=lambda line: None, jobs=1) == records
    assert model.stat().st_mtime_ns == before


def test_report_summarises_the_finished_trainings_only(study, tmp_path):
    out, records = study
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    (Run("PickPlace", 3, "corft", 0).directory(partial) / "eval_unseen.json").unlink()  # evaluation under way
    reported = report_study(TINY, partial, log=lambda line: None)
    assert reported == [r for r in records if r["method"] != "corft"]
    planned = len(TINY.methods) + len(TINY.ablations)
    assert f"partial: {planned - 1} of {planned} trainings evaluated" in (partial / "results.md").read_text()
    assert json.loads((partial / "results.json").read_text()) == reported
    assert report_study(TINY, out, log=lambda line: None) == records
    assert f"complete: all {planned} trainings evaluated" in (out / "results.md").read_text()
    with pytest.raises(RuntimeError, match="another preset"):
        report_study(replace(TINY, seeds=(0, 1)), partial, log=lambda line: None)
    with pytest.raises(RuntimeError, match="no training in .* has been evaluated yet"):
        report_study(TINY, tmp_path / "empty", log=lambda line: None)


def test_methods_share_the_budget_and_ablations_reach_the_algorithm(tmp_path):
    corft = train_request(tmp_path, TINY, Run("PickPlace", 3, "corft_no_calql", 0))
    assert corft.il_steps == 1 and corft.rl_steps == 1 and corft.steps is None
    assert corft.algo_kwargs == {"calql_alpha": 0.0, "actor_q_weight": 0.5}
    no_q = train_request(tmp_path, TINY, Run("PickPlace", 3, "corft_no_q", 0))
    assert no_q.algo_kwargs == {"actor_q_weight": 0.0}  # the method's own wins
    bc = train_request(tmp_path, TINY, Run("PickPlace", 3, "bc", 0))
    assert bc.steps == 2 and bc.chunk_size == 1 and bc.il_steps is None
    assert bc.algo_kwargs == {}  # the staged methods' arguments stay theirs


def test_ablations_run_on_the_first_task_and_demo_count_only():
    full = PRESETS["full"]
    runs = planned_runs(full)
    baseline_runs = len(full.tasks) * len(full.demos) * len(full.seeds) * len(full.methods)
    assert len(runs) == baseline_runs + len(full.seeds) * len(full.ablations)
    ablated = {(run.task, run.demos) for run in runs if run.method in full.ablations}
    assert ablated == {(full.tasks[0], full.demos[0])}
    assert {run.method for run in runs if run.task == "Stack"} == set(full.methods)
    assert needed_datasets(runs) == [(task, demos) for task in ("PickPlace", "Push", "Stack") for demos in (30, 60)]
    # the base rows need no target-task data of their own: the base is pretrained on Lift and Place
    one_task = planned_runs(Preset(tasks=("Push",), demos=(30,), methods=("sft",), ablations=("sft_base", "base"),
                                   seeds=(0,), eval_episodes=1, steps=1))
    assert needed_datasets(one_task) == [("Push", 30)]


def test_a_study_of_the_committed_base_seen_from_another_checkout_is_the_same_preset(tmp_path):
    here, there, other = tmp_path / "here.zip", tmp_path / "there.zip", tmp_path / "other.zip"
    here.write_bytes(b"base"), there.write_bytes(b"base"), other.write_bytes(b"another base")
    saved = json.loads(json.dumps(asdict(replace(TINY, base_model=str(there)))))
    assert same_preset(saved, replace(TINY, base_model=str(here)))
    assert not same_preset(saved, replace(TINY, base_model=str(other)))
    assert not same_preset(saved, replace(TINY, base_model=str(here), seeds=(0, 1)))


def test_paired_difference_by_hand():
    # seed 0: a = 1,1,0,0 and b = 1,0,0,0 (one more success); seed 1: a = 0,1 and b = 1,1 (one fewer)
    difference, (low, high) = paired_difference([([1, 1, 0, 0], [1, 0, 0, 0]), ([0, 1], [1, 1])])
    assert difference == pytest.approx(0.0) and -1 <= low < 0 < high <= 1
    assert paired_difference([([1, 1, 1], [0, 0, 0])]) == (1.0, (1.0, 1.0))  # every resample alike
    difference, (low, high) = paired_difference([([1, 1, 0, 0], [1, 0, 0, 0])])
    # per-episode differences 0, 1, 0, 0: mean 1/4; a resample's mean is k/4 for k = 0..4
    assert difference == 0.25 and (low, high) == (0.0, 0.75)
    with pytest.raises(ValueError, match="equal, non-empty lengths, got 2 and 1"):
        paired_difference([([1, 0], [1])])


def test_paired_lines_compare_seeds_both_methods_finished():
    def with_outcomes(method: str, seed: int, outcomes: list[int]) -> dict:
        return {**record(method, "train", sum(outcomes), len(outcomes), None, seed=seed), "outcomes": outcomes}

    records = [with_outcomes("sft", 0, [0, 0, 1, 0]), with_outcomes("sft", 1, [1, 0, 0, 0]),
               with_outcomes("sft_cotrain", 0, [1, 1, 1, 0]), with_outcomes("sft_base", 2, [1, 1, 1, 1])]
    (line,) = paired_lines(records)  # sft_base has no seed sft also has: no line
    assert line.startswith("- T, 30 demos, train: sft_cotrain − sft = +50.0 points, 95% CI [")
    assert line.endswith("(training seeds 0; the same evaluation seeds)")


def test_critic_share_counts_the_groups_whose_interval_is_above_zero():
    def with_outcomes(method: str, demos: int, positions: str, outcomes: list[int]) -> dict:
        return {**record(method, positions, sum(outcomes), len(outcomes), None), "demos": demos, "outcomes": outcomes}

    records = [with_outcomes("corft_cotrain", 30, "train", [1, 1, 1, 1]),  # +1 on every episode: CI [1, 1]
               with_outcomes("corft_no_q_cotrain", 30, "train", [0, 0, 0, 0]),
               with_outcomes("corft_cotrain", 60, "train", [1, 1, 0, 0]),  # +0.25, CI [0, 0.75]: not above zero
               with_outcomes("corft_no_q_cotrain", 60, "train", [1, 0, 0, 0]),
               with_outcomes("corft_cotrain", 30, "unseen", [0, 0]),
               with_outcomes("corft_no_q_cotrain", 30, "unseen", [1, 1])]
    (line,) = critic_share_lines(records)
    assert line == ("the critic's share, corft_cotrain − corft_no_q_cotrain, above zero (95% CI): train positions "
                    "in 1 of 2 task/demos groups; unseen positions in 0 of 1 task/demos groups (target: at least 3 "
                    "groups)")


def test_pooling_over_seeds_by_hand():
    # seed 0: 3/4 successes, mean 10 steps; seed 1: 1/4, 20 steps -> 4/8 = 50%, cycle (3*10 + 1*20) / 4 = 12.5
    rows = pooled_rows([record("sft", "train", 3, 4, 10.0, seed=0), record("sft", "train", 1, 4, 20.0, seed=1)])
    (row,) = rows
    assert row.success_rate == 0.5 and row.cycle_time_steps == 12.5 and (row.seeds, row.episodes) == (2, 8)
    # Wilson 95% for 4/8: centre (0.5 + 1.96^2/16) / (1 + 1.96^2/8) = 0.5, half-width 0.2941...
    assert row.success_ci95 == pytest.approx((0.2152, 0.7848), abs=1e-4)
    assert row.named_object_first_rate is None  # not reported by these records
    # named object lifted first: 3 of 4 episodes on seed 0, 1 of 8 on seed 1 -> 4 of 12
    named = pooled_rows([{**record("sft", "train", 3, 4, 10.0, seed=0), "named_object_first_rate": 0.75},
                         {**record("sft", "train", 1, 8, 20.0, seed=1), "named_object_first_rate": 0.125}])
    assert named[0].named_object_first_rate == pytest.approx(4 / 12)
    assert "| 33% | 2 × 6 |" in markdown_table(named)


def test_relative_changes_and_claims_by_hand():
    assert relative_change(0.66, 0.4) == pytest.approx(0.65)
    assert relative_change(35.0, 50.0) == pytest.approx(-0.3)
    assert relative_change(0.5, 0.0) is None and relative_change(None, 1.0) is None
    rows = pooled_rows([record("sft", "train", 4, 10, 50.0), record("corft", "train", 6, 10, 40.0),
                        record("sft", "unseen", 2, 10, 60.0), record("corft", "unseen", 5, 10, 45.0)])
    (line,) = claims(rows)
    assert "success vs SFT +50%" in line and "cycle time vs SFT -20%" in line and "unseen positions 50% vs SFT 20%" in line
    table = markdown_table(rows)
    assert "| T | 30 | corft | train | 60% [31%, 83%] | 40.0 (4.0) | +50% | -20% | – | 1 × 10 |" in table
    # the co-trained rows against the co-trained SFT: 8/10 against 5/10 is +60%, 30 steps against 40 is -25%
    cotrained = pooled_rows([record("sft_cotrain", "train", 5, 10, 40.0), record("corft_cotrain", "train", 8, 10, 30.0),
                             record("sft_cotrain", "unseen", 3, 10, 50.0),
                             record("corft_cotrain", "unseen", 4, 10, 50.0)])
    (line,) = claims(cotrained)
    assert line.startswith("T, 30 demos, corft_cotrain vs sft_cotrain: success vs SFT +60%")
    assert "cycle time vs SFT -25%" in line and "unseen positions 40% vs SFT 30%" in line
    assert "| T | 30 | corft_cotrain | train | 80% [49%, 94%] | 30.0 (3.0) | +60% | -25% |" in markdown_table(cotrained)


def test_study_command_line_refuses_bad_flags(capsys, tmp_path):
    with pytest.raises(SystemExit):
        parse_args(["--preset", "huge", "--out", str(tmp_path)])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert run_from_args(parse_args(["--report", "--out", str(tmp_path)])) == 1  # nothing evaluated there
    assert "python -m benchmarks.paper: error: no training in" in capsys.readouterr().err
    assert run_from_args(parse_args(["--report", "--fresh", "--out", str(tmp_path)])) == 2
    assert "drop --fresh" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--demos", "0", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--demos: must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--methods", "sft", "magic", "--out", str(tmp_path)])
    assert "invalid choice: 'magic'" in capsys.readouterr().err


def test_study_flags_run_part_of_a_preset(capsys, tmp_path):
    part = replace(PRESETS["fewshot"], demos=(60,), methods=("base", "sft"), seeds=(1, 2))
    (tmp_path / "preset.json").write_text(json.dumps(asdict(part)), encoding="utf-8")
    flags = ["--report", "--preset", "fewshot", "--out", str(tmp_path)]
    assert run_from_args(parse_args(flags)) == 1
    assert "holds a study of another preset" in capsys.readouterr().err
    assert run_from_args(parse_args([*flags, "--demos", "60", "--methods", "base", "sft", "--seeds", "1", "2"])) == 1
    assert "no training in" in capsys.readouterr().err  # the same preset: only nothing evaluated yet
    plan = ["--plan", "--preset", "full", "--tasks", "Push", "--demos", "30", "--seeds", "0",
            "--out", str(tmp_path / "new")]
    assert run_from_args(parse_args(plan)) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "demonstrations: 30 Push"
    assert "corft_h5_cotrain: 1 training of 3000 imitation + 1000 offline RL steps" in printed
    assert not (tmp_path / "new").exists()  # a plan runs nothing
    assert run_from_args(parse_args([*plan, "--methods", "sft_cotrain"])) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [  # the methods named, and no ablation
        "sft_cotrain: 1 training of 3000 steps", "evaluations: 2 × 50 episodes = 100 episodes"]


def test_receding_horizon_applies_to_methods_with_longer_chunks():
    quick = PRESETS["quick"]
    assert executed_actions(quick, Run("PickPlace", 30, "corft", 0)) == quick.execute
    assert executed_actions(quick, Run("PickPlace", 30, "bc", 0)) is None  # H = 1 runs its whole chunk
    assert executed_actions(TINY, Run("PickPlace", 30, "corft", 0)) is None  # no receding horizon asked


def test_parallel_calls_return_every_result_and_raise_the_first_error():
    assert sorted(result for _, result in in_parallel(int, [("1",), ("2",), ("3",)], jobs=2)) == [1, 2, 3]
    with pytest.raises(ValueError, match="invalid literal"):
        list(in_parallel(int, [("1",), ("x",)], jobs=2))


def test_plot_of_the_full_study_stays_readable(tmp_path):
    # the full study's shape: 3 tasks x 2 demo counts x 2 position sets x 4 methods, and 6 more methods on one group
    import matplotlib.image

    full = PRESETS["full"]
    records = [record(method, positions, 1, 2, 10.0) | {"task": task, "demos": demos}
               for task in full.tasks for demos in full.demos for positions in ("train", "unseen")
               for method in full.methods]
    records += [record(method, positions, 1, 2, 10.0) | {"task": full.tasks[0], "demos": full.demos[0]}
                for positions in ("train", "unseen") for method in full.ablations]
    for path in plot(pooled_rows(records), tmp_path):
        height, width = matplotlib.image.imread(path).shape[:2]
        assert width <= 1600 and height <= 1200, (path.name, width, height)  # was 11520 px wide with one panel
