"""mmgen_jax: multi-modal generative modelling in JAX/Flax.

Tokenizers (VQ-VAE) compress images, audio and video to discrete codes; generators (diffusion
transformers) learn to produce them. See README.md for the commands and DESIGN notes.
"""

__version__ = "0.1.0"
