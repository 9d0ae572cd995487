"""Text data (arithmetic builder, tokenizers, layout), the arithmetic scorer and the text recipe."""

import os

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mmgen_jax.data import pipeline, text
from mmgen_jax.data.builders import arithmetic
from mmgen_jax.metrics import text as text_metrics


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds_text"))


def _config(data_dir, **fields):
    return ml_collections.ConfigDict(dict(name="arithmetic", data_dir=data_dir, **fields))


def test_arithmetic_statements_are_correct_deterministic_and_split_apart():
    splits = arithmetic.split_statements()
    assert splits == arithmetic.split_statements()  # deterministic
    assert not set(splits["test"]) & set(splits["train"])
    assert not set(splits["validation"]) & set(splits["train"])
    assert min(len(v) for v in splits.values()) > 500
    everything = [s for v in splits.values() for s in v]
    assert all(text_metrics.is_correct(s) for s in everything)
    assert max(map(len, everything)) <= arithmetic.MAX_LENGTH
    assert set("".join(everything)) == set(arithmetic.ALPHABET)
    operands = [text_metrics.parse_statement(s) for s in everything]
    assert max(max(a, b) for a, op, b, _ in operands if op == "*") <= 99
    assert max(max(a, b) for a, op, b, _ in operands if op == "+") >= 100


def test_chars_layout_round_trips_the_test_split(data_dir):
    config = _config(data_dir, tokenizer="chars", alphabet=arithmetic.ALPHABET, seq_len=16)
    info = pipeline.dataset_info(config)
    assert info["shape"] == (16,) and info["vocab_size"] == 2 + len(arithmetic.ALPHABET)
    assert info["mask_id"] == info["vocab_size"] and info["pad_id"] == 0
    tokens = pipeline.load_split_numpy(config, "test")["tokens"]
    assert tokens.dtype == np.int32 and tokens.shape[1] == 16
    expected = arithmetic.split_statements()["test"]
    assert text.decode_batch(tokens, info) == expected
    first = expected[0]
    ids = [2 + arithmetic.ALPHABET.index(c) for c in first]
    np.testing.assert_array_equal(tokens[0], ids + [0] * (16 - len(ids)))


def test_chars_outside_the_alphabet_become_unk(data_dir):
    config = _config(data_dir, tokenizer="chars", alphabet="0123456789=", seq_len=16)
    info = pipeline.dataset_info(config)
    tokens = pipeline.load_split_numpy(config, "test")["tokens"]
    statement = arithmetic.split_statements()["test"][0]
    operator_position = next(i for i, c in enumerate(statement) if c in "+-*")
    assert tokens[0, operator_position] == text.UNK_ID
    decoded = text.decode(tokens[0], info)
    assert decoded == statement.replace(statement[operator_position], text.UNKNOWN_CHARACTER)


def test_bytes_layout_and_overflow_policies(data_dir):
    statements = arithmetic.split_statements()["test"]
    config = _config(data_dir, tokenizer="bytes", seq_len=5)
    assert pipeline.dataset_info(config)["vocab_size"] == 258
    tokens = pipeline.load_split_numpy(config, "test")["tokens"]  # truncate is the default
    for row, statement in zip(tokens[:20], statements[:20], strict=True):
        raw = np.frombuffer(statement.encode()[:5], np.uint8).astype(np.int32) + 2
        np.testing.assert_array_equal(row, np.pad(raw, (0, 5 - len(raw))))
    config = _config(data_dir, tokenizer="bytes", seq_len=5, on_overflow="error")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"data.seq_len=5"):
        pipeline.load_split_numpy(config, "test")
    with pytest.raises(ValueError, match="on_overflow"):
        pipeline.dataset_info(_config(data_dir, on_overflow="wrap"))


