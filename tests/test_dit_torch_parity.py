"""Opt-in parity of `mmgen_jax.models.dit.DiT` with the official PyTorch DiT (needs torch).

The PyTorch side is a transcription of facebookresearch/DiT `models.py`, with timm's
`PatchEmbed`, `Attention` (non-fused path) and `Mlp` written out by hand so that timm is not
needed. Random weights go through the official state_dict and `import_dit.load_torch_dit`; the
two forward passes must then agree to fp32 round-off.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402  (after the importorskip)

from mmgen_jax.tools import import_dit  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Official PyTorch DiT (models.py), timm layers inlined
# ----------------------------------------------------------------------------------------------


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class PatchEmbed(nn.Module):  # timm PatchEmbed(img_size, patch, in_chans, embed_dim, bias=True)
    def __init__(self, input_size, patch_size, in_channels, hidden_size):
        super().__init__()
        self.patch_size = (patch_size, patch_size)
        self.num_patches = (input_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size, bias=True)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):  # timm Attention(dim, num_heads, qkv_bias=True), non-fused path
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):  # timm Mlp(in, hidden, act_layer=GELU(tanh), drop=0)
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10000):
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half
        )
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t):
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, hidden_size, dropout_prob):
        super().__init__()
        use_cfg_embedding = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels, force_drop_ids=None):
        if force_drop_ids is None:
            drop_ids = torch.rand(labels.shape[0]) < self.dropout_prob
        else:
            drop_ids = force_drop_ids == 1
        return torch.where(drop_ids, self.num_classes, labels)

    def forward(self, labels, train, force_drop_ids=None):
        use_dropout = self.dropout_prob > 0
        if (train and use_dropout) or (force_drop_ids is not None):
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


class DiTBlock(nn.Module):
    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True)
        )

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True)
        )

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class TorchDiT(nn.Module):
    def __init__(
        self,
        input_size=32,
        patch_size=2,
        in_channels=4,
        hidden_size=1152,
        depth=28,
        num_heads=16,
        mlp_ratio=4.0,
        class_dropout_prob=0.1,
        num_classes=1000,
        learn_sigma=True,
    ):
        super().__init__()
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.patch_size = patch_size
        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)
        pos_embed = get_2d_sincos_pos_embed(
            self.pos_embed.shape[-1], int(self.x_embedder.num_patches**0.5)
        )
        self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
        nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
        nn.init.constant_(self.final_layer.linear.weight, 0)
        nn.init.constant_(self.final_layer.linear.bias, 0)

    def unpatchify(self, x):
        c = self.out_channels
        p = self.x_embedder.patch_size[0]
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(shape=(x.shape[0], h, w, p, p, c))
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(shape=(x.shape[0], c, h * p, h * p))

    def forward(self, x, t, y):
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, self.training)
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


# ----------------------------------------------------------------------------------------------
# Parity
# ----------------------------------------------------------------------------------------------

CONFIGS = {
    "tiny": dict(
        input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4,
        num_classes=10, learn_sigma=False,
    ),
    "S-width, 32x32 latents": dict(
        input_size=32, patch_size=2, in_channels=4, hidden_size=384, depth=2, num_heads=6,
        num_classes=1000, learn_sigma=True,
    ),
    "B-width, patch 4": dict(
        input_size=16, patch_size=4, in_channels=3, hidden_size=768, depth=1, num_heads=12,
        num_classes=1000, learn_sigma=True,
    ),
}  # fmt: skip


def _trained_like(model, seed):
    """Official init, then the zero-initialised layers given small random weights as after
    training (otherwise every block is the identity and the output is zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer" in name or name.endswith("bias"):
                if name != "pos_embed":
                    parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_matches_official_pytorch(name):
    config = CONFIGS[name]
    torch.manual_seed(0)
    torch_model = _trained_like(TorchDiT(**config), seed=1)
    state_dict = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    model, variables = import_dit.load_torch_dit(state_dict, **config)

    rng = np.random.default_rng(0)
    size, channels = config["input_size"], config["in_channels"]
    x = rng.normal(size=(4, channels, size, size)).astype(np.float32)  # NCHW for torch
    t = np.array([0, 17, 500, 999])
    y = np.array([0, 3, 7, config["num_classes"]])  # the last one is the null class
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(y))
    expected = expected.numpy().transpose(0, 2, 3, 1)  # -> [B, H, W, C]
    ours = np.asarray(model.apply(variables, x.transpose(0, 2, 3, 1), t, y))

    max_diff = float(np.abs(ours - expected).max())
    scale = float(np.abs(expected).max())
    print(f"{name}: max |jax - torch| = {max_diff:.3g}, output max |.| = {scale:.3g}")
    assert ours.shape == expected.shape
    assert max_diff <= 1e-5 * max(scale, 1.0)


def test_load_state_dict_unwraps_a_training_checkpoint(tmp_path):
    torch_model = TorchDiT(**CONFIGS["tiny"])
    ema = {k: v + 1 for k, v in torch_model.state_dict().items()}
    path = tmp_path / "0000100.pt"
    torch.save({"model": torch_model.state_dict(), "ema": ema}, path)
    loaded = import_dit.load_state_dict(str(path))
    assert set(loaded) == set(ema)
    np.testing.assert_array_equal(loaded["blocks.1.mlp.fc1.bias"], ema["blocks.1.mlp.fc1.bias"])
    torch.save(torch_model.state_dict(), tmp_path / "raw.pth")
    raw = import_dit.load_state_dict(str(tmp_path / "raw.pth"))
    np.testing.assert_array_equal(raw["pos_embed"], torch_model.pos_embed.detach().numpy())


def test_cli_imports_a_dit_s2_checkpoint(tmp_path):
    """`main` on a DiT-S/2 .pt checkpoint (256px -> 32x32x4 latents); the restored variables
    reproduce the PyTorch forward pass."""
    import json

    from mmgen_jax import inference

    config = dict(CONFIGS["S-width, 32x32 latents"], depth=12)
    torch.manual_seed(0)
    torch_model = _trained_like(TorchDiT(**config), seed=2)
    torch.save(torch_model.state_dict(), tmp_path / "DiT-S-2-256x256.pt")
    import_dit.main(
        ["--checkpoint", str(tmp_path / "DiT-S-2-256x256.pt"), "--model", "DiT-S/2"]
        + ["--image-size", "256", "--workdir", str(tmp_path / "work")]
    )
    model_args = json.loads((tmp_path / "work" / "imported_dit.json").read_text())["model_args"]
    assert model_args == dict(config, class_dropout_prob=0.1)
    # The workdir restores like any trained generator run.
    run = inference.load_trained(str(tmp_path / "work"))
    variables = {"params": run.variables["params"]}
    model = import_dit.model_from_args(model_args)

    x = np.random.default_rng(0).normal(size=(2, 4, 32, 32)).astype(np.float32)
    t, y = np.array([3, 900]), np.array([207, 1000])
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(y))
    ours = np.asarray(model.apply(variables, x.transpose(0, 2, 3, 1), t, y))
    max_diff = float(np.abs(ours - expected.numpy().transpose(0, 2, 3, 1)).max())
    print(f"DiT-S/2 via the CLI: max |jax - torch| = {max_diff:.3g}")
    assert max_diff <= 1e-5 * max(float(expected.abs().max()), 1.0)
