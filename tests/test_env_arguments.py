"""Combining an env's flags with --env-kwargs, by hand."""

import pytest

from corft_envs.env_arguments import combine_env_kwargs


def test_settings_join_the_options_and_a_contradiction_names_both_sources():
    settings = {"positions": ("unseen", "--positions"), "image_size": (64, "--image-size")}
    assert combine_env_kwargs({"distractors": False}, settings) == {"distractors": False, "positions": "unseen",
                                                                     "image_size": 64}
    assert combine_env_kwargs({"positions": "unseen"}, settings)["positions"] == "unseen"  # agreeing: fine
    with pytest.raises(ValueError, match=r"--env-kwargs sets positions='train', --positions sets 'unseen'; "
                                         r"--env-kwargs sets image_size=32, --image-size sets 64: give each"):
        combine_env_kwargs({"positions": "train", "image_size": 32}, settings)


def test_reserved_names_are_refused_with_what_to_use_instead():
    reserved = {"chunk_size": "use --chunk-size"}
    assert combine_env_kwargs({"distractors": True}, {}, reserved) == {"distractors": True}
    with pytest.raises(ValueError, match=r"^--env-kwargs may not set chunk_size: use --chunk-size$"):
        combine_env_kwargs({"chunk_size": 4}, {}, reserved)
