"""Every vision-language backbone the README names (SigLIP, Idefics3, SmolVLM, PaliGemma) as a `vision_model` folder:
the policy takes its vision tower, fine-tunes it with the rest, and a saved model loads without the folder.

Each backbone is a tiny random model of its real architecture, saved with `save_pretrained`, as a user's download is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, Idefics3Config, PaliGemmaConfig, PretrainedConfig, SiglipConfig, SmolVLMConfig

from corft_algos import SFT
from tests.helpers import TINY_POLICY

pytestmark = pytest.mark.integration

#: A tiny vision transformer for every backbone: 32 px images in 8 px patches.
VISION = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8}
#: A tiny language model for the backbones that carry one (special tokens inside its 64-token vocabulary).
TEXT = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 1, "vocab_size": 64, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}

#: Backbone -> (its tiny config, the class of the vision tower the policy must use).
BACKBONES: dict[str, tuple[PretrainedConfig, str]] = {
    "siglip": (SiglipConfig(vision_config=VISION, text_config={k: v for k, v in TEXT.items()
                                                                if k != "num_key_value_heads"}),
               "SiglipVisionModel"),
    "idefics3": (Idefics3Config(vision_config=VISION, text_config={**TEXT, "model_type": "llama"}, scale_factor=2),
                 "Idefics3VisionTransformer"),
    "smolvlm": (SmolVLMConfig(vision_config=VISION, text_config={**TEXT, "model_type": "llama"}, scale_factor=2),
                "SmolVLMVisionTransformer"),
    "paligemma": (PaliGemmaConfig(vision_config={**VISION, "model_type": "siglip_vision_model"},
                                  text_config={**TEXT, "model_type": "gemma", "head_dim": 8}, projection_dim=16),
                  "SiglipVisionModel"),
}


def saved_backbone(name: str, folder: Path) -> Path:
    """The tiny ``name`` backbone, random init, saved to ``folder`` as ``save_pretrained`` writes it."""
    torch.manual_seed(0)
    AutoModel.from_config(BACKBONES[name][0]).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_a_vision_language_backbone_fine_tunes_and_loads_without_its_folder(name, tiny_dataset, observation, tmp_path):
    folder = saved_backbone(name, tmp_path / name)
    kwargs = {**{k: v for k, v in TINY_POLICY.items() if k != "vision_config"}, "vision_model": str(folder)}
    model = SFT(dataset=tiny_dataset, chunk_size=4, batch_size=4, seed=0, policy_kwargs=kwargs)
    tower = model.policy.vision.model
    assert type(tower).__name__ == BACKBONES[name][1]
    before = {key: value.clone() for key, value in tower.state_dict().items()}
    model.learn(2)
    moved = [key for key, value in tower.state_dict().items() if not torch.equal(value, before[key])]
    assert moved, f"training left every weight of the {name} tower as it was"
    chunk, _ = model.predict(observation, deterministic=True)
    assert chunk.shape == (4, 7)

    model.save(tmp_path / "model.zip")
    for path in folder.iterdir():
        path.unlink()
    loaded = SFT.load(tmp_path / "model.zip", device="cpu")
    np.testing.assert_allclose(loaded.predict(observation, deterministic=True)[0], chunk, atol=1e-5)
