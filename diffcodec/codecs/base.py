"""The codec contract shared by every method.

A :class:`Codec` is a plain ``torch.nn.Module`` with the differentiable path ``forward`` and a hub-loadable
model (``save_pretrained`` / ``from_pretrained`` / ``push_to_hub``) with real entropy coding; its
constructor takes architecture arguments only. Training lives apart: each method's LightningModule
(``diffcodec.codecs.<method>.training``) wraps a codec, so compressing never imports Lightning::

    image ──to_tensor──► x (1,3,H,W) ──pad──► x_p ──_compress──► EncodedImage(streams, side)
                                                                     │
                           Bitstream(model tag, rung, H, W, side, streams) ◄──┘   (every byte counted)
                                                                     │
    image ◄──to_pil── crop(x̂_p) ◄──_decompress(streams, side, padded size, rung) ◄──┘

Subclasses implement :meth:`Codec.forward` (the differentiable training path, returning
:class:`CodecOutput`), :meth:`Codec._compress` and :meth:`Codec._decompress` on padded tensors, and
declare their rate ladder. Everything a user touches — input conversion, padding, rung selection,
the container, error handling, eval and inference mode — lives here once.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from PIL import Image

from diffcodec.bitstream import Bitstream, DecodeError, SideValue, model_tag
from diffcodec.imageio import ImageLike, pad_to, to_pil, to_tensor
from diffcodec.nn import base_weights as _base_weights
from diffcodec.nn.memory import check_tile_mode
from diffcodec.zoo import hub as _hub


@dataclass
class CodecOutput:
    """What the training path returns.

    ``likelihoods`` maps a latent's name (``"y"``, ``"z"``, …) to its element-wise likelihoods;
    :meth:`bpp` turns them into bits per pixel of the *unpadded* image. ``rate_bits`` holds rates that
    are not likelihood tensors (e.g. fixed-length VQ indices), in bits per batch item.
    """

    x_hat: torch.Tensor
    likelihoods: dict[str, torch.Tensor] = field(default_factory=dict)
    rate_bits: dict[str, torch.Tensor] = field(default_factory=dict)
    aux: dict[str, Any] = field(default_factory=dict)

    def bits(self) -> torch.Tensor:
        """Total bits per batch item: −Σ log₂ L over every latent, plus ``rate_bits``."""
        total = self.x_hat.new_zeros(self.x_hat.shape[0])
        for likelihood in self.likelihoods.values():
            total = total + (-torch.log2(likelihood)).flatten(1).sum(dim=1)
        for bits in self.rate_bits.values():
            total = total + bits
        return total

    def bpp(self, num_pixels: int | None = None) -> torch.Tensor:
        """Bits per pixel per batch item (defaults to the reconstruction's own H·W)."""
        if num_pixels is None:
            num_pixels = self.x_hat.shape[-2] * self.x_hat.shape[-1]
        return self.bits() / num_pixels


@dataclass
class EncodedImage:
    """The payload a method produces for one padded image: entropy-coded streams and side fields."""

    streams: list[bytes]
    side: dict[int, SideValue] = field(default_factory=dict)


@dataclass(frozen=True)
class BaseModelRef:
    """A pretrained model a codec is built on: a hub id (or local folder), a revision, its licence."""

    repo_id: str
    revision: str | None = None
    licence: str | None = None


class Hyperparameters(dict):
    """A codec's constructor arguments: a dict whose keys are also attributes (``hp.lora_rank``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Codec(
    torch.nn.Module,
    PyTorchModelHubMixin,
    library_name="diffcodec",
    pipeline_tag="image-to-image",
    tags=["diffcodec", "image-compression"],
):
    """Base class of every diffcodec codec (see the module docstring for the data flow).

    Class attributes a method sets:

    - ``method``: the method's name (``"stablecodec"``, …), used in errors and in the zoo.
    - ``pad_multiple``: inputs are padded to a multiple of this (e.g. 256 for StableCodec's z grid).
    - ``pad_mode``: ``"reflect"`` (default, as the anchors) or ``"replicate"``.
    - ``paper`` / ``paper_url`` / ``licence``: for the model card (``licence`` of the weights: a hub
      licence id such as ``"mit"``, or a name).

    Hub I/O (huggingface_hub's ``PyTorchModelHubMixin``): ``save_pretrained(dir)`` writes
    ``model.safetensors`` + ``config.json`` + a model card, ``from_pretrained(dir or "org/name",
    revision=)`` rebuilds the codec without knowing its class in advance, ``push_to_hub`` uploads. The
    constructor arguments are recorded at construction and must be JSON values (or dataclasses of them).
    Unchanged base-model weights (:meth:`base_weight_keys`) are not written when the codec names its
    base model (:meth:`base_model_ref`); the constructor re-loads them. See ``diffcodec/zoo/hub.py``.

    Instance state:

    - ``rates``: the nominal bits per pixel of each rung, ascending; ``quality`` indexes it (0 = lowest).
    - ``model_id``: a string that identifies the trained weights (zoo name or export name); its 8-bit
      tag is checked at decode time so a file is not decoded by the wrong model.
    """

    method: ClassVar[str] = "codec"
    pad_multiple: ClassVar[int] = 64
    pad_mode: ClassVar[str] = "reflect"
    paper: ClassVar[str] = ""
    paper_url: ClassVar[str] = ""
    licence: ClassVar[str | None] = None
    #: constructor arguments a method no longer takes (training settings before the training modules were
    #: split off): folders whose config.json still holds them load with a warning, see
    #: :func:`diffcodec.zoo.hub.drop_training_args`
    retired_args: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _hub.CODEC_CLASSES[_hub.class_path(cls)] = cls  # lets from_pretrained find it without an import

    def __new__(cls, *args: Any, **kwargs: Any) -> Codec:
        # Record the constructor arguments for config.json (the mixin's own record drops values it cannot
        # serialise silently; we keep their names to refuse saving instead).
        instance = super().__new__(cls, *args, **kwargs)
        init_args, unsaved = _hub.encode_init_args(cls, args, kwargs)
        instance.__dict__["_diffcodec_init_args"] = init_args
        instance.__dict__["_diffcodec_unsaved_args"] = unsaved
        instance.__dict__["_hparams"] = Hyperparameters(_hub.bound_init_args(cls, args, kwargs))
        return instance

    def __init__(self) -> None:
        super().__init__()
        self._rung = 0

    @property
    def hparams(self) -> Hyperparameters:
        """The constructor arguments (defaults included), by name: ``self.hparams.base_model``."""
        return self.__dict__["_hparams"]

    @property
    def device(self) -> torch.device:
        """The device of the codec's first parameter (or buffer); the CPU when it has neither."""
        for tensor in (*self.parameters(), *self.buffers()):
            return tensor.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ rate ladder
    @property
    def rates(self) -> tuple[float, ...]:
        """Nominal bpp per rung, ascending: methods set ``self._rates`` in their constructor."""
        rates = self.__dict__.get("_rates")
        if rates is None:
            raise NotImplementedError(f"{type(self).__name__} must set self._rates (its rate ladder)")
        return tuple(rates)

    @property
    def model_id(self) -> str:
        """Identifier of these weights: ``self._name`` when a method sets it (its config's ``name``)."""
        return self.__dict__.get("_name") or self.method

    @property
    def num_rungs(self) -> int:
        return len(self.rates)

    @property
    def quality(self) -> int:
        """The active rung (index into :attr:`rates`)."""
        return self._rung

    def select_rung(self, quality: int | None = None, bpp: float | None = None) -> int:
        """Resolve ``quality`` (rung index, negative counts from the top) or ``bpp`` (nearest rung).

        With neither, the active rung is kept.
        """
        if quality is not None and bpp is not None:
            raise ValueError("pass either quality= or bpp=, not both")
        if bpp is not None:
            if not math.isfinite(bpp) or bpp <= 0:
                raise ValueError(f"bpp must be a positive number, got {bpp}")
            # nearest in log-rate: rungs are roughly geometric
            rung = min(range(self.num_rungs), key=lambda k: abs(math.log(self.rates[k] / bpp)))
            if not self.rates[0] <= bpp <= self.rates[-1]:
                warnings.warn(
                    f"bpp={bpp:g} is outside {self.model_id}'s ladder ({self.rates[0]:g}..{self.rates[-1]:g} "
                    f"bpp); using the nearest rung, quality={rung} ({self.rates[rung]:g} bpp)",
                    UserWarning,
                    stacklevel=3,
                )
            return rung
        if quality is None:
            return self._rung
        if isinstance(quality, bool) or not isinstance(quality, int):
            raise TypeError(f"quality must be an int rung index, got {quality!r}")
        rung = quality + self.num_rungs if quality < 0 else quality
        if not 0 <= rung < self.num_rungs:
            raise ValueError(
                f"{self.model_id} has {self.num_rungs} rungs (quality 0..{self.num_rungs - 1}, rates "
                f"{', '.join(f'{r:g}' for r in self.rates)} bpp); got quality={quality}"
            )
        return rung

    def set_rung(self, quality: int | None = None, bpp: float | None = None) -> int:
        """Make a rung active (per-λ methods swap their per-rate weights here) and return its index."""
        rung = self.select_rung(quality, bpp)
        if rung != self._rung:
            self._activate_rung(rung)
            self._rung = rung
        return rung

    def __repr__(self) -> str:
        """A one-screen summary: method, rungs and their rates, parameters, device, dtype, weights' origin.

        The full module tree is ``torch.nn.Module.__repr__(codec)``.
        """
        parameters = list(self.parameters())
        count = sum(p.numel() for p in parameters)
        trainable = sum(p.numel() for p in parameters if p.requires_grad)
        devices = sorted({str(p.device) for p in parameters}) or ["-"]
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in parameters}) or ["-"]
        rungs = ", ".join(f"{k}: {rate:g}" for k, rate in enumerate(self.rates))
        lines = [
            f"{type(self).__name__}(model_id={self.model_id!r}, method={self.method!r})",
            f"  rungs       {self.num_rungs} (quality: nominal bpp) {rungs}; active {self.quality}",
            f"  parameters  {_millions(count)} ({_millions(trainable)} trainable)",
            f"  device      {', '.join(devices)}",
            f"  dtype       {', '.join(dtypes)}",
            f"  weights     {self.__dict__.get('_weights_from') or 'built in this process (not loaded)'}",
        ]
        return "\n".join(lines)

    def _activate_rung(self, rung: int) -> None:
        """Hook for methods whose rungs have separate weights. Single-model ladders do nothing."""

    # ------------------------------------------------------------------ training path
    def forward(self, x: torch.Tensor) -> CodecOutput:  # pragma: no cover - abstract
        """Differentiable training path on a (B, 3, H, W) batch in [0, 1] at the active rung."""
        raise NotImplementedError

    def check_training_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless x is a (B, 3, H, W) batch, H and W multiples of ``pad_multiple``."""
        multiple = self.pad_multiple
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(
                f"forward needs (B, 3, H, W) with H, W multiples of {multiple}, got {tuple(x.shape)}"
            )

    # ------------------------------------------------------------------ real coding (methods)
    def _compress(self, x: torch.Tensor, rung: int) -> EncodedImage:  # pragma: no cover - abstract
        """Entropy-code one padded image (1, 3, H, W) in [0, 1] at ``rung`` (batches are split before)."""
        raise NotImplementedError

    def _decompress(
        self, encoded: EncodedImage, padded_size: tuple[int, int], rung: int
    ) -> torch.Tensor:  # pragma: no cover - abstract
        """Rebuild the padded image (1, 3, H, W) in [0, 1] from the payload."""
        raise NotImplementedError

    def _original_side(self, x: torch.Tensor) -> dict[int, SideValue]:
        """Side information computed from the original, unpadded image (1, 3, H, W); default none."""
        return {}

    def _finish_decoding(self, x_hat: torch.Tensor, side: Mapping[int, SideValue]) -> torch.Tensor:
        """Last step on the cropped reconstruction (1, 3, H, W), on the CPU (e.g. a colour fix)."""
        return x_hat

    def _prepare_for_coding(self) -> None:
        """Hook run before coding (e.g. building CDF tables); methods override, must be idempotent."""

    # ------------------------------------------------------------------ real coding (public)
    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image of ``height`` × ``width`` is coded at: the next multiples of ``pad_multiple``,
        widened (by further multiples) where :meth:`_single_position_stride` needs two positions."""
        m = self.pad_multiple
        padded_h, padded_w = -(-height // m) * m, -(-width // m) * m
        stride = self._single_position_stride()
        while stride and -(-padded_h // stride) * -(-padded_w // stride) < 2:
            padded_w += m
        return padded_h, padded_w

    def _single_position_stride(self) -> int | None:
        """The pixel stride of a feature map that must hold at least two positions, or None (default).

        A network whose GroupNorms hold one channel per group (small configs) cannot normalise a 1 × 1
        map (GroupNorm of a single value is undefined): methods return the stride of its deepest map
        (see :func:`has_single_channel_groups`). Official widths never need it.
        """
        return None

    def compress(
        self,
        image: ImageLike | Sequence[ImageLike],
        quality: int | None = None,
        bpp: float | None = None,
    ) -> Bitstream | list[Bitstream]:
        """Compress an image (path, PIL image, or (1|3, H, W) tensor in [0, 1]) to a :class:`Bitstream`.

        A list of images, or a (B, 3, H, W) tensor with B > 1, gives a list with one :class:`Bitstream` per
        image, each identical to compressing that image alone (images may differ in size).
        ``quality`` (rung index) or ``bpp`` (nearest rung) select the rate; the default is the active
        rung. Any H and W from 1 × 1 up are accepted: the image is padded, never resized.
        """
        if isinstance(image, (list, tuple)):
            return self._compress_each([to_tensor(item) for item in image], quality, bpp)
        if isinstance(image, torch.Tensor) and image.dim() == 4 and image.shape[0] > 1:
            return self._compress_each([to_tensor(item) for item in image.unbind(0)], quality, bpp)
        return self._compress_each([to_tensor(image)], quality, bpp)[0]

    def _compress_each(
        self, images: Sequence[torch.Tensor], quality: int | None, bpp: float | None
    ) -> list[Bitstream]:
        """One file per (1, 3, H, W) image, each coded on its own (so exactly as when coded alone)."""
        rung = self.set_rung(quality, bpp)
        tag = model_tag(self.model_id)
        streams = []
        with _eval_mode(self):
            with torch.no_grad():  # tables are built outside inference mode: they stay normal buffers
                self._prepare_for_coding()
            for x in images:
                height, width = (int(size) for size in x.shape[-2:])
                padded = pad_to(x.to(self.device), *self.padded_size(height, width), mode=self.pad_mode)
                padded = padded.contiguous()  # one layout (see to_tensor): the same bits from any source
                with torch.inference_mode():
                    encoded = self._compress(padded, rung)
                side, payload = {**encoded.side, **self._original_side(x)}, list(encoded.streams)
                streams.append(Bitstream(tag, rung, height, width, side=side, streams=payload))
        return streams

    def decompress(
        self,
        stream: Bitstream | bytes | str | Sequence[Bitstream | bytes | str],
        output: Literal["pil", "tensor"] = "pil",
    ) -> Image.Image | torch.Tensor | list[Image.Image | torch.Tensor]:
        """Decode a :class:`Bitstream` (or its bytes, or a file path) to a PIL image or a (1,3,H,W) tensor.

        A list of them gives a list of images. Raises :class:`~diffcodec.bitstream.DecodeError` for a
        malformed file or one written by another model.
        """
        if isinstance(stream, (list, tuple)):
            return [self.decompress(item, output) for item in stream]
        if output not in ("pil", "tensor"):
            raise ValueError(f"output must be 'pil' or 'tensor', got {output!r}")
        expected = model_tag(self.model_id)
        if isinstance(stream, (bytes, bytearray, memoryview)):
            stream = Bitstream.from_bytes(bytes(stream), expected)  # the check must verify with our tag
        elif not isinstance(stream, Bitstream):
            stream = Bitstream.from_file(stream, expected)
        if stream.model_tag != expected:
            from diffcodec.zoo.identify import tag_owners

            raise DecodeError(
                f"this file was written by another model (tag 0x{stream.model_tag:02x}: "
                f"{tag_owners(stream.model_tag)}); {self.model_id!r} has tag 0x{expected:02x}. "
                "Load the model that wrote it."
            )
        if not 0 <= stream.rung < self.num_rungs:
            raise DecodeError(f"rung {stream.rung} is not on {self.model_id}'s ladder of {self.num_rungs}")
        self.set_rung(stream.rung)
        padded = self.padded_size(stream.height, stream.width)
        with _eval_mode(self):
            with torch.no_grad():
                self._prepare_for_coding()
            try:
                with torch.inference_mode():
                    encoded = EncodedImage(list(stream.streams), dict(stream.side))
                    x_hat = self._decompress(encoded, padded, stream.rung)
            except DecodeError:
                raise
            except (ValueError, RuntimeError, IndexError, KeyError, OverflowError) as error:
                reason = f"{type(error).__name__}: {error}"
                raise DecodeError(f"the payload could not be decoded ({reason})") from error
        x_hat = x_hat[..., : stream.height, : stream.width].clamp(0.0, 1.0).float().cpu()
        with torch.no_grad():
            x_hat = self._finish_decoding(x_hat, stream.side)
        return to_pil(x_hat) if output == "pil" else x_hat

    def roundtrip(self, image: ImageLike, quality: int | None = None) -> tuple[Bitstream, torch.Tensor]:
        """Compress and decompress; returns the stream and the (1, 3, H, W) reconstruction."""
        stream = self.compress(image, quality=quality)
        return stream, self.decompress(stream.to_bytes(), output="tensor")

    # ------------------------------------------------------------------ tiling
    @property
    def tile(self) -> str:
        """When the backbone tiles a pass larger than its tile: "auto" (default: only when the untiled pass
        would not fit the device's memory budget), "never" or "always"; see ``diffcodec/nn/memory.py``.
        A runtime setting (not saved). Codecs without a diffusion backbone have nothing to tile: for them
        it reads "never" whatever is set."""
        return getattr(getattr(self, "backbone", None), "tile", "never")

    @tile.setter
    def tile(self, mode: str) -> None:
        mode = check_tile_mode(mode)
        backbone = getattr(self, "backbone", None)
        if hasattr(backbone, "tile"):
            backbone.tile = mode

    # ------------------------------------------------------------------ weights and the hub
    def base_model_ref(self) -> BaseModelRef | None:
        """The pretrained base model this codec was built from (hub id + revision + licence), or None.

        Methods built on a hub model return it (usually from their constructor arguments). Only when it
        is set are the :meth:`base_weight_keys` weights left out of ``model.safetensors``.
        """
        return None

    def base_weight_keys(self, state: Mapping[str, torch.Tensor] | None = None) -> set[str]:
        """The entries of ``state`` (default: the complete state dict) that are frozen base-model weights.

        The one rule (:mod:`diffcodec.nn.base_weights`): a tensor is a base weight when it was recorded
        as loaded from the base model and is still bit-identical to it. Only those are left out of
        checkpoints (and only when :meth:`base_model_ref` is set); a fingerprint in config.json checks that
        the re-loaded ones are the ones the codec was trained with. Widened or trained layers, LoRA and new
        modules are always written.
        """
        if self.base_model_ref() is None:
            return set()
        return _base_weights.base_weight_keys(self, _hub.full_state_dict(self) if state is None else state)

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``model.safetensors`` (without the base weights) and ``config.json`` (mixin hook)."""
        _hub.save_codec(self, save_directory)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The README.md model card (mixin hook); ``repo_id=`` / ``licence=`` via ``model_card_kwargs``."""
        from diffcodec.zoo.model_card import build_model_card

        return build_model_card(self, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs: Any,
    ) -> Codec:
        """Load a codec saved by :meth:`save_pretrained` from a local folder or a hub repo ``"org/name"``.

        The class comes from config.json (it must be ``cls`` or a subclass; ``Codec.from_pretrained``
        accepts any codec). ``model_kwargs`` override the stored constructor arguments. Offline
        (``HF_HUB_OFFLINE=1``) the hub cache is used; missing weights raise
        :class:`~diffcodec.zoo.hub.MissingWeightsError` with the ``hf download`` command to run
        elsewhere, mismatching ones :class:`~diffcodec.zoo.hub.CheckpointError` listing the keys.
        """
        return cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            map_location=map_location,
            strict=strict,
            **model_kwargs,
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        strict: bool = True,
        **model_kwargs: Any,
    ) -> Codec:
        """Mixin hook: resolve the class named in config.json, build it, load the weights."""
        codec = _hub.load_codec(
            cls,
            model_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            map_location=map_location,
            strict=strict,
            **model_kwargs,
        )
        where = str(Path(model_id).resolve()) if Path(model_id).is_dir() else f"hub {model_id}"
        codec.__dict__["_weights_from"] = where + (f" @ {revision}" if revision else "")
        return codec


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f} M" if count >= 10_000 else str(count)


class _eval_mode:
    """Context manager: eval mode inside, the previous training flag restored after."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc: object) -> None:
        self.module.train(self.was_training)


def has_single_channel_groups(module: torch.nn.Module) -> bool:
    """Whether any GroupNorm in ``module`` holds one channel per group (see ``_single_position_stride``)."""
    return any(isinstance(m, torch.nn.GroupNorm) and m.num_channels == m.num_groups for m in module.modules())


def check_side(side: Mapping[int, SideValue], required: Sequence[int]) -> None:
    """Raise :class:`DecodeError` if a side-information field a method needs is missing."""
    missing = [key for key in required if key not in side]
    if missing:
        raise DecodeError(f"side-information field(s) {missing} are missing from the file")
