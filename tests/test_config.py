"""Config argument parsing and the locked experiment configs."""

import ml_collections
import pytest

from configs import vqvae
from mmgen_jax import config_lib


def test_parse_arg_types_values_after_defaults():
    args = config_lib.parse_arg("a=3,b=0.5,c=true,d=hello", a=1, b=1.0, c=False, d="x")
    assert (args.a, args.b, args.c, args.d) == (3, 0.5, True, "hello")
    assert isinstance(args.a, int) and isinstance(args.b, float)


def test_parse_arg_defaults_when_empty():
    assert config_lib.parse_arg("", a=1).a == 1
    assert config_lib.parse_arg(None, a=1).a == 1


def test_parse_arg_unknown_key_names_it_and_the_allowed_keys():
    with pytest.raises(ValueError, match=r"unknown config argument 'datset'; allowed: dataset"):
        config_lib.parse_arg("datset=digits", dataset="digits")


def test_parse_arg_bad_value_names_key():
    with pytest.raises(ValueError, match=r"steps='many'"):
        config_lib.parse_arg("steps=many", steps=1)
    with pytest.raises(ValueError, match="not of the form key=value"):
        config_lib.parse_arg("digits", dataset="digits")


def test_dataset_argument_may_contain_a_path_with_colons():
    config = vqvae.get_config("dataset=image_folder:/data/my:faces,image_size=64")
    assert config.data.name == "image_folder:/data/my:faces"
    assert config.data.image_size == 64


def test_vqvae_config_is_locked_against_new_keys():
    config = vqvae.get_config("")
    assert isinstance(config, ml_collections.ConfigDict)
    with pytest.raises(AttributeError):
        config.training.totl_steps = 5
    config.training.total_steps = 5  # existing keys stay writable
    assert config.data.data_dir is None
    config.data.data_dir = "/tmp/x"  # placeholder fields accept their declared type


def test_vqvae_variants():
    fsq = vqvae.get_config("quantizer=fsq")
    assert fsq.quantizer.type == "fsq"
    with pytest.raises(ValueError, match="quantizer='pq'"):
        vqvae.get_config("quantizer=pq")
    digits = vqvae.get_config("")
    # 8x8 digits with one 2x downsampling -> the 4x4 latent grid, K <= 256.
    assert tuple(digits.model.strides) == (2,)
    assert digits.quantizer.num_codes <= 256


def test_load_sibling_reads_the_config_beside_the_anchor(tmp_path):
    anchor = str(tmp_path / "staged.py")
    (tmp_path / "part.py").write_text(
        "import ml_collections\n\n"
        "def get_config(arg=None):\n"
        "    return ml_collections.ConfigDict(dict(arg=arg))\n"
    )
    assert config_lib.load_sibling(anchor, "part", "x=1").arg == "x=1"
    with pytest.raises(FileNotFoundError, match="missing.py"):
        config_lib.load_sibling(anchor, "missing")


def test_staged_configs_take_each_stage_from_its_own_config():
    staged = config_lib.load_config_file("configs/video_quickstart.py")
    tokenizer = config_lib.load_config_file("configs/video_vqvae.py", "dataset=moving_digits")
    assert staged.stages.tokenizer.model.to_dict() == tokenizer.model.to_dict()
    assert tuple(staged.stage_order) == ("tokenizer", "classifier", "generator")
