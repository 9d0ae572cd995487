"""The `moving_digits` scorer: are generated clips one digit of the right class, moving steadily?

Registered as `final.scorer = 'moving_digits'` in `evaluation.SCORERS`. For clips `[N, T, H, W, C]`
in [-1, 1] with their conditioning labels it reports:

* `frame_accuracy`: the sprite is located in every frame (`metrics.motion.locate_sprites`, an
  8x8 box-sum argmax), cropped, and classified by the digits classifier stage
  (`configs/classifier.py`, trained on the 8x8 digits); the fraction of frames whose predicted
  digit is the clip's label. `clip_accuracy` is the fraction of clips whose majority vote over
  frames is the label.
* `motion_consistency`, `speed_change`, `mean_speed`, `static_fraction`: the motion statistics of
  the sprite's centroid in the located windows (`metrics.motion.motion_statistics`).

The same numbers on the real test clips of the generator's dataset come with the prefix `real_`
for calibration (real clips move with constant speed per axis, so their motion consistency is
1 whenever the locator finds the sprite; their frame accuracy is the classifier's accuracy on
digits of writers it has not seen).
"""

from __future__ import annotations

import os

import numpy as np

from mmgen_jax import evaluation, inference
from mmgen_jax.data import pipeline
from mmgen_jax.metrics import motion


def clip_scores(
    scorer: evaluation.SampleScorer, clips: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Frame / clip accuracy and motion statistics of clips [N, T, H, W, C] in [-1, 1]."""
    clips, labels = np.asarray(clips, np.float32), np.asarray(labels)
    if clips.ndim != 5:
        raise ValueError(f"moving_digits scores clips [N, T, H, W, C], got shape {clips.shape}")
    size = scorer.shape[0]  # the classifier's input side (8 for the digits)
    positions = motion.locate_sprites(clips, size)  # [N, T, 2]
    crops = motion.crop_sprites(clips, positions, size)  # [N, T, size, size, C]
    num_clips, num_frames = crops.shape[:2]
    predictions = scorer.predict(crops.reshape(-1, *crops.shape[2:])).reshape(num_clips, -1)
    votes = np.stack([np.bincount(p, minlength=10).argmax() for p in predictions])
    return {
        "frame_accuracy": float(np.mean(predictions == labels[:, None])),
        "clip_accuracy": float(np.mean(votes == labels)),
        "num_frames": float(num_frames),
        **motion.motion_statistics(motion.sprite_centres(clips, positions, size)),
    }


def score_moving_digits(samples, labels, *, workdir: str, final, info) -> dict[str, float]:
    """Scores generated clips and, for calibration, the real test clips (`real_` prefix)."""
    del info
    scorer = evaluation.SampleScorer(os.path.join(workdir, final.classifier_stage))
    scores = clip_scores(scorer, samples, labels)
    data_config = inference.load_config(os.path.join(workdir, final.generator_stage)).data
    real = pipeline.load_split_numpy(data_config, data_config.test_split)
    real_scores = clip_scores(scorer, real["image"], real["label"])
    scores.update({f"real_{name}": value for name, value in real_scores.items()})
    return scores
