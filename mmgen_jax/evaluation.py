"""Scoring generated samples with a classifier the project trained on the same data.

For class-conditional image generation on small datasets (the embedded digits) Inception
features mean nothing, so samples are judged by a classifier trained on the dataset's training
split (`configs/classifier.py`):

* `class_accuracy`: the fraction of samples the classifier assigns to their conditioning label.
* `frechet_distance`: the Fréchet distance between classifier features of the samples and of the
  test split ("digits-FD", the FID recipe with this classifier's penultimate features).
* `frechet_distance_train_vs_test`: the same distance between as many training examples as there
  are samples and the test split, the baseline a perfect generator would reach;
  `frechet_distance_ratio` is the first over the second. A Fréchet distance estimated from N
  examples is biased upwards by O(1/N) (Chong & Forsyth 2020), so the baseline uses the samples'
  N (the mean over `BASELINE_DRAWS` seeded random subsets of the training split) and compares
  like with like; `frechet_distance_train_vs_test_full` is the baseline with the whole split.
* `test_accuracy`: the classifier's own accuracy on real test images, for calibration (samples
  scoring above it are likely over-guided, prototypical digits).
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from mmgen_jax import inference
from mmgen_jax.data import pipeline
from mmgen_jax.metrics import audio as audio_metrics
from mmgen_jax.metrics.frechet import feature_statistics, frechet_distance
from mmgen_jax.models.classifier import Classifier


class SampleScorer:
    """A restored classifier: logits and features of batches of signals in [-1, 1]."""

    def __init__(self, classifier_workdir: str):
        run = inference.load_trained(classifier_workdir)
        if run.config.trainer != "classifier":
            raise ValueError(
                f"{classifier_workdir!r} holds a {run.config.trainer!r} run, not a classifier"
            )
        self.config = run.config
        self.shape = tuple(run.info["shape"])
        model, variables = run.objective.model, run.variables
        self._logits = jax.jit(functools.partial(model.apply, variables))
        self._features = jax.jit(
            functools.partial(model.apply, variables, method=Classifier.features)
        )

    def _batched(self, fn, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
        if tuple(images.shape[1:]) != self.shape:
            raise ValueError(
                f"samples of shape {images.shape[1:]} do not match the classifier's input "
                f"{self.shape}"
            )
        return np.concatenate(
            [np.asarray(fn(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        )

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._batched(self._logits, images).argmax(-1)

    def features(self, images: np.ndarray) -> np.ndarray:
        return self._batched(self._features, images)

    def split(self, name: str) -> dict[str, np.ndarray]:
        return pipeline.load_split_numpy(self.config.data, name)


BASELINE_DRAWS = 5


def train_vs_test_distance(
    train_features: np.ndarray, test_stats: tuple[np.ndarray, np.ndarray], num_samples: int
) -> float:
    """Fréchet distance of `num_samples` training examples to the test statistics: the mean
    over `BASELINE_DRAWS` seeded subsets (the whole split when it is not larger)."""
    if num_samples >= len(train_features):
        return frechet_distance(*feature_statistics(train_features), *test_stats)
    rng = np.random.default_rng(0)
    draws = [
        rng.choice(len(train_features), num_samples, replace=False) for _ in range(BASELINE_DRAWS)
    ]
    return float(
        np.mean(
            [
                frechet_distance(*feature_statistics(train_features[idx]), *test_stats)
                for idx in draws
            ]
        )
    )


def score_samples(
    classifier_workdir: str, samples: np.ndarray, labels: np.ndarray | None
) -> dict[str, float]:
    """Class accuracy (if labelled) and digits-FD of `samples` [N, *S, C] in [-1, 1]."""
    scorer = SampleScorer(classifier_workdir)
    test = scorer.split(scorer.config.data.test_split)
    train = scorer.split(scorer.config.data.train_split)
    test_stats = feature_statistics(scorer.features(test["image"]))
    train_features = scorer.features(train["image"])
    sample_stats = feature_statistics(scorer.features(np.asarray(samples, np.float32)))
    scores = {
        "frechet_distance": frechet_distance(*sample_stats, *test_stats),
        "frechet_distance_train_vs_test": train_vs_test_distance(
            train_features, test_stats, len(samples)
        ),
        "frechet_distance_train_vs_test_full": frechet_distance(
            *feature_statistics(train_features), *test_stats
        ),
        "test_accuracy": float(np.mean(scorer.predict(test["image"]) == test["label"])),
    }
    scores["frechet_distance_ratio"] = (
        scores["frechet_distance"] / scores["frechet_distance_train_vs_test"]
    )
    if labels is not None:
        predictions = scorer.predict(np.asarray(samples, np.float32))
        scores["class_accuracy"] = float(np.mean(predictions == np.asarray(labels)))
    return scores


def _score_with_classifier(samples, labels, *, workdir: str, final, info) -> dict[str, float]:
    del info
    return score_samples(os.path.join(workdir, final.classifier_stage), samples, labels)


def _score_arithmetic(samples, labels, *, workdir: str, final, info) -> dict[str, float]:
    """Generated arithmetic statements (token ids of the text generator): the fractions that
    parse as `a op b=c`, that are correct, and that are correct copies of training statements
    (`metrics.text.arithmetic_scores`), with the generator's test NELBO in bits per token."""
    del labels
    from mmgen_jax.data import text as text_data
    from mmgen_jax.data.builders import arithmetic
    from mmgen_jax.metrics import read_metrics
    from mmgen_jax.metrics import text as text_metrics

    texts = text_data.decode_batch(samples, info)
    scores = text_metrics.arithmetic_scores(texts, arithmetic.split_statements()["train"])
    test = read_metrics(os.path.join(workdir, final.generator_stage), split="test")
    if test:
        for name in ("nelbo_bits_per_token", "nelbo_bits_per_text_token"):
            if name in test[-1]:
                scores[f"test_{name}"] = float(test[-1][name])
    return scores