def test_sentencepiece_on_a_text_corpus_is_cached_deterministic_and_decodes(
    data_dir, tmp_path, monkeypatch
):
    """lm1b by config, mocked by TFDS (random text from its real feature spec, no download)."""

    def lm1b(directory):
        return ml_collections.ConfigDict(
            dict(
                name="lm1b",
                data_dir=directory,
                tokenizer="sentencepiece",
                seq_len=64,
                sentencepiece_vocab_size=40,
            )
        )

    with tfds.testing.mock_data(num_examples=60, policy=tfds.testing.MockPolicy.USE_CODE):
        infos = [pipeline.dataset_info(lm1b(str(tmp_path / f"run{i}"))) for i in range(2)]
        paths = [info["sentencepiece_model"] for info in infos]
        assert paths[0].startswith(str(tmp_path / "run0" / "mmgen_tokenizers"))
        with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
            assert a.read() == b.read()  # trained the same way twice
        assert infos[0]["vocab_size"] == 40 and infos[0]["modality"] == "text"

        def no_training(*args, **kwargs):
            raise AssertionError("the cached model should be reused")

        import sentencepiece

        monkeypatch.setattr(sentencepiece.SentencePieceTrainer, "train", no_training)
        config = lm1b(str(tmp_path / "run0"))
        assert pipeline.dataset_info(config)["sentencepiece_model"] == paths[0]
        tokens = pipeline.load_split_numpy(config, "test")["tokens"]
        raw = [
            t.decode()
            for t in tfds.load("lm1b", split="test", data_dir=str(tmp_path))
            .map(lambda e: e["text"])
            .as_numpy_iterator()
        ]
    decoded = text.decode_batch(tokens, infos[0])
    assert len(decoded) == len(raw)
    assert decoded[0] == " ".join(raw[0].split())  # SentencePiece normalises whitespace


def test_arithmetic_scores_by_hand():
    texts = ["37+48=85", "9*7=63", "120-45=75", "12+3=16", "1+=2", "01+1=2", "9*7=63"]
    scores = text_metrics.arithmetic_scores(texts, training_statements=["9*7=63"])
    assert scores["parse_rate"] == pytest.approx(5 / 7)  # not "1+=2", nor "01+1=2"
    assert scores["correct_rate"] == pytest.approx(4 / 7)  # "12+3=16" parses but is wrong
    assert scores["correct_in_train_rate"] == pytest.approx(2 / 7)
    assert scores["distinct_rate"] == pytest.approx(6 / 7)


@pytest.mark.slow
def test_text_quickstart_runlocal(tmp_path, data_dir):
    """The staged text recipe end to end with a tiny model: samples, scores, call counts."""
    import json

    from mmgen_jax import config_lib
    from mmgen_jax.trainers import stages

    config = config_lib.load_config_file("configs/text_quickstart.py", "runlocal=True")
    config.unlock()
    config.stages.generator.data.data_dir = data_dir
    scores = stages.run_stages(config, str(tmp_path))
    assert 0.0 <= scores["correct_rate"] <= scores["parse_rate"] <= 1.0
    assert scores["test_nelbo_bits_per_token"] > 0
    lines = (tmp_path / "samples.txt").read_text().splitlines()
    assert len(lines) == config.final.per_class
    with open(tmp_path / "samples.json") as f:
        settings = json.load(f)
    assert 1 <= settings["model_calls"] <= settings["steps"]
    assert os.path.exists(tmp_path / "generator" / "images")
    # The confidence sampler through the trained objective: complete sequences, no mask left.
    import jax

    from mmgen_jax import inference

    run = inference.load_trained(str(tmp_path / "generator"))
    variables = dict(run.variables)
    params = variables.pop("params")
    tokens = np.asarray(
        run.objective.sample(
            params, variables, None, jax.random.PRNGKey(0), num_samples=4, sampler="confidence"
        )
    )
    assert tokens.shape == (4, run.info["seq_len"])
    assert 0 <= tokens.min() and tokens.max() < run.objective.mask_id
    with pytest.raises(ValueError, match="sampler='ddim' is not one of"):
        run.objective.sample(
            params, variables, None, jax.random.PRNGKey(0), num_samples=4, sampler="ddim"
        )
