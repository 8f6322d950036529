"""Classification: CLIP, the only torch/transformers user, and the one-shot classify command."""
