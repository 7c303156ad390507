"""``diffcodec demo``: the main job end to end, offline — image → ``.dcb`` file → image, with its numbers.

    diffcodec demo [--model NAME_OR_FOLDER] [--image IMAGE] [-q RUNG] [--device cpu|cuda] [--out-dir DIR]

Loads :data:`DEFAULT_MODEL` (a small model bundled with the package) unless ``--model`` names another zoo
model or a folder written by ``save_pretrained`` / ``diffcodec export``; compresses the bundled sample
image (or ``--image``) at its own size — the codec pads and tiles, nothing is resized — to a real file,
decodes that file, and writes into ``--out-dir``:

- ``STEM.dcb``: the bitstream;
- ``STEM.recon.png``: the reconstruction;
- ``STEM.side-by-side.png``: original | reconstruction (2W × H) above a caption strip (model, rung, bpp,
  PSNR, LPIPS).

Results go to stdout, one ``key value`` per line (``line.split(maxsplit=1)``), in the order of
:data:`RESULT_KEYS`; loading messages go to stderr. ``bpp`` is ``8 * file size / (H * W)``: every byte of
the file, header included. PSNR and LPIPS (AlexNet, whose weights ship with
diffcodec: no extra needed) come from :mod:`diffcodec.eval.metrics` on the 8-bit images, as ``diffcodec eval``
computes them; if LPIPS cannot be built, its line reads ``-`` and the reason goes to stderr. ``encode_s`` /
``decode_s`` time one call each of ``compress`` / ``decompress``, as a one-off command would: the first
call in a process also pays one-off warm-up (kernel selection, entropy-coder tables), most of the encode
time on the small sample on a CPU; steady-state times need repeated calls.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image, ImageDraw, ImageFont

from diffcodec.errors import ModelUnavailableError

if TYPE_CHECKING:
    from diffcodec.codecs.base import Codec

__all__ = ["DEFAULT_MODEL", "RESULT_KEYS", "SAMPLE", "add_arguments", "main", "run", "side_by_side"]

#: The zoo model the demo runs when ``--model`` is not given (bundled, so it works offline). OSCAR's ladder
#: reaches 0.04–0.125 bpp, where the small models' output is recognisable (docs/bundled.md); the bundled
#: StableCodec / CADC / OneDC sit below 0.01 bpp.
DEFAULT_MODEL = "oscar-small"

#: The bundled sample image (public domain, see ``diffcodec/assets/SOURCES.md``).
SAMPLE = "astronaut.png"

#: Images with more pixels than this get a "this may take a while" note on CPU (nothing is resized).
LARGE_ON_CPU = 512 * 512

#: The keys of the lines printed on stdout, in order.
RESULT_KEYS = (
    "model", "method", "rung", "rungs", "nominal_bpp", "device", "image", "size", "file", "bytes",
    "bpp", "psnr_db", "lpips", "encode_s", "decode_s", "recon", "side_by_side",
)  # fmt: skip


def sample_image_path() -> Path:
    """Path of the bundled sample image."""
    return Path(str(resources.files("diffcodec") / "assets" / SAMPLE))


# -------------------------------------------------------------------------------------------- model
def _resolve_device(name: str) -> torch.device:
    from diffcodec.cli import UsageError

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device {name!r} is not a torch device; use cpu or cuda") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but CUDA is not available here; use --device cpu")
    return device


def load_model(name_or_path: str, device: torch.device) -> Codec:
    """``diffcodec.load(name_or_path)``; a model that cannot be loaded here raises a one-line
    :class:`ModelUnavailableError` that says what to do."""
    import diffcodec
    from diffcodec.zoo import list_models

    if name_or_path == DEFAULT_MODEL and DEFAULT_MODEL not in {entry.name for entry in list_models()}:
        raise ModelUnavailableError(
            f"the demo's default model {DEFAULT_MODEL!r} is not in this installation's zoo; reinstall "
            "diffcodec, or pass --model NAME_OR_FOLDER (a zoo model with local weights, see `diffcodec "
            "zoo`, or a folder written by save_pretrained)"
        )
    try:
        return diffcodec.load(name_or_path, device=device)
    except (ValueError, KeyError, OSError, NotImplementedError) as error:  # OSError: missing files
        reason = " ".join(str(error).split()).rstrip(".")
        if name_or_path == DEFAULT_MODEL:
            raise ModelUnavailableError(
                f"the demo's default model {DEFAULT_MODEL!r} could not be loaded ({reason}); it ships "
                f"in diffcodec/assets/models/{DEFAULT_MODEL}/: reinstall diffcodec, or pass --model "
                "NAME_OR_FOLDER"
            ) from error
        raise ModelUnavailableError(f"cannot load model {name_or_path!r}: {reason}") from error


def _select_rung(codec: Codec, quality: int | None) -> int:
    from diffcodec.cli import UsageError

    if quality is None:
        return codec.set_rung((codec.num_rungs - 1) // 2)  # the middle rung (lower middle if even)
    try:
        return codec.set_rung(quality)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--quality {quality}: {error}") from None


# ------------------------------------------------------------------------------------- side by side
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's default font at ``size`` pixels (a fixed bitmap font when PIL has no FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # older Pillow or no FreeType: one size only
        return ImageFont.load_default()


def _truncate(draw: ImageDraw.ImageDraw, text: str, font: Any, room: float) -> str:
    """``text``, cut and ended with an ellipsis if it is wider than ``room`` pixels."""
    if draw.textlength(text, font=font) <= room:
        return text
    while text and draw.textlength(text + "\u2026", font=font) > room:
        text = text[:-1]
    return text + "\u2026" if text else ""


def side_by_side(
    original: Image.Image, reconstruction: Image.Image, caption: list[tuple[str, str]]
) -> Image.Image:
    """Original | reconstruction (2W × H) above a white caption strip.

    ``caption`` is a list of (left, right) text lines, drawn under the original and under the
    reconstruction respectively. The font is sized to the image and shrunk (down to 8 px) until every
    line fits its half; a line that still does not fit is cut with an ellipsis.
    """
    if original.size != reconstruction.size:
        raise ValueError(f"original {original.size} and reconstruction {reconstruction.size} differ in size")
    width, height = original.size
    margin = max(4, width // 128)
    room = width - 2 * margin
    size = max(11, min(width // 24, 40))
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    texts = [text for line in caption for text in line if text]
    while size > 8 and any(probe.textlength(text, font=font) > room for text in texts):
        size -= 1
        font = _font(size)
    line_height = int(size * 1.3)
    strip = 2 * margin + line_height * len(caption)
    canvas = Image.new("RGB", (2 * width, height + strip), "white")
    canvas.paste(original.convert("RGB"), (0, 0))
    canvas.paste(reconstruction.convert("RGB"), (width, 0))
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate(caption):
        y = height + margin + row * line_height
        for x, text in zip((margin, width + margin), line):
            draw.text((x, y), _truncate(draw, text, font, room), fill="black", font=font)
    return canvas


# -------------------------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m", "--model", default=DEFAULT_MODEL, metavar="NAME_OR_PATH",
        help=f"zoo name or checkpoint folder (default: {DEFAULT_MODEL}, bundled)",
    )  # fmt: skip
    parser.add_argument("--image", type=Path, default=None, help="image instead of the bundled sample")
    parser.add_argument(
        "-q", "--quality", type=int, default=None, help="rung index, 0 = lowest rate (default: the middle)"
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    parser.add_argument("--out-dir", type=Path, default=Path("diffcodec-demo"), help="output folder")


def _demo_metrics(device: torch.device) -> Any:
    """PSNR always; LPIPS (AlexNet, weights shipped with diffcodec) when the ``lpips`` package loads.

    A broken or partial install costs the LPIPS line (printed as ``-``, the reason on stderr), never the
    demo: the round trip and its bpp / PSNR are the main job.
    """
    from diffcodec.eval.metrics import ImageMetrics

    try:
        return ImageMetrics(("psnr", "lpips"), device=str(device)).build()
    except (ImportError, OSError, ValueError) as error:
        print(f"note: LPIPS unavailable ({error}); printing PSNR only", file=sys.stderr, flush=True)
        return ImageMetrics(("psnr",), device=str(device))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> int:
    """The ``diffcodec demo`` command (see the module docstring); returns the exit status."""
    from diffcodec.bitstream import Bitstream
    from diffcodec.imageio import to_pil, to_tensor

    image_path = Path(args.image) if args.image is not None else sample_image_path()
    if not image_path.is_file():
        raise FileNotFoundError(f"no such image: {image_path}")
    x = to_tensor(image_path)  # reject a bad image before loading a model
    height, width = x.shape[-2:]
    device = _resolve_device(args.device)

    print(f"loading {args.model} on {device} ...", file=sys.stderr, flush=True)
    if device.type == "cpu" and height * width > LARGE_ON_CPU:
        print(
            f"note: {width}x{height} is coded at full size, which on a CPU can take a minute "
            "(--device cuda is much faster)",
            file=sys.stderr,
            flush=True,
        )
    codec = load_model(args.model, device)
    rung = _select_rung(codec, args.quality)
    metrics = _demo_metrics(device)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = image_path.stem
    stream_path = args.out_dir / f"{stem}.dcb"
    recon_path = args.out_dir / f"{stem}.recon.png"
    pair_path = args.out_dir / f"{stem}.side-by-side.png"

    _synchronize(device)
    start = time.perf_counter()
    stream = codec.compress(x, quality=rung)
    _synchronize(device)
    encode_s = time.perf_counter() - start
    stream.to_file(stream_path)

    decoded = Bitstream.from_file(stream_path)  # decode what is on disk, not the object in memory
    start = time.perf_counter()
    x_hat = codec.decompress(decoded, output="tensor")
    _synchronize(device)
    decode_s = time.perf_counter() - start
    reconstruction = to_pil(x_hat)
    reconstruction.save(recon_path)

    size = stream_path.stat().st_size
    bpp = 8 * size / (height * width)
    scores = metrics(x, x_hat)
    lpips_text = f" \u00b7 LPIPS {scores['lpips']:.3f}" if "lpips" in scores else ""
    caption = [
        (f"original, {width}x{height}", f"{codec.model_id}, rung {rung} (of 0..{codec.num_rungs - 1})"),
        ("", f"{bpp:.4f} bpp \u00b7 PSNR {scores['psnr']:.2f} dB{lpips_text}"),
    ]
    side_by_side(to_pil(x), reconstruction, caption).save(pair_path)

    results: dict[str, Any] = {
        "model": codec.model_id,
        "method": codec.method,
        "rung": rung,
        "rungs": codec.num_rungs,
        "nominal_bpp": f"{codec.rates[rung]:g}",
        "device": device,
        "image": image_path,
        "size": f"{width}x{height}",
        "file": stream_path,
        "bytes": size,
        "bpp": f"{bpp:.6f}",
        "psnr_db": f"{scores['psnr']:.2f}",
        "lpips": f"{scores['lpips']:.4f}" if "lpips" in scores else "-",
        "encode_s": f"{encode_s:.3f}",
        "decode_s": f"{decode_s:.3f}",
        "recon": recon_path,
        "side_by_side": pair_path,
    }
    for key, value in results.items():
        print(f"{key:<13} {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m diffcodec.demo ...``: the same as ``diffcodec demo ...`` (same errors, exit statuses)."""
    from diffcodec.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
