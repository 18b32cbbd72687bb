"""Training runs and evaluations as library calls: what ``corft train`` and ``corft eval`` do, without a
command line.

- :class:`RunFolder` owns a run's folder: its layout (config.json, data.json, model.zip, checkpoints/,
  progress.csv), the lock against two trainings in one folder (a stale one is taken over), and where a rerun
  resumes (the newest intact saved state, on the same data);
- :func:`train` trains a :class:`TrainRequest` (the fields of ``corft train``) in its folder, resuming it;
- :func:`evaluate` runs an :class:`EvalRequest` (the fields of ``corft eval``) and returns an
  :class:`Evaluation` (its report lines, its JSON).

Both raise :class:`UsageError` for a request that cannot run, with a message that names the ``corft`` flag
to change::

    from corft_algos.runs import EvalRequest, TrainRequest, evaluate, train

    model = train(TrainRequest(data=["data/pickplace_30"], out="runs/pp_sft", algo="sft", steps=2000))
    print(evaluate(EvalRequest(model, episodes=20, quiet=True)).to_json()["success_rate"])
"""

from corft_algos.runs.evaluating import DEFAULT_EVAL_THREADS, EvalRequest, Evaluation, evaluate
from corft_algos.runs.folder import RunFolder, UsageError, check_model_file
from corft_algos.runs.request import DEFAULT_STEPS, TrainRequest, resolve
from corft_algos.runs.training import train

__all__ = ["DEFAULT_EVAL_THREADS", "DEFAULT_STEPS", "EvalRequest", "Evaluation", "RunFolder", "TrainRequest", "UsageError",
           "check_model_file", "evaluate", "resolve", "train"]
