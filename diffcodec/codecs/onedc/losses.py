"""OneDC's training-only parts: the perceptual loss and the semantic-distillation code predictor.

- :class:`LPIPSAvgPool` — LPIPS-VGG with average instead of max pooling, the loss OneDC trains with
  (piq ``LPIPS(replace_pooling=True)``, official ``train_sd15_codec_stage1.py``), built on the reference
  ``lpips`` package and its
  offline weights (piq is not a dependency).
- :class:`VQGANTokenizer` — the *target* of the auxiliary code-prediction loss: a MaskGIT-VQGAN encoder and
  its codebook (nearest code in L2). Any VQ tokenizer with the same interface (``tokenize(x) -> (z_q,
  indices)`` and ``codebook``) works; the official run used the MaskGIT VQGAN f16 (ImageNet, 256²; the
  TiTok port's ``maskgit-vqgan-imagenet-f16-256.bin``): channel_mult [1, 1, 2, 2, 4], width 128, 2 residual
  blocks per level, z 256, 1024 codes (:data:`MASKGIT_VQGAN_F16`).
- :class:`CodePredictor` — the official "Codeformer" (official ``train_sd15_codec_stage1.py``): y_semantic
  (S, /64) → ×2 upsampling →
  3 dual (regular + shifted) Swin blocks → logits over the tokenizer's codebook at /32.
- :func:`code_prediction_loss` — CE(logits, codes) + 0.01·MSE(Σ_k softmax_k·e_k, z_q) (paper L_aux).

Semantic distillation (paper §3.2): the tokens that replace SD's text conditioning are asked to predict the
VQ codes of the image, so that they carry object-level semantics.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffcodec.files import load_checkpoint_file
from diffcodec.nn.blocks import DepthConvBlock4

__all__ = [
    "MASKGIT_VQGAN_F16",
    "CodePredictor",
    "LPIPSAvgPool",
    "SwinBlock",
    "VQGANTokenizer",
    "build_tokenizer",
    "code_prediction_loss",
    "tokenizer_input",
]

#: The official target tokenizer (MaskGIT VQGAN f16, official ``train_sd15_codec_stage1.py``).
MASKGIT_VQGAN_F16: dict[str, Any] = {
    "channel_mult": [1, 1, 2, 2, 4], "hidden_channels": 128, "num_res_blocks": 2, "z_channels": 256,
    "codebook_size": 1024,
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- LPIPS
class LPIPSAvgPool(nn.Module):
    """LPIPS v0.1 with the VGG16 trunk and its max-pools replaced by 2×2 average pools (a module swap).

    Frozen; differentiable in its inputs, images in [0, 1]; returns the batch mean. The linear heads and the
    trunk are the reference weights (offline, :mod:`diffcodec.eval.backbones`). piq's variant normalises
    with the ImageNet mean/std, which equals lpips' scaling layer to 3 decimals.
    """

    def __init__(self) -> None:
        super().__init__()
        import lpips

        from diffcodec.eval.backbones import load_conv_weights

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = lpips.LPIPS(net="vgg", version="0.1", pnet_rand=True, verbose=False)
        load_conv_weights(self.model.net, "vgg16")
        for parent in self.model.net.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.MaxPool2d):
                    setattr(parent, name, nn.AvgPool2d(kernel_size=2, stride=2))
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPSAvgPool:
        return super().train(False)

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return self.model(x_hat, x, normalize=True).mean()


# ---------------------------------------------------------------------------------------------- tokenizer
class _ResBlock(nn.Module):
    """MaskGIT-VQGAN residual block: GN → SiLU → Conv3×3 → GN → SiLU → Conv3×3 (bias-free) + shortcut(x)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(32, in_ch, eps=1e-6)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(32, out_ch, eps=1e-6)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.nin_shortcut = nn.Conv2d(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return self.nin_shortcut(x) + h


class VQGANTokenizer(nn.Module):
    """A frozen MaskGIT-VQGAN encoder + codebook: images in [0, 1] → (z_q (B, z, h, w), indices (B, h, w)).

    Encoder: Conv3×3(3 → w) (bias-free), per level ``num_res_blocks`` residual blocks (w·mult) and a 2×2
    average-pool downsampling except at the last level, ``num_res_blocks`` mid blocks, GN → SiLU →
    Conv1×1(→ z). The stride is 2^(levels − 1). Codes: the nearest codebook row in L2. Key names follow
    the TiTok port (``encoder.*``, ``quantize.embedding.weight``; unverified offline). ``weights``: a
    state-dict file to load (strictly).
    """

    def __init__(
        self,
        channel_mult: Sequence[int] = (1, 1, 2, 2, 4),
        hidden_channels: int = 128,
        num_res_blocks: int = 2,
        z_channels: int = 256,
        codebook_size: int = 1024,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.conv_in = nn.Conv2d(3, hidden_channels, 3, padding=1, bias=False)
        self.encoder.down = nn.ModuleList()
        width = hidden_channels
        for level, mult in enumerate(channel_mult):
            stage = nn.Module()
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(_ResBlock(width, hidden_channels * mult))
                width = hidden_channels * mult
            stage.block = nn.ModuleList(blocks)
            stage.downsample = nn.AvgPool2d(2) if level < len(channel_mult) - 1 else nn.Identity()
            self.encoder.down.append(stage)
        self.encoder.mid = nn.ModuleList(_ResBlock(width, width) for _ in range(num_res_blocks))
        self.encoder.norm_out = nn.GroupNorm(32, width, eps=1e-6)
        self.encoder.conv_out = nn.Conv2d(width, z_channels, 1)
        self.quantize = nn.Module()
        self.quantize.embedding = nn.Embedding(codebook_size, z_channels)
        self.stride = 2 ** (len(channel_mult) - 1)
        if weights is not None:
            from safetensors.torch import load_file

            state = load_file(weights) if weights.endswith(".safetensors") else load_checkpoint_file(weights)
            self.load_state_dict(state, strict=True)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> VQGANTokenizer:
        return super().train(False)

    @property
    def codebook(self) -> Tensor:
        """(K, z) code vectors."""
        return self.quantize.embedding.weight

    @torch.no_grad()
    def tokenize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(z_q, indices) of images x ∈ [0, 1] (B, 3, H, W)."""
        enc = self.encoder
        h = enc.conv_in(x)
        for stage in enc.down:
            for block in stage.block:
                h = block(h)
            h = stage.downsample(h)
        for block in enc.mid:
            h = block(h)
        z = enc.conv_out(F.silu(enc.norm_out(h)))
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        distances = (flat.square().sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
                     + self.codebook.square().sum(1)[None])  # fmt: skip
        indices = distances.argmin(dim=1).view(z.shape[0], *z.shape[2:])
        return self.quantize.embedding(indices).permute(0, 3, 1, 2), indices


def tokenizer_input(x: Tensor) -> Tensor:
    """The official tokenizer input: x ∈ [0, 1] resized bilinearly to (H/2, H/2) — H for both sides, a quirk
    that is exact for square crops only (official ``train_sd15_codec_stage1.py``)."""
    side = x.shape[-2] // 2
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False).clamp(0, 1)


# ---------------------------------------------------------------------------------------- code predictor
class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows (Swin, Liu et al. 2021), qkv without bias, optional learned
    absolute bias over the window² × window² pairs."""

    def __init__(self, dim: int, heads: int, window: int, position_bias: bool) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        tokens = window * window
        self.position_bias = nn.Parameter(torch.zeros(tokens, tokens)) if position_bias else None

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = None
        if self.position_bias is not None:
            bias = self.position_bias
        if mask is not None:  # (windows, n, n), repeated over the batch
            mask = mask.repeat(b // mask.shape[0], 1, 1)[:, None]
            bias = mask if bias is None else bias + mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class SwinBlock(nn.Module):
    """Pre-LN Swin transformer block on (B, C, H, W) maps: x + WMSA(LN(x)), then x + MLP(LN(x)) (GELU).

    ``shift`` > 0 rolls the map by −shift before windowing and masks pairs from different regions with −inf
    (the masks are rebuilt per map size, not stored: the official code keeps them as parameters).
    """

    def __init__(self, dim: int, heads: int, window: int, shift: int = 0, mlp_ratio: int = 4,
                 position_bias: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, position_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def _mask(self, height: int, width: int, device: torch.device) -> Tensor:
        w, s = self.window, self.shift
        region = torch.zeros(height, width, device=device)
        label = 0
        for rows in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            for cols in (slice(0, -w), slice(-w, -s), slice(-s, None)):
                region[rows, cols] = label
                label += 1
        windows = region.view(height // w, w, width // w, w).permute(0, 2, 1, 3).reshape(-1, w * w)
        same = windows[:, :, None] == windows[:, None, :]
        return torch.zeros(same.shape, device=device).masked_fill(~same, float("-inf"))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        win = self.window
        if h % win or w % win:
            raise ValueError(f"Swin windows of {win} need map sides divisible by {win}, got {h}×{w}")
        tokens = x.permute(0, 2, 3, 1)
        shifted = torch.roll(tokens, (-self.shift, -self.shift), (1, 2)) if self.shift else tokens
        windows = self.norm1(shifted).view(b, h // win, win, w // win, win, c).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(-1, win * win, c)
        mask = self._mask(h, w, x.device) if self.shift else None
        attended = self.attn(windows, mask).view(b, h // win, w // win, win, win, c).permute(0, 1, 3, 2, 4, 5)
        attended = attended.reshape(b, h, w, c)
        if self.shift:
            attended = torch.roll(attended, (self.shift, self.shift), (1, 2))
        tokens = tokens + attended
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.permute(0, 3, 1, 2)


class CodePredictor(nn.Module):
    """The official "Codeformer" (official ``train_sd15_codec_stage1.py``): y_semantic (S, /64) → codebook
    logits (K, /32).

    up_sample = DepthConvBlock4(S) → Conv1×1(S → 4S) → PixelShuffle(2) → DepthConvBlock4(S); blocks =
    ``depth`` × [SwinBlock, shifted SwinBlock] (window w, shift w/2; the very first has the learned absolute
    position bias); mlp_head = Conv1×1(S → 4S) → GN(16) → GELU → Conv1×1(4S → S) → GN(16) → GELU →
    Conv1×1(S → K). Full size (S 768, 12 heads, window 16, K 1024): 59,922,176 trainable parameters (the
    official module adds 393,216 frozen mask entries). The window requires (H/32) divisible by it
    (training crops multiple of 512 at full size).
    """

    def __init__(self, in_channels: int = 768, codebook_size: int = 1024, heads: int = 12, window: int = 16,
                 depth: int = 3) -> None:  # fmt: skip
        super().__init__()
        s = in_channels
        self.up_sample = nn.Sequential(
            DepthConvBlock4(s, s), nn.Conv2d(s, 4 * s, 1), nn.PixelShuffle(2), DepthConvBlock4(s, s)
        )
        self.blocks = nn.Sequential(
            *(SwinBlock(s, heads, window, shift, position_bias=(i == 0 and shift == 0))
              for i in range(depth) for shift in (0, window // 2))
        )  # fmt: skip
        self.mlp_head = nn.Sequential(
            nn.Conv2d(s, 4 * s, 1), nn.GroupNorm(16, 4 * s), nn.GELU(), nn.Conv2d(4 * s, s, 1),
            nn.GroupNorm(16, s), nn.GELU(), nn.Conv2d(s, codebook_size, 1),
        )  # fmt: skip

    def forward(self, y_semantic: Tensor) -> Tensor:
        return self.mlp_head(self.blocks(self.up_sample(y_semantic)))


def code_prediction_loss(
    logits: Tensor, indices: Tensor, z_q: Tensor, codebook: Tensor, mse_weight: float = 0.01
) -> dict[str, Tensor]:
    """L_aux = CE(logits, indices) + mse_weight·MSE(Σ_k softmax_k·e_k, z_q) (official
    ``train_sd15_codec_stage1.py``).

    ``logits`` (B, K, h, w), ``indices`` (B, h, w), ``z_q`` (B, z, h, w), ``codebook`` (K, z).
    """
    if logits.shape[-2:] != indices.shape[-2:]:
        raise ValueError(
            f"the predictor's grid {tuple(logits.shape[-2:])} differs from the tokenizer's "
            f"{tuple(indices.shape[-2:])}: the tokenizer must have stride 32 on the half-size input"
        )
    ce = F.cross_entropy(logits, indices)
    soft = torch.einsum("bkhw,kc->bchw", logits.softmax(dim=1), codebook.to(logits.dtype))
    mse = F.mse_loss(soft, z_q.to(soft.dtype))
    return {"code_ce": ce, "code_mse": mse, "code": ce + mse_weight * mse}


def build_tokenizer(config: Mapping[str, Any] | None) -> VQGANTokenizer | None:
    """A :class:`VQGANTokenizer` from a config dict (None: no tokenizer)."""
    return None if config is None else VQGANTokenizer(**dict(config))
