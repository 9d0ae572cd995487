"""The compression CLI: codes on disk, bit accounting, and decoding back to the same images."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs import vqvae
from mmgen_jax import compress, inference
from mmgen_jax.data import pipeline
from mmgen_jax.models.vqvae import VQVAE
from mmgen_jax.trainers import loop
from mmgen_jax.trainers.tokenizer import TokenizerObjective


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny tokenizer trained for a few steps (runlocal: K=32 codes on a 4x4 grid)."""
    config = vqvae.get_config("runlocal=True")
    config.data.data_dir = str(tmp_path_factory.mktemp("tfds"))
    path = str(tmp_path_factory.mktemp("run"))
    loop.train_and_evaluate(config, path, TokenizerObjective)
    return path


def test_encode_reports_bits_and_ratio_and_decode_round_trips(workdir, tmp_path, capsys):
    codes_path = str(tmp_path / "codes.npz")
    compress.main(["encode", "--workdir", workdir, "--input", "split:test", "--output", codes_path])
    printed = capsys.readouterr().out
    # 16 positions x log2(32) = 80 bits; raw 8x8x1 bytes = 512 bits -> 6.40x.
    assert "80 bits per image" in printed and "6.40x" in printed
    codes = np.load(codes_path)
    assert codes["indices"].shape == (297, 4, 4) and codes["indices"].dtype == np.uint8
    assert int(codes["num_codes"]) == 32

    out_dir = str(tmp_path / "decoded")
    compress.main(["decode", "--workdir", workdir, "--input", codes_path, "--output", out_dir])
    assert len(os.listdir(out_dir)) == 297

    # The decoded PNG equals the model's own reconstruction of the same test image.
    run = inference.load_trained(workdir)
    config, objective, variables = run.config, run.objective, run.variables
    image = pipeline.load_split_numpy(config.data, "test")["image"][:1]
    recon = objective.model.apply(variables, image)[0]
    expected = np.round((np.clip(np.asarray(recon[0]), -1, 1) + 1) * 127.5).astype(np.uint8)
    decoded = np.asarray(Image.open(os.path.join(out_dir, "test_00000.png")))
    np.testing.assert_allclose(decoded.reshape(expected.shape), expected, atol=1)
    indices = objective.model.apply(variables, image, method=VQVAE.encode_to_indices)
    np.testing.assert_array_equal(np.asarray(jax.device_get(indices))[0], codes["indices"][0])


def test_missing_workdir_and_bad_input_are_clear_errors(workdir, tmp_path):
    with pytest.raises(SystemExit, match="not a trained mmgen_jax workdir"):
        compress.main(["encode", "--workdir", str(tmp_path), "--input", "x", "--output", "y"])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(SystemExit, match="cannot read image .*broken.png"):
        compress.main(["encode", "--workdir", workdir, "--input", str(broken), "--output", "y"])
