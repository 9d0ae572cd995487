"""Convolutional VQ-VAE video tokenizer (3-D, or per-frame on the offline moving digits).

Usage:
  python -m mmgen_jax.main --config=configs/video_vqvae.py --workdir=/tmp/video_vqvae
  python -m mmgen_jax.main --config=configs/video_vqvae.py:dataset=ucf101 --workdir=gs://b/ucf

Arguments (after the colon, comma separated):
  dataset   'moving_digits' (offline, default; 8 x 32 x 32 x 1 clips), 'moving_mnist'
            (16 of its 20 64x64 frames; only a 'test' split, cut 90% / 10%), 'ucf101' (16 frames
            resized to 64x64) or 'bair_robot_pushing_small' (16 of 30 64x64 frames).
  runlocal  tiny model and few steps, for a smoke run on a laptop or in tests.

Real datasets: 3-D convolutions; the encoder first halves the frame size only (stride
(1, 2, 2)), then time and space together ((2, 2, 2)): 16 x 64 x 64 clips become 8 x 8 x 8 codes.
moving_digits: a per-frame tokenizer (kernel_size (1, 3, 3), no temporal stride): 8 x 32 x 32
clips become 8 x 8 x 8 codes of 8 bits (4,096 bits per clip); the generator models time.
Evaluation reports the clip PSNR/MSE, the frame PSNR and frame SSIM (mean over frames of
per-frame metrics) and the bits per clip (`bits_per_example`).
"""

from mmgen_jax import config_lib

DATASETS = ("moving_digits", "moving_mnist", "ucf101", "bair_robot_pushing_small")


def data_fields(dataset: str) -> dict:
    """The `data` settings of each supported video dataset."""
    config_lib.require_choice("dataset", dataset, DATASETS)
    if dataset == "moving_digits":
        return dict(name="moving_digits", video_key="video", num_frames=8)
    if dataset == "moving_mnist":
        return dict(
            name="moving_mnist",
            video_key="image_sequence",
            num_frames=16,
            train_split="test[:90%]",
            eval_split="test[90%:]",
            test_split="test[90%:]",
        )
    if dataset == "ucf101":
        return dict(name="ucf101", video_key="video", num_frames=16, image_size=64)
    return dict(name="bair_robot_pushing_small", video_key="image_main", num_frames=16)


def get_config(arg: str | None = None):
    args = config_lib.parse_arg(arg, dataset="moving_digits", runlocal=False)
    small = args.dataset == "moving_digits"

    config = config_lib.base_config()
    config.trainer = "tokenizer"
    config.data.update(dict(video_key="video", num_frames=8, short_clips="error", fps=None))
    config.data.update(data_fields(args.dataset))

    # moving_digits: 2x2 pixel patches are folded into channels before the stem (no convolution
    # runs at 32x32, the dominant cost on a CPU), then each frame is halved again: 8x32x32 ->
    # 8x8x8 codes. Its convolutions are per frame (kernel (1, 3, 3), run as 2-D convolutions
    # over the frames: experiments/bench_conv.py): 6x faster per step than the 3-D tokenizer it
    # replaced (4x4 patches, time halved to a 4x8x8 grid), whose frames after 300 steps were
    # blurs no classifier read (frame PSNR 21.3 dB, SSIM 0.54; 27 dB and 0.87 per frame now).
    # The real datasets: 2x2 patches, then (1, 2, 2) and (2, 2, 2): 16x64x64 -> 8x8x8 codes.
    config.model = dict(
        patch_size=(1, 2, 2),
        channels=(32, 64) if small else (128, 256, 256),
        strides=((1, 2, 2),) if small else ((1, 2, 2), (2, 2, 2)),
        kernel_size=(1, 3, 3) if small else (3, 3, 3),
        num_res_blocks=1 if small else 2,
        latent_dim=32 if small else 256,
        num_groups=8 if small else 32,
        remat=False,
    )
    config.quantizer = dict(
        type="vq",
        num_codes=256 if small else 1024,
        code_dim=4 if small else 8,
        beta=0.25,
        use_ema=True,
        ema_decay=0.99,
        ema_epsilon=1e-5,
        cosine=False,
        restart_after_steps=20,
        levels=(8, 8, 4),
    )
    config.optimizer.learning_rate = 2e-3 if small else 3e-4
    config.optimizer.warmup_steps = 50 if small else 1000
    config.training.global_batch_size = 16 if small else 64
    config.training.total_steps = 1000 if small else 100_000
    config.training.log_every = 50 if small else 100
    config.training.eval_every = 500 if small else 5000
    config.training.checkpoint_every = 500 if small else 5000
    config.training.num_visualize = 8
    # Mirrored or transposed frames (all four datasets give square frames) still show physical
    # motion and multiply the distinct training clips; in the few hundred steps of the CPU run on
    # moving_digits they slowed learning the digit shapes, so that run does without.
    config.training.augment = () if small else ("flip_spatial", "transpose")

    if args.runlocal:
        config.model.channels = (8, 16) if small else (8, 16, 16)
        config.model.latent_dim = 8
        config.quantizer.num_codes = 32
        config.training.global_batch_size = 8
        config.training.total_steps = 4
        config.training.log_every = 2
        config.training.eval_every = 4
        config.training.checkpoint_every = 2
        config.training.num_visualize = 8  # divisible by the 8 test devices
        config.optimizer.warmup_steps = 1
    return config.lock()
