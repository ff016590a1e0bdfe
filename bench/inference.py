"""Images per second through the whole system against the bare pipeline, same machine, same run.

    .venv/bin/python bench/inference.py [--images 24] [--steps 10] [--size 32]

Starts `taskstream up` (everything embedded) in a temporary data dir, then measures:
  bare    the pipeline the worker loads (the built-in model), called in this
          process once per image with its own seed: images/s
  system  the same generations as GENERATION tasks posted over HTTP at once -> all COMPLETED
          (PNG stored) as seen through the API: images/s
and prints the system's ratio to the bare figure against the issue's floor (0.90).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lifecycle import embedded_stack, wait_all_completed  # noqa: E402

FLOOR = 0.90


def bare(n: int, steps: int, size: int) -> float:
    import torch
    from diffusers import StableDiffusionPipeline

    from gpu.models import BUILTIN_MODELS, DEFAULT_MODEL

    pipe = StableDiffusionPipeline.from_pretrained(
        BUILTIN_MODELS[DEFAULT_MODEL], local_files_only=True, use_safetensors=True
    )
    pipe.set_progress_bar_config(disable=True)
    pipe("warm up", width=size, height=size, num_inference_steps=steps)
    started = time.perf_counter()
    for seed in range(n):
        generator = torch.Generator().manual_seed(seed)
        with torch.inference_mode():
            image = pipe(
                f"bench {seed}",
                width=size,
                height=size,
                num_inference_steps=steps,
                generator=generator,
            ).images[0]
        image.save(os.devnull, format="PNG")
    return n / (time.perf_counter() - started)


async def system(info: dict, n: int, steps: int, size: int) -> float:
    instance = f"bench-inference-{os.getpid()}"
    headers = {"Authorization": f"Bearer {info['admin_token']}"}
    api = info["api_url"]

    def body(seed: int) -> dict:
        return {
            "task_type": "GENERATION",
            "prompt": f"bench {seed}",
            "width": size,
            "height": size,
            "seed": seed,
            "config": {"num_inference_steps": steps},
            "origin_instance": instance,
        }

    async with aiohttp.ClientSession(headers=headers) as session:
        # one warm-up task loads the pipeline in the worker
        async with session.post(f"{api}/api/v1/tasks/", json=body(10_000)) as resp:
            assert resp.status == 200, await resp.text()
        await wait_all_completed(session, api, instance, 1, timeout=120)
        started = time.perf_counter()
        for seed in range(n):
            async with session.post(f"{api}/api/v1/tasks/", json=body(seed)) as resp:
                assert resp.status == 200, await resp.text()
        finished = await wait_all_completed(session, api, instance, n + 1, timeout=600)
    return n / (finished - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--steps", type=int, default=10)
    # the built-in model's own size: larger requests render at 32 and are upscaled
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    with embedded_stack() as (_, info):
        through = asyncio.run(system(info, args.images, args.steps, args.size))
        alone = bare(args.images, args.steps, args.size)
    ratio = through / alone
    print(
        f"images={args.images} {args.size}x{args.size} steps={args.steps}"
        f" (built-in model, embedded stack, {os.cpu_count()} cores)"
    )
    print(f"bare     pipeline call in one process     {alone:7.2f} images/s")
    print(
        f"system   HTTP create -> COMPLETED + PNG     {through:7.2f} images/s   ratio {ratio:.3f}"
        f"   floor {FLOOR:.2f}: {'ok' if ratio >= FLOOR else 'BELOW'}"
    )


if __name__ == "__main__":
    main()
