"""Does the base model draw what its prompt says? Classical checks, no learned classifier.

    .venv/bin/python bench/base_model_quality.py [--model DIR] [--seeds 4] [--steps 20]

For every colour x shape, a prompt "a <colour> <shape> on a <background> background" (the
background cycles through the other colours) is generated with several seeds at the model's
training size. Each image is judged by `gpu.base_model.quality.judge`: the dominant
foreground colour must be the prompt's colour, and the classical shape check (taper and
corner fill) must agree with the prompt's shape. Prints both rates against the issue's
floors (colour >= 80%, shape >= 60%), the per-class table, and the ratio against the same
checks on the dataset's own renders of the same prompts (the baseline: what a perfect model
would score under these checks), measured in the same run. The model defaults to the
built-in one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu.base_model.quality import FLOORS, evaluate, evaluate_renders, prompts  # noqa: E402
from gpu.models import BUILTIN_MODELS, DEFAULT_MODEL  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=BUILTIN_MODELS[DEFAULT_MODEL])
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
    baseline = evaluate_renders(args.seeds, args.size)
    for name in ("colour", "shape"):
        print(
            f"{name:7s} on the dataset's renders {baseline[name]:6.1%};"
            f" model / renders = {result[name] / baseline[name]:.3f}"
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
