"""Network building blocks of the VLA policy: vision tower, language encoder, action and critic experts."""
