"""Does the base model draw what its prompt says? Classical checks, no learned classifier.

    .venv/bin/python bench/base_model_quality.py --model <pipeline dir> [--seeds 4] [--steps 20]

For every colour x shape, a prompt "a <colour> <shape> on a <background> background" (the
background cycles through the other colours) is generated with several seeds at the model's
training size. Each image is judged by `gpu.base_model.quality.judge`: the dominant
foreground colour must be the prompt's colour, and the fill-ratio shape check must agree
with the prompt's shape. Prints both rates against the issue's floors (colour >= 80%,
shape >= 60%) and the per-class table.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu.base_model.quality import judge  # noqa: E402
from gpu.base_model.shapes import COLOURS, SHAPES  # noqa: E402

FLOORS = {"colour": 0.80, "shape": 0.60}


def prompts() -> list[tuple[str, str, str]]:
    """(colour, shape, background) for every colour x shape, backgrounds cycling."""
    names = list(COLOURS)
    out = []
    for i, colour in enumerate(names):
        for j, shape in enumerate(SHAPES):
            others = [n for n in names if n != colour]
            out.append((colour, shape, others[(i + j) % len(others)]))
    return out


def evaluate(model: Path, seeds: int, steps: int, size: int, guidance: float) -> dict:
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        model, local_files_only=True, use_safetensors=True
    )
    pipe.set_progress_bar_config(disable=True)
    hits: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # colour ok, shape ok, total
    started = time.perf_counter()
    for colour, shape, background in prompts():
        prompt = f"a {colour} {shape} on a {background} background"
        images = pipe(
            [prompt] * seeds,
            width=size,
            height=size,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=[torch.Generator().manual_seed(s) for s in range(seeds)],
        ).images
        for image in images:
            verdict = judge(image)
            for key in (f"colour:{colour}", f"shape:{shape}"):
                row = hits[key]
                row[0] += verdict.colour == colour
                row[1] += verdict.shape == shape
                row[2] += 1
    total = sum(hits[f"shape:{s}"][2] for s in SHAPES)
    return {
        "colour": sum(hits[f"shape:{s}"][0] for s in SHAPES) / total,
        "shape": sum(hits[f"shape:{s}"][1] for s in SHAPES) / total,
        "images": total,
        "seconds": time.perf_counter() - started,
        "table": {k: tuple(v) for k, v in sorted(hits.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--guidance", type=float, default=4.0)
    args = parser.parse_args()
    result = evaluate(args.model, args.seeds, args.steps, args.size, args.guidance)
    print(
        f"{result['images']} images ({len(prompts())} prompts x {args.seeds} seeds,"
        f" {args.steps} steps, guidance {args.guidance}) in {result['seconds']:.0f}s"
    )
    for name in ("colour", "shape"):
        ok = result[name] >= FLOORS[name]
        print(
            f"{name:7s} agreement {result[name]:6.1%}   floor {FLOORS[name]:.0%}:"
            f" {'ok' if ok else 'BELOW'}"
        )
    print(f"{'class':16s} {'colour ok':>10s} {'shape ok':>10s} {'images':>7s}")
    for key, (colour_ok, shape_ok, n) in result["table"].items():
        print(f"{key:16s} {colour_ok / n:10.0%} {shape_ok / n:10.0%} {n:7d}")


if __name__ == "__main__":
    main()
