"""Offline TFDS builders that ship with the project.

Importing this package registers every builder with TFDS by its snake-case class name, so
`tfds.builder('digits', data_dir=...)` finds it. A new builder module must be imported here.
"""

from mmgen_jax.data.builders import arithmetic, digits, image_folder, moving_digits, notes

__all__ = ["arithmetic", "digits", "image_folder", "moving_digits", "notes"]