def _score_pitch(samples, labels, *, workdir: str, final, info) -> dict[str, float]:
    """Audio notes conditioned on a pitch class: the fraction whose estimated fundamental
    (YIN, `metrics.audio.estimate_f0`) has the conditioning pitch class, and the same
    estimator's accuracy on the real test split of the tokenizer stage's data (calibration)."""
    sample_rate = int(info["sample_rate"])
    data_config = inference.load_config(os.path.join(workdir, final.tokenizer_stage)).data
    test = pipeline.load_split_numpy(data_config, data_config.test_split)
    scores = {
        "real_test_pitch_accuracy": audio_metrics.pitch_class_accuracy(
            test["image"], test["label"], sample_rate
        )
    }
    if labels is not None:
        scores["pitch_accuracy"] = audio_metrics.pitch_class_accuracy(samples, labels, sample_rate)
    return scores


def _score_moving_digits(samples, labels, *, workdir: str, final, info) -> dict[str, float]:
    """Video clips of one moving digit: per-frame label accuracy of the located sprite and the
    motion consistency, beside the same on real test clips (`evaluation_video`)."""
    from mmgen_jax import evaluation_video  # imports this module

    return evaluation_video.score_moving_digits(
        samples, labels, workdir=workdir, final=final, info=info
    )


# final.scorer -> function(samples, labels, *, workdir, final, info) -> scores. `workdir` is the
# staged run's directory, `final` its `final` config section, `info` the generator's dataset info.
SCORERS = {
    "arithmetic": _score_arithmetic,
    "classifier": _score_with_classifier,
    "moving_digits": _score_moving_digits,
    "pitch": _score_pitch,
}


def score(name: str, samples, labels, *, workdir: str, final, info) -> dict[str, float]:
    """Scores the samples of a staged run with the scorer `final.scorer` names."""
    if name not in SCORERS:
        raise ValueError(f"final.scorer={name!r} is not one of {', '.join(sorted(SCORERS))}")
    return SCORERS[name](samples, labels, workdir=workdir, final=final, info=info)
