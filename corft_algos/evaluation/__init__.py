"""Evaluate a chunked policy in simulation: success rate with a 95% interval, cycle time, videos.

The package splits the job in three, and re-exports what its users import:

- :mod:`~corft_algos.evaluation.rollout`: the evaluation env made for a model, and its episodes
  (:func:`evaluate_model`, :func:`run_episodes`, :func:`evaluate_episode`), each run by the one episode loop
  :func:`corft_envs.rollout.run_episode`; :mod:`~corft_algos.evaluation.vectorized` runs them over several
  processes with the same result;
- :mod:`~corft_algos.evaluation.statistics`: the success rate and its Wilson 95% interval
  (:func:`wilson_interval`), the cycle time and the JSON report (:class:`EvalResult`);
- :mod:`~corft_algos.evaluation.video`: every camera's image per control step, written as a labelled mp4 per episode.

:func:`load_model` (:mod:`~corft_algos.evaluation.loading`) loads a saved model of any registered algorithm,
reading the algorithm's name from the model file's JSON.
"""

from corft_algos.evaluation.loading import load_model, saved_algorithm_name
from corft_algos.evaluation.rollout import (
    DEFAULT_EVAL_SEED,
    IMAGE_KEY,
    SCENE_KWARGS,
    ChunkPolicy,
    check_model_fits_env,
    eval_env_kwargs,
    evaluate_episode,
    evaluate_model,
    make_eval_env,
    model_actions,
    model_image_size,
    observation_differences,
    rollout_execute,
    run_episodes,
    trained_env_id,
    trained_scene,
)
from corft_algos.evaluation.statistics import EvalResult, wilson_interval
from corft_algos.evaluation.vectorized import evaluate_vectorized, run_episodes_vectorized
from corft_algos.evaluation.video import FrameRecorder, find_frame_recorder
from corft_algos.labelled_video import video_writer, write_video
from corft_envs.rollout import EpisodeOutcome

__all__ = [
    "DEFAULT_EVAL_SEED",
    "IMAGE_KEY",
    "SCENE_KWARGS",
    "ChunkPolicy",
    "EpisodeOutcome",
    "EvalResult",
    "FrameRecorder",
    "check_model_fits_env",
    "eval_env_kwargs",
    "evaluate_episode",
    "evaluate_model",
    "evaluate_vectorized",
    "find_frame_recorder",
    "load_model",
    "make_eval_env",
    "model_actions",
    "model_image_size",
    "observation_differences",
    "rollout_execute",
    "run_episodes",
    "run_episodes_vectorized",
    "saved_algorithm_name",
    "trained_env_id",
    "trained_scene",
    "video_writer",
    "wilson_interval",
    "write_video",
]
