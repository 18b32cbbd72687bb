"""corft's model file (format 2): JSON and safetensors, so that reading a model never runs code.

``model.save(path)`` writes one zip holding exactly

- ``corft_model.json``: what rebuilds the model: ``format_version``, ``algorithm_name``, the policy class's
  alias (``policy_class``), every constructor argument (``arguments``: chunk size, discount, batch size,
  learning rate and the numbers of its schedule, ``execute``, ``policy_kwargs``, the algorithm's options,
  ...), the training progress (``progress``: the gradient step count, CO-RFT's stage), the observation and
  action spaces (:func:`~corft_envs.episode_store.space_to_json`), the normalisation statistics and the
  instructions as JSON lists, the env and the stores the data came from (``dataset``) and, for a tower
  from a ``vision_model`` folder, that model's ``transformers`` config (``vision_model_config``), so that
  the folder is never read again, and the training's random streams (``random_state``), so that a resumed
  run draws the batches and noise an uninterrupted one would;
- ``policy.safetensors``: the policy's state dict;
- ``optimizers.json`` and ``optimizers.safetensors``: each optimizer's state dict for resuming, its
  tensors (moments, step counts) in the safetensors file, the rest (parameter groups) in the JSON.

``model.save_pretrained(folder)`` writes Hugging Face's layout: ``config.json`` (the same JSON as
``corft_model.json``) and ``model.safetensors``, plus the two optimizer files when asked.

Reading uses :mod:`zipfile`, :mod:`json` and :func:`safetensors.torch.load` only, and checks the JSON
before anything is built. A zip in the old format (stable-baselines3's, whose ``data`` member holds
pickled objects that run code when read) is refused with :class:`OldFormatError`;
``corft convert-model`` (:mod:`corft_algos.legacy_format`) converts a trusted one once.

The package is split by job; this module is its public face:

* :mod:`~corft_algos.model_format.schema`: the members and fields, the errors, JSON values;
* :mod:`~corft_algos.model_format.writer`: ``corft_model.json`` and the tensor files of a model, written;
* :mod:`~corft_algos.model_format.reader`: a model file read and checked, nothing built;
* :mod:`~corft_algos.model_format.restore`: a model rebuilt from what was read.
"""

from corft_algos.model_format.reader import read_model, read_model_config
from corft_algos.model_format.restore import load_optimizer_states, normalization_from_json, restore_model
from corft_algos.model_format.schema import (
    CONFIG_FIELDS,
    FORMAT_VERSION,
    MODEL_JSON,
    NORMALIZATION_FIELDS,
    OLD_FORMAT_MEMBER,
    OPTIMIZERS_JSON,
    OPTIMIZERS_TENSORS,
    POLICY_TENSORS,
    PRETRAINED_NAMES,
    UNSAVED_PARAMETERS,
    ZIP_MEMBERS,
    ModelFileError,
    OldFormatError,
    SavedModel,
    converted_path,
    saved_parameters,
    to_json_value,
)
from corft_algos.model_format.writer import (checked_vision_model_config, model_config, model_files, optimizer_files,
                                             write_model_zip, write_pretrained)

__all__ = [
    "CONFIG_FIELDS",
    "FORMAT_VERSION",
    "MODEL_JSON",
    "NORMALIZATION_FIELDS",
    "OLD_FORMAT_MEMBER",
    "OPTIMIZERS_JSON",
    "OPTIMIZERS_TENSORS",
    "POLICY_TENSORS",
    "PRETRAINED_NAMES",
    "UNSAVED_PARAMETERS",
    "ZIP_MEMBERS",
    "ModelFileError",
    "OldFormatError",
    "SavedModel",
    "checked_vision_model_config",
    "converted_path",
    "load_optimizer_states",
    "model_config",
    "model_files",
    "normalization_from_json",
    "optimizer_files",
    "read_model",
    "read_model_config",
    "restore_model",
    "saved_parameters",
    "to_json_value",
    "write_model_zip",
    "write_pretrained",
]
