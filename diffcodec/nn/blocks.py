"""Network building blocks shared by the four methods, with the official state-dict key names.

Every class keeps the parameter names of the official module it reproduces, so that official
checkpoints (and the unit golden vectors in ``specs/golden/``) load with ``strict=True`` and no
renaming. Where two methods use the same maths under different key names, one implementation serves
both (e.g. ELIC's ``ResidualBottleneck`` and OSCAR's ``ResidualBottleneckBlock``).

Sections (spec files are in ``specs/``):

* convolution helpers — CompressAI ``conv`` / ``deconv`` / ``conv1x1`` / ``conv3x3`` and DCVC's
  sub-pixel 1×1 convolution (official ``hyper_encoder.py``, official ``codec_module.py``);
* StableCodec / CADC latent-codec blocks — InceptionNeXt, GatedCNN, BasicBlock (= CADC's
  "StarBlock"), Downsample, Upsample, Adapter, LRP, and the h_a / h_s templates
  (official ``latent_codec.py``, ``cadc.md``);
* ELIC / CompressAI / OSCAR residual blocks — ResidualBottleneck, ResidualBottleneckBlock,
  ResidualUnit, AttentionBlock (official code, official ``hyper_encoder.py``);
* OneDC DCVC blocks — DepthConv, ConvFFN3, DepthConvBlock4, ResidualBlockUpsample (official
  ``codec_module.py``);
* OneDC VQGAN-family blocks — ResnetBlock, AttnBlock, ReduceResBlock (official ``codec_module.py``, §4.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LRP",
    "Adapter",
    "AttentionBlock",
    "AttnBlock",
    "BasicBlock",
    "ChannelLayerNorm",
    "ConvFFN3",
    "DepthConv",
    "DepthConvBlock4",
    "Downsample",
    "GatedCNNBlock",
    "HyperAnalysis",
    "HyperSynthesis",
    "InceptionDWConv2d",
    "InceptionNeXt",
    "ReduceResBlock",
    "ResidualBlockUpsample",
    "ResidualBottleneck",
    "ResidualBottleneckBlock",
    "ResidualUnit",
    "ResnetBlock",
    "StarBlock",
    "Upsample",
    "conv",
    "conv1x1",
    "conv3x3",
    "deconv",
    "group_norm32",
    "subpel_conv1x1",
]


def _require_positive(**widths: int) -> None:
    """Raise a ValueError naming the first width that is not a positive integer."""
    for name, value in widths.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------------------------------
# Convolution helpers (CompressAI ``compressai.models.utils`` / ``compressai.layers``, DCVC)
# --------------------------------------------------------------------------------------------------


def conv(in_ch: int, out_ch: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    """CompressAI ``conv``: Conv2d k5 s2 p2 with bias, so n → ⌈n/2⌉ (official ``hyper_encoder.py``)."""
    _require_positive(in_ch=in_ch, out_ch=out_ch, kernel_size=kernel_size, stride=stride)
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(in_ch: int, out_ch: int, kernel_size: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """CompressAI ``deconv``: ConvTranspose2d k5 s2 p2, output_padding 1, so m → 2m (official
    ``hyper_encoder.py``)."""
    _require_positive(in_ch=in_ch, out_ch=out_ch, kernel_size=kernel_size, stride=stride)
    return nn.ConvTranspose2d(
        in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, output_padding=stride - 1
    )


def conv1x1(in_ch: int, out_ch: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """1×1 convolution (CompressAI ``conv1x1``)."""
    _require_positive(in_ch=in_ch, out_ch=out_ch, stride=stride)
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=bias)


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """3×3 convolution, padding 1 (CompressAI ``conv3x3``)."""
    _require_positive(in_ch=in_ch, out_ch=out_ch, stride=stride)
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=bias)


def subpel_conv1x1(in_ch: int, out_ch: int, upscale: int = 2) -> nn.Sequential:
    """DCVC ``subpel_conv1x1``: Conv1×1(in, out·r²) → PixelShuffle(r); keys ``0.weight``/``0.bias``.

    PixelShuffle (PyTorch semantics): input channel c·r² + i·r + j at (h, w) goes to output
    channel c at (r·h + i, r·w + j) (official ``latent_codec.py``).
    """
    _require_positive(in_ch=in_ch, out_ch=out_ch, upscale=upscale)
    return nn.Sequential(conv1x1(in_ch, out_ch * upscale**2), nn.PixelShuffle(upscale))


def group_norm32(channels: int) -> nn.GroupNorm:
    """VQGAN ``Normalize``: GroupNorm with 32 groups, eps 1e-6, affine (official ``codec_module.py``)."""
    _require_positive(channels=channels)
    if channels % 32:
        raise ValueError(f"GroupNorm(32) needs a channel count divisible by 32, got {channels}")
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of an NCHW tensor, at every pixel (channels-last maths).

    Same parameters (``weight``, ``bias``) as ``nn.LayerNorm(channels)``; StableCodec's GatedCNN block
    uses eps 1e-6 (official ``latent_codec.py``).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        _require_positive(channels=channels)
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------------
# StableCodec / CADC latent-codec blocks (official ``latent_codec.py`` and §4.2; cadc.md keeps them unchanged)
# --------------------------------------------------------------------------------------------------


class InceptionDWConv2d(nn.Module):
    """InceptionNeXt token mixer (Yu et al., CVPR 2024, Eq. 1) with band kernel 11 and ratio 1/8.

    With q = ⌊C/8⌋ and r = C − 3q the channels split, in this order, into [0:r) identity,
    [r:r+q) → 3×3 depthwise (``dwconv_hw``), [r+q:r+2q) → 1×11 (``dwconv_w``) and [r+2q:C) → 11×1
    (``dwconv_h``); the four results are concatenated in the same order (official ``latent_codec.py``).
    """

    def __init__(self, channels: int, square_kernel: int = 3, band_kernel: int = 11) -> None:
        super().__init__()
        _require_positive(channels=channels, square_kernel=square_kernel, band_kernel=band_kernel)
        if channels < 8:
            raise ValueError(f"InceptionNeXt needs at least 8 channels (q = C // 8 ≥ 1), got {channels}")
        q = channels // 8
        self.split_sizes = (channels - 3 * q, q, q, q)
        self.dwconv_hw = nn.Conv2d(q, q, square_kernel, padding=square_kernel // 2, groups=q)
        self.dwconv_w = nn.Conv2d(q, q, (1, band_kernel), padding=(0, band_kernel // 2), groups=q)
        self.dwconv_h = nn.Conv2d(q, q, (band_kernel, 1), padding=(band_kernel // 2, 0), groups=q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_id, x_hw, x_w, x_h = torch.split(x, self.split_sizes, dim=1)
        return torch.cat((x_id, self.dwconv_hw(x_hw), self.dwconv_w(x_w), self.dwconv_h(x_h)), dim=1)


class InceptionNeXt(nn.Module):
    """StableCodec's InceptionNeXt block: x + conv2(GELU(conv1(InceptionDWConv2d(x)))).

    No normalisation layer; MLP ratio 2 (official ``latent_codec.py``). Keys ``depthconv.dwconv_{hw,w,h}``,
    ``conv1``, ``conv2``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthconv = InceptionDWConv2d(channels)
        self.conv1 = conv1x1(channels, 2 * channels)
        self.act = nn.GELU()
        self.conv2 = conv1x1(2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(self.depthconv(x))))


