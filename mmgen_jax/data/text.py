"""Text layout: TFDS text examples -> `tokens` int32 `[seq_len]` (plus `label` when present).

Used by `pipeline.make_layout` when `data.modality` is 'text' (or 'auto' and the dataset's
`data.text_key` feature is a `tfds.features.Text`). Data config fields it reads (unset or None
fields take the defaults in `TEXT_DEFAULTS`):

  text_key         feature holding the text; default 'text'
  label_key        feature holding a class label; missing -> unlabelled
  tokenizer        'bytes': UTF-8 bytes (vocabulary 258);
                   'chars': one id per character of `alphabet`; any character outside it
                   becomes `<unk>` (so decoding shows U+FFFD there);
                   'sentencepiece': a SentencePiece unigram model the project trains on the
                   training split (see below)
  alphabet         the characters of the 'chars' tokenizer (a string, no repeats)
  seq_len          output length L; shorter texts are padded with `<pad>` at the end
  on_overflow      'truncate' (default): longer texts keep their first L tokens;
                   'error': a longer text stops the input pipeline with an error naming its
                   length and `seq_len`
  sentencepiece_vocab_size   vocabulary of the trained SentencePiece model (incl. pad, unk)
  sentencepiece_max_sentences  training texts read (the first ones of the training split)
  tokenizer_dir    where trained SentencePiece models are cached; None ->
                   `<data dir>/mmgen_tokenizers`

Token ids: 0 is `<pad>`, 1 is `<unk>`, real tokens start at 2 (bytes: byte + 2; chars: position
in the alphabet + 2; SentencePiece: its own ids, trained with pad_id=0, unk_id=1 and no BOS/EOS).
The vocabulary is ids 0..vocab_size-1; the mask token of masked diffusion is the model's extra
id `vocab_size` and never occurs in data. `extra_info()` gives `vocab_size`, `pad_id`, `unk_id`,
`mask_id`, `seq_len`, the tokenizer kind and what decoding needs (`alphabet`, or
`sentencepiece_model`: the path of the model file); `decode(ids, info)` turns ids back into text.

SentencePiece models are trained once per (dataset, version, split, vocabulary size, sentence
count) with one thread and unshuffled input, so the file is the same on every run; the model is
written to a temporary name and renamed, and later runs reuse it. Real corpora: `lm1b` (TFDS,
feature 'text'); the offline `arithmetic` builder for CPU runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

TEXT_DEFAULTS = {
    "text_key": "text",
    "label_key": "label",
    "tokenizer": "bytes",
    "alphabet": None,
    "seq_len": 128,
    "on_overflow": "truncate",
    "sentencepiece_vocab_size": 8000,
    "sentencepiece_max_sentences": 300_000,
    "tokenizer_dir": None,
    "train_split": "train",
}
TOKENIZERS = ("bytes", "chars", "sentencepiece")
OVERFLOW_POLICIES = ("truncate", "error")
PAD_ID, UNK_ID = 0, 1
FIRST_TOKEN_ID = 2  # ids below are special
UNKNOWN_CHARACTER = "\ufffd"


def _field(data_config: ml_collections.ConfigDict, name: str) -> Any:
    value = getattr(data_config, name, None)
    return TEXT_DEFAULTS[name] if value is None else value


def _data_dir(data_config) -> str:
    """The TFDS data dir (imported late: `pipeline` imports this module lazily)."""
    from mmgen_jax.data import pipeline

    return pipeline.data_dir_of(data_config)


# ----------------------------------------------------------------------------------------------
# SentencePiece: trained on the training split, cached under the data dir
# ----------------------------------------------------------------------------------------------


def sentencepiece_model_path(data_config, builder: tfds.core.DatasetBuilder) -> str:
    """Where the SentencePiece model for this dataset and these settings is cached."""
    directory = _field(data_config, "tokenizer_dir") or os.path.join(
        _data_dir(data_config), "mmgen_tokenizers"
    )
    split = _field(data_config, "train_split")
    vocab = int(_field(data_config, "sentencepiece_vocab_size"))
    sentences = int(_field(data_config, "sentencepiece_max_sentences"))
    key = f"{builder.info.full_name}|{split}|{_field(data_config, 'text_key')}|{vocab}|{sentences}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return os.path.join(directory, f"{builder.name}_sp{vocab}_{digest}.model")


def train_sentencepiece(data_config, builder: tfds.core.DatasetBuilder) -> str:
    """The path of the SentencePiece model for the training split, training it if missing."""
    import sentencepiece as spm

    path = sentencepiece_model_path(data_config, builder)
    if os.path.exists(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text_key = _field(data_config, "text_key")
    dataset = builder.as_dataset(split=_field(data_config, "train_split"), shuffle_files=False)
    dataset = dataset.take(int(_field(data_config, "sentencepiece_max_sentences")))

    def sentences():
        for example in dataset.as_numpy_iterator():
            yield example[text_key].decode("utf-8")

    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "wb") as model_file:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(),
            model_writer=model_file,
            vocab_size=int(_field(data_config, "sentencepiece_vocab_size")),
            model_type="unigram",
            character_coverage=1.0,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=-1,
            eos_id=-1,
            num_threads=1,  # one thread and unshuffled input: the same file on every run
            shuffle_input_sentence=False,
            minloglevel=2,
        )
    os.replace(temporary, path)
    return path


def _load_sentencepiece(path: str):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=path)


# ----------------------------------------------------------------------------------------------
# The layout
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TextLayout:
    """The text `Layout` (see `pipeline.Layout`)."""

    text_key: str
    label_key: str | None
    tokenizer: str
    alphabet: str | None
    sentencepiece_model: str | None
    vocab_size: int
    seq_len: int
    on_overflow: str
    output_shape: tuple[int, ...]
    num_classes: int | None

    def decoders(self) -> dict | None:
        return None

    def _ids(self, text: tf.Tensor) -> tf.Tensor:
        """A scalar string -> its token ids [n] int32 (no padding)."""
        if self.tokenizer == "bytes":
            return tf.cast(tf.io.decode_raw(text, tf.uint8), tf.int32) + FIRST_TOKEN_ID
        if self.tokenizer == "chars":
            codepoints = tf.strings.unicode_decode(text, "UTF-8", errors="replace")
            table = _char_table(self.alphabet)  # [max codepoint + 2]; last entry: unk
            codepoints = tf.minimum(codepoints, len(table) - 1)
            return tf.gather(tf.constant(table), codepoints)
        processor = _load_sentencepiece(self.sentencepiece_model)

        def encode(raw: bytes) -> np.ndarray:
            return np.asarray(processor.encode(raw.decode("utf-8")), np.int32)

        ids = tf.numpy_function(encode, [text], tf.int32, stateful=False)
        return tf.ensure_shape(ids, [None])

    def preprocess(self, example: dict) -> dict[str, tf.Tensor]:
        ids = self._ids(example[self.text_key])  # [n]
        length = tf.shape(ids)[0]
        checks = []
        if self.on_overflow == "error":
            checks.append(
                tf.debugging.assert_less_equal(
                    length,
                    self.seq_len,
                    message=(
                        f"a text is longer than data.seq_len={self.seq_len} tokens "
                        "(its length is the first value below); raise data.seq_len or set "
                        "data.on_overflow='truncate'"
                    ),
                )
            )
        with tf.control_dependencies(checks):
            ids = ids[: self.seq_len]
        ids = tf.pad(ids, [[0, self.seq_len - tf.shape(ids)[0]]], constant_values=PAD_ID)
        outputs = {"tokens": tf.ensure_shape(ids, (self.seq_len,))}
        if self.label_key is not None:
            outputs["label"] = tf.cast(example[self.label_key], tf.int32)
        return outputs

    def extra_info(self) -> dict[str, Any]:
        info = {
            "modality": "text",
            "tokenizer": self.tokenizer,
            "vocab_size": self.vocab_size,
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
            "mask_id": self.vocab_size,
            "seq_len": self.seq_len,
        }
        if self.alphabet is not None:
            info["alphabet"] = self.alphabet
        if self.sentencepiece_model is not None:
            info["sentencepiece_model"] = self.sentencepiece_model
        return info


def _char_table(alphabet: str) -> np.ndarray:
    """codepoint -> id for every codepoint up to max(alphabet) + 1; unknown ones -> unk."""
    table = np.full(max(map(ord, alphabet)) + 2, UNK_ID, np.int32)
    for index, character in enumerate(alphabet):
        table[ord(character)] = FIRST_TOKEN_ID + index
    return table


def _check_alphabet(alphabet: Any) -> str:
    if not isinstance(alphabet, str) or not alphabet:
        raise ValueError(
            f"data.tokenizer='chars' needs data.alphabet, a non-empty string; got {alphabet!r}"
        )
    repeated = sorted({c for c in alphabet if alphabet.count(c) > 1})
    if repeated:
        raise ValueError(f"data.alphabet repeats the characters {repeated}")
    return alphabet


def make_layout(data_config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder):
    """The text layout for the dataset, checked against its features and the config."""
    info = builder.info
    text_key = _field(data_config, "text_key")
    feature = info.features[text_key] if text_key in info.features else None
    if not isinstance(feature, tfds.features.Text):
        raise ValueError(
            f"Dataset {info.full_name!r} has no text feature {text_key!r} (data.text_key); its "
            f"features are {sorted(info.features.keys())}."
        )
    tokenizer = _field(data_config, "tokenizer")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"data.tokenizer={tokenizer!r} is not one of {', '.join(TOKENIZERS)}")
    on_overflow = _field(data_config, "on_overflow")
    if on_overflow not in OVERFLOW_POLICIES:
        raise ValueError(
            f"data.on_overflow={on_overflow!r} is not one of {', '.join(OVERFLOW_POLICIES)}"
        )
    seq_len = int(_field(data_config, "seq_len"))
    if seq_len < 1:
        raise ValueError(f"data.seq_len={seq_len} must be >= 1")
    alphabet = model_path = None
    if tokenizer == "bytes":
        vocab_size = FIRST_TOKEN_ID + 256
    elif tokenizer == "chars":
        alphabet = _check_alphabet(_field(data_config, "alphabet"))
        vocab_size = FIRST_TOKEN_ID + len(alphabet)
    else:
        model_path = train_sentencepiece(data_config, builder)
        vocab_size = _load_sentencepiece(model_path).get_piece_size()
    label_key = _field(data_config, "label_key")
    label_feature = info.features[label_key] if label_key in info.features else None
    return TextLayout(
        text_key=text_key,
        label_key=label_key if label_feature is not None else None,
        tokenizer=tokenizer,
        alphabet=alphabet,
        sentencepiece_model=model_path,
        vocab_size=vocab_size,
        seq_len=seq_len,
        on_overflow=on_overflow,
        output_shape=(seq_len,),
        num_classes=getattr(label_feature, "num_classes", None),
    )


def decode(ids: np.ndarray, info: dict[str, Any]) -> str:
    """Token ids [L] (as `extra_info()` describes them) -> text; pad and mask ids are dropped,
    `<unk>` shows as U+FFFD."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    ids = [i for i in ids if i not in (info["pad_id"], info["mask_id"])]
    kind = info["tokenizer"]
    if kind == "bytes":
        unknown = UNKNOWN_CHARACTER.encode("utf-8")
        data = b"".join(
            bytes([i - FIRST_TOKEN_ID]) if i >= FIRST_TOKEN_ID else unknown for i in ids
        )
        return data.decode("utf-8", errors="replace")
    if kind == "chars":
        alphabet = info["alphabet"]
        return "".join(
            alphabet[i - FIRST_TOKEN_ID] if i >= FIRST_TOKEN_ID else UNKNOWN_CHARACTER for i in ids
        )
    if kind == "sentencepiece":
        return _load_sentencepiece(info["sentencepiece_model"]).decode(ids)
    raise ValueError(f"cannot decode tokens of tokenizer {kind!r}")


def decode_batch(ids: np.ndarray, info: dict[str, Any]) -> list[str]:
    """Token ids [N, L] -> N texts."""
    return [decode(row, info) for row in np.asarray(ids)]
