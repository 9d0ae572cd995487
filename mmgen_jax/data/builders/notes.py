"""TFDS builder for synthetic musical notes, the project's offline audio dataset.

Each example is one 0.5 s note at 16 kHz (8,000 float32 samples in [-1, 1]) whose pitch is one
of the 12 pitch classes over two octaves (MIDI 60..83, C4 to B5, 262..988 Hz). The label is the
pitch class (C=0, C#=1, ..., B=11); `midi_pitch` and `timbre` are stored beside it.

Timbres (`TIMBRES`): a pure sine; odd harmonics falling as 1/k (clarinet/square-like);
all harmonics falling as 1/k (sawtooth-like); and a harmonic tone with breath noise. Harmonics
above 7.5 kHz are left out so nothing aliases. Each note has an ADSR envelope drawn from one of
`ENVELOPES` (plucked, organ-like, swelling, percussive) with jittered times, a random peak
amplitude, a random start phase per harmonic and a detuning of at most +-15 cents, so the
pitch class is never ambiguous.

Every example is drawn from its own generator seeded by (split, index), so the dataset is the
same on every machine and independent of build order. Labels and octaves cycle with the index
(balanced classes); timbre and envelope are drawn. Splits: 1,200 train, 120 validation, 240
test, stored in generation order (`disable_shuffling=True`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

SAMPLE_RATE = 16_000
NUM_SAMPLES = 8_000  # 0.5 s
NUM_PITCH_CLASSES = 12
LOWEST_MIDI = 60  # C4; two octaves: 60..83
NUM_OCTAVES = 2
TIMBRES = ("sine", "odd_harmonics", "saw_harmonics", "breathy")
# name -> (attack s, decay s, sustain level, release s), jittered by up to +-30 % per note.
ENVELOPES = {
    "pluck": (0.005, 0.15, 0.3, 0.1),
    "organ": (0.02, 0.05, 0.9, 0.05),
    "swell": (0.15, 0.1, 0.8, 0.1),
    "percussive": (0.002, 0.3, 0.0, 0.05),
}
MAX_HARMONIC_HZ = 7_500.0
MAX_DETUNE_CENTS = 15.0
SPLITS = {"train": (1200, 0), "validation": (120, 1), "test": (240, 2)}  # (size, seed)


def midi_to_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def adsr(
    attack: float, decay: float, sustain: float, release: float, num_samples: int, rate: int
) -> np.ndarray:
    """Piecewise-linear ADSR envelope [num_samples]; the release ends the note."""
    t = np.arange(num_samples) / rate
    duration = num_samples / rate
    release_start = duration - release
    envelope = np.where(
        t < attack,
        t / attack,
        np.where(t < attack + decay, 1.0 - (1.0 - sustain) * (t - attack) / decay, sustain),
    )
    # From the release start, fall linearly from the level reached there to 0.
    level_at_release = np.interp(release_start, t, envelope)
    fall = np.clip((duration - t) / release, 0.0, 1.0) * level_at_release
    return np.where(t >= release_start, np.minimum(envelope, fall), envelope)


def synthesize_note(midi_pitch: int, timbre: str, rng: np.random.Generator) -> np.ndarray:
    """One note [NUM_SAMPLES] float32 with peak amplitude in [0.3, 0.9]."""
    frequency = midi_to_hz(midi_pitch) * 2.0 ** (
        rng.uniform(-MAX_DETUNE_CENTS, MAX_DETUNE_CENTS) / 1200.0
    )
    t = np.arange(NUM_SAMPLES) / SAMPLE_RATE
    num_harmonics = 1 if timbre == "sine" else int(MAX_HARMONIC_HZ // frequency)
    wave = np.zeros(NUM_SAMPLES)
    for k in range(1, num_harmonics + 1):
        if timbre == "odd_harmonics" and k % 2 == 0:
            continue
        amplitude = 1.0 / k if timbre != "breathy" else 1.0 / k**2
        wave += amplitude * np.sin(2 * np.pi * k * frequency * t + rng.uniform(0, 2 * np.pi))
    if timbre == "breathy":
        wave = wave / np.max(np.abs(wave)) + 0.15 * rng.standard_normal(NUM_SAMPLES)
    attack, decay, sustain, release = ENVELOPES[rng.choice(list(ENVELOPES))]
    jitter = rng.uniform(0.7, 1.3, size=3)
    envelope = adsr(
        attack * jitter[0],
        decay * jitter[1],
        sustain,
        release * jitter[2],
        NUM_SAMPLES,
        SAMPLE_RATE,
    )
    wave = wave * envelope
    peak = rng.uniform(0.3, 0.9)
    return (wave * peak / np.max(np.abs(wave))).astype(np.float32)


def make_example(split_seed: int, index: int) -> dict:
    """The example `index` of the split seeded `split_seed` (a pure function of both)."""
    rng = np.random.default_rng([split_seed, index])
    pitch_class = index % NUM_PITCH_CLASSES
    octave = (index // NUM_PITCH_CLASSES) % NUM_OCTAVES
    midi_pitch = LOWEST_MIDI + 12 * octave + pitch_class
    timbre = int(rng.integers(len(TIMBRES)))
    return {
        "audio": synthesize_note(midi_pitch, TIMBRES[timbre], rng),
        "label": pitch_class,
        "midi_pitch": midi_pitch,
        "timbre": timbre,
    }


class Notes(tfds.core.GeneratorBasedBuilder):
    """Synthetic 0.5 s musical notes labelled by pitch class, as a TFDS dataset named `notes`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 12 pitch classes x 2 octaves, 4 timbres."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=(
                "Synthetic musical notes: 0.5 s at 16 kHz, 12 pitch classes over two octaves, "
                "four timbres, ADSR envelopes."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "audio": tfds.features.Audio(
                        shape=(NUM_SAMPLES,), dtype=np.float32, sample_rate=SAMPLE_RATE
                    ),
                    "label": tfds.features.ClassLabel(
                        names=["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
                    ),
                    "midi_pitch": np.int32,
                    "timbre": tfds.features.ClassLabel(names=list(TIMBRES)),
                }
            ),
            supervised_keys=("audio", "label"),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # Everything is synthesised.
        return {name: self._generate_examples(size, seed) for name, (size, seed) in SPLITS.items()}

    def _generate_examples(self, size: int, split_seed: int) -> Iterator[tuple[int, dict]]:
        for index in range(size):
            yield index, make_example(split_seed, index)