class GatedCNNBlock(nn.Module):
    """Gated CNN block (MambaOut, Yu & Wang 2024), StableCodec variant (official ``latent_codec.py``).

    u = LayerNorm_channels(x) (eps 1e-6); [a, b] = split(fc1(u)) with a the gate and b the value,
    each of width e·C; out = x + fc2(GELU(a) ⊙ dwconv3×3(b)). Unlike MambaOut, every value channel
    goes through the depthwise convolution. Keys ``norm``, ``fc1``, ``conv``, ``fc2``.
    """

    def __init__(self, channels: int, expansion_ratio: int = 2) -> None:
        super().__init__()
        _require_positive(channels=channels, expansion_ratio=expansion_ratio)
        hidden = expansion_ratio * channels
        self.norm = ChannelLayerNorm(channels, eps=1e-6)
        self.fc1 = conv1x1(channels, 2 * hidden)
        self.act = nn.GELU()
        self.conv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = conv1x1(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(self.norm(x)).chunk(2, dim=1)
        return x + self.fc2(self.act(gate) * self.conv(value))


class BasicBlock(nn.Module):
    """InceptionNeXt(C) then GatedCNNBlock(C) (official ``latent_codec.py``); keys ``blocks.{0,1}``.

    10C² + 30C + 34·⌊C/8⌋ parameters. The CADC paper calls this combination "StarBlock"
    (``cadc.md``), hence the alias :data:`StarBlock`.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(InceptionNeXt(channels), GatedCNNBlock(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


StarBlock = BasicBlock
"""CADC's name for StableCodec's :class:`BasicBlock` (``cadc.md``: "their combination (StarBlock)")."""


class _TwoBranchSum(nn.Module):
    """out = branch1(x) + branch2(x) — the shape shared by Downsample, Upsample and Adapter."""

    def __init__(self, branch1: nn.Module, branch2: nn.Module) -> None:
        super().__init__()
        self.branch1 = branch1
        self.branch2 = branch2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch1(x) + self.branch2(x)


class Downsample(_TwoBranchSum):
    """Stride-2 two-branch block a→b, output ⌈H/2⌉×⌈W/2⌉ (official ``latent_codec.py``).

    branch1 = 1×1 → GELU → 3×3/s2; branch2 = 1×1 → GELU → 5×5/s2 depthwise; summed.
    2ab + 9b² + 29b parameters.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        _require_positive(in_ch=in_ch, out_ch=out_ch)
        super().__init__(
            nn.Sequential(conv1x1(in_ch, out_ch), nn.GELU(), conv3x3(out_ch, out_ch, stride=2)),
            nn.Sequential(
                conv1x1(in_ch, out_ch), nn.GELU(), nn.Conv2d(out_ch, out_ch, 5, 2, 2, groups=out_ch)
            ),
        )


class Upsample(_TwoBranchSum):
    """×2 two-branch block a→b with PixelShuffle(2) (official ``latent_codec.py``).

    branch1 = 3×3 → GELU → 1×1 (a→4b) → PixelShuffle; branch2 = 5×5 depthwise → GELU → 1×1 (a→4b) →
    PixelShuffle; summed. 9a² + 27a + 8ab + 8b parameters.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        _require_positive(in_ch=in_ch, out_ch=out_ch)
        super().__init__(
            nn.Sequential(conv3x3(in_ch, in_ch), nn.GELU(), *subpel_conv1x1(in_ch, out_ch)),
            nn.Sequential(
                nn.Conv2d(in_ch, in_ch, 5, padding=2, groups=in_ch), nn.GELU(), *subpel_conv1x1(in_ch, out_ch)
            ),
        )


class Adapter(_TwoBranchSum):
    """Width adapter a→b with hidden width m = ⌊(a+b)/2⌋ (official ``latent_codec.py``).

    branch1 = 1×1 (a→m) → GELU → 5×5 depthwise → GELU → 1×1 (m→b); branch2 = 1×1 (a→b); summed.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        _require_positive(in_ch=in_ch, out_ch=out_ch)
        hidden = (in_ch + out_ch) // 2
        super().__init__(
            nn.Sequential(
                conv1x1(in_ch, hidden),
                nn.GELU(),
                nn.Conv2d(hidden, hidden, 5, padding=2, groups=hidden),
                nn.GELU(),
                conv1x1(hidden, out_ch),
            ),
            conv1x1(in_ch, out_ch),
        )


class LRP(nn.Module):
    """Latent residual prediction (Minnen & Singh 2020), StableCodec form (official code).

    ``block`` = Adapter(a → ⌊(a+b)/2⌋) then Adapter(⌊(a+b)/2⌋ → b); in the codec a = 640, b = 320.
    :meth:`forward` is the official module (raw output); :meth:`residual` is how the codec applies
    it at quadtree step k: 0.5·tanh(M_k ⊙ LRP(concat[ŷ_k, B_k])), added to ŷ_k.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        _require_positive(in_ch=in_ch, out_ch=out_ch)
        mid = (in_ch + out_ch) // 2
        self.block = nn.Sequential(Adapter(in_ch, mid), Adapter(mid, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)

    def residual(self, y_hat_k: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """0.5·tanh(mask ⊙ LRP(concat[y_hat_k, context])) — ŷ'_k = ŷ_k + this (§5.4 step 3).

        ``y_hat_k`` is the masked quantised latent of this step, ``context`` the context B_k *before*
        the step's update, ``mask`` the step mask M_k (broadcastable to ``y_hat_k``).
        """
        if y_hat_k.shape != context.shape:
            raise ValueError(
                f"y_hat_k and context must have the same shape, got {tuple(y_hat_k.shape)} "
                f"and {tuple(context.shape)}"
            )
        return 0.5 * torch.tanh(self(torch.cat((y_hat_k, context), dim=1)) * mask)


class HyperAnalysis(nn.Module):
    """Hyper-analysis h_a (official ``latent_codec.py``): Conv3×3/s2 M→Z → BasicBlock(Z) → Conv3×3/s2 Z→Z.

    StableCodec: M = 320, Z = M/2 = 160 (the default). CADC keeps Z = M = 320 (diffcodec's design,
    docs/methods/cadc.md).
    Key prefix ``reduction.{0,1,2}``; no activations outside the BasicBlock.
    """

    def __init__(self, latent_ch: int = 320, hyper_ch: int | None = None) -> None:
        super().__init__()
        hyper_ch = latent_ch // 2 if hyper_ch is None else hyper_ch
        _require_positive(latent_ch=latent_ch, hyper_ch=hyper_ch)
        self.reduction = nn.Sequential(
            conv3x3(latent_ch, hyper_ch, stride=2),
            BasicBlock(hyper_ch),
            conv3x3(hyper_ch, hyper_ch, stride=2),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.reduction(y)


class HyperSynthesis(nn.Module):
    """Hyper-synthesis h_s (official ``latent_codec.py``), back to the y grid (×4).

    Conv1×1 Z→4Z → PixelShuffle(2) → BasicBlock(Z) → Conv1×1 Z→4M → PixelShuffle(2). StableCodec:
    M = 320, Z = 160 (default); CADC: Z = M = 320 (diffcodec's design, docs/methods/cadc.md). Key prefix
    ``increase.{0,2,3}``.
    """

    def __init__(self, latent_ch: int = 320, hyper_ch: int | None = None) -> None:
        super().__init__()
        hyper_ch = latent_ch // 2 if hyper_ch is None else hyper_ch
        _require_positive(latent_ch=latent_ch, hyper_ch=hyper_ch)
        self.increase = nn.Sequential(
            *subpel_conv1x1(hyper_ch, hyper_ch), BasicBlock(hyper_ch), *subpel_conv1x1(hyper_ch, latent_ch)
        )

    def forward(self, z_hat: torch.Tensor) -> torch.Tensor:
        return self.increase(z_hat)


# --------------------------------------------------------------------------------------------------
# ELIC / CompressAI / OSCAR residual blocks (official code, official ``hyper_encoder.py``)
# --------------------------------------------------------------------------------------------------


def _bottleneck(channels: int) -> nn.Sequential:
    """conv1x1(C, C/2) → ReLU → conv3x3(C/2, C/2) → ReLU → conv1x1(C/2, C); keys ``0``, ``2``, ``4``."""
    _require_positive(channels=channels)
    if channels < 2:
        raise ValueError(f"a bottleneck needs at least 2 channels, got {channels}")
    mid = channels // 2
    return nn.Sequential(
        conv1x1(channels, mid), nn.ReLU(), conv3x3(mid, mid), nn.ReLU(), conv1x1(mid, channels)
    )


class ResidualBottleneck(nn.Module):
    """ELIC residual bottleneck (He et al., CVPR 2022): out = x + branch(x), no final activation.

    ``branch`` = conv1x1(N, N/2) → ReLU → conv3x3 → ReLU → conv1x1(N/2, N) (official code).
    Subclasses only rename the branch (class attribute ``branch_key``) or add the final ReLU of
    CompressAI's residual unit (``relu_after_sum``), so one implementation serves all three.
    """

    branch_key = "branch"
    relu_after_sum = False

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.add_module(self.branch_key, _bottleneck(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.get_submodule(self.branch_key)(x)
        return F.relu(out) if self.relu_after_sum else out


class ResidualBottleneckBlock(ResidualBottleneck):
    """OSCAR's ``ResidualBottleneckBlock`` (official ``hyper_encoder.py``): the ELIC maths under keys
    ``layers.*``."""

    branch_key = "layers"


class ResidualUnit(ResidualBottleneck):
    """CompressAI's ``AttentionBlock.ResidualUnit``: ReLU(x + conv(x)); keys ``conv.{0,2,4}``."""

    branch_key = "conv"
    relu_after_sum = True


class AttentionBlock(nn.Module):
    """CompressAI simplified attention (Cheng et al., CVPR 2020): x + a(x) ⊙ sigmoid(b(x)).

    a = 3 × ResidualUnit (``conv_a``); b = 3 × ResidualUnit + conv1x1 (``conv_b``). Used by ELIC's g_a
    (official code) and OSCAR's hyper-encoder (official ``hyper_encoder.py``).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_a = nn.Sequential(*(ResidualUnit(channels) for _ in range(3)))
        self.conv_b = nn.Sequential(*(ResidualUnit(channels) for _ in range(3)), conv1x1(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_a(x) * torch.sigmoid(self.conv_b(x))


# --------------------------------------------------------------------------------------------------
# OneDC: DCVC blocks (official ``codec_module.py``; onedc-codec/onedc:src/modules/dcvc.py, MIT)
# --------------------------------------------------------------------------------------------------


class DepthConv(nn.Module):
    """DCVC depth-wise conv unit: conv2(dw3×3(LeakyReLU₀.₀₁(conv1(x)))) + identity.

    identity = 1×1 ``adaptor``(x) when in ≠ out, else x (official ``codec_module.py``). Keys ``conv1.0``,
    ``depth_conv``, ``conv2``, ``adaptor``.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(conv1x1(in_ch, in_ch), nn.LeakyReLU(0.01))
        self.depth_conv = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch)
        self.conv2 = conv1x1(in_ch, out_ch)
        self.adaptor = conv1x1(in_ch, out_ch) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        return self.conv2(self.depth_conv(self.conv1(x))) + identity


class ConvFFN3(nn.Module):
    """DCVC gated FFN: [a, b] = split(conv(x)); x + conv_out(LeakyReLU₀.₁(a) + LeakyReLU₀.₀₁(b)).

    conv: 1×1 C→4C, conv_out: 1×1 2C→C (official ``codec_module.py``).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv1x1(channels, 4 * channels)
        self.conv_out = conv1x1(2 * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        return x + self.conv_out(F.leaky_relu(a, 0.1) + F.leaky_relu(b, 0.01))


class DepthConvBlock4(nn.Module):
    """DCVC ``DepthConvBlock4``: DepthConv(in, out) then ConvFFN3(out); keys ``block.{0,1}``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.block = nn.Sequential(DepthConv(in_ch, out_ch), ConvFFN3(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResidualBlockUpsample(nn.Module):
    """DCVC ×r residual upsampler with 1×1 sub-pixel convolutions (official ``codec_module.py``).

    out = LeakyReLU₀.₁(conv3×3(LeakyReLU₀.₀₁(subpel_conv(x)))) + upsample(x), where both
    ``subpel_conv`` and ``upsample`` are Conv1×1(in, r²·out) → PixelShuffle(r).
    """

    def __init__(self, in_ch: int, out_ch: int, upsample: int = 2) -> None:
        super().__init__()
        self.subpel_conv = subpel_conv1x1(in_ch, out_ch, upsample)
        self.conv = conv3x3(out_ch, out_ch)
        self.upsample = subpel_conv1x1(in_ch, out_ch, upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv(F.leaky_relu(self.subpel_conv(x), 0.01)), 0.1)
        return out + self.upsample(x)


# --------------------------------------------------------------------------------------------------
# OneDC: VQGAN-family blocks (official ``codec_module.py``, §4.1; taming-transformers / MaskGIT conventions)
# --------------------------------------------------------------------------------------------------


class ResnetBlock(nn.Module):
    """MaskGIT-VQGAN residual block (official ``codec_module.py``); serves both OneDC ``ResnetBlock`` classes.

    h = conv2(SiLU(GN(conv1(SiLU(GN(x)))))) with bias-free 3×3 convolutions and GN(32, eps 1e-6);
    out = x + h when in = out. When in ≠ out, the official block (encoder_unet.py, the
    ``enc.unet.conv_in.0`` quirk) applies the bias-free 1×1 ``nin_shortcut`` to the **block output**:
    out = h + nin_shortcut(h). Reproduced exactly; the input x is then not part of the output.
    ``dropout`` is 0 in every OneDC configuration.
    """

    def __init__(self, in_ch: int, out_ch: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        out_ch = in_ch if out_ch is None else out_ch
        self.norm1 = group_norm32(in_ch)
        self.conv1 = conv3x3(in_ch, out_ch, bias=False)
        self.norm2 = group_norm32(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(out_ch, out_ch, bias=False)
        self.nin_shortcut = conv1x1(out_ch, out_ch, bias=False) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        residual = x if self.nin_shortcut is None else self.nin_shortcut(h)
        return h + residual


class AttnBlock(nn.Module):
    """VQGAN single-head spatial self-attention (Esser et al., CVPR 2021; official ``codec_module.py``).

    GN(32, eps 1e-6) → 1×1 ``q``, ``k``, ``v`` → softmax(qᵀk/√C) over all H·W positions →
    1×1 ``proj_out``; plus x.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm32(channels)
        self.q = conv1x1(channels, channels)
        self.k = conv1x1(channels, channels)
        self.v = conv1x1(channels, channels)
        self.proj_out = conv1x1(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        u = self.norm(x)

        def tokens(proj: nn.Conv2d) -> torch.Tensor:  # (B, 1 head, H·W, C), channels contiguous:
            # a strided last dimension sends CPU SDPA to its math kernel, which materialises the
            # (H·W)² attention matrix (2.3 GB at 16k positions); the flash kernel needs O(H·W)
            return proj(u).reshape(b, 1, c, h * w).transpose(-1, -2).contiguous()

        attended = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v))
        return x + self.proj_out(attended.transpose(-1, -2).reshape(b, c, h, w))


class ReduceResBlock(nn.Module):
    """OneDC ``reduce_resblock`` (the generator's ``vae_reduction``, official ``decoder_unet.py``).

    blocks = GN → SiLU → Conv3×3(in, in) → GN → SiLU → Conv3×3(in, out) (keys ``blocks.{0,2,3,5}``),
    plus the 1×1 ``short_cut``(in, out) of the input. Both GroupNorms are GN(32, eps 1e-6).
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            group_norm32(in_ch), nn.SiLU(), conv3x3(in_ch, in_ch), group_norm32(in_ch), nn.SiLU(),
            conv3x3(in_ch, out_ch),
        )  # fmt: skip
        self.short_cut = conv1x1(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x) + self.short_cut(x)
