"""Flax linen models: quantizers, the VQ-VAE tokenizer and (later) the diffusion transformer."""
