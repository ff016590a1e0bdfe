"""Train the built-in base model, `shapes-32`, on the shape dataset (issue 5).

    .venv/bin/python -m gpu.base_model.train --out <dir> [--unet-steps N] [...]

Two stages, both on CPU in float32, everything seeded (same config and torch, same weights):
1. a small `AutoencoderKL` (32x32x3 <-> 16x16x4) learns to reconstruct the dataset's images
   (MSE plus a tiny KL term); its latent scaling factor is measured afterwards;
2. a small CLIP text encoder (whose tokenizer makes every caption word one token) and a
   `UNet2DConditionModel` learn, together, the diffusion objective on those latents, with
   10% of captions dropped so that classifier-free guidance works. Cosine learning-rate
   schedule with warm-up; the saved weights are an exponential moving average.

Zero terminal SNR with v-prediction (Lin et al., "Common Diffusion Noise Schedules and
Sample Steps are Flawed"): with Stable Diffusion's usual schedule the noisiest training step
still leaks 7% of the image, including its mean colour, so a model learns to take the
overall colours from the noise, and at inference, which starts from pure noise, the colours
come out at random. For images whose content is two flat colours that is everything: a
first full run on that schedule drew tidy shapes in the wrong colours (45% colour
agreement, worse with more guidance). Rescaled betas reach SNR 0 at the last step,
v-prediction keeps that step learnable, and DDIM samples with trailing timesteps.

The result is saved as a `StableDiffusionPipeline` (`save_pretrained`, safetensors), with a
DDIM scheduler, so the worker loads it through the same `from_pretrained` path as any
checkpoint. `train_config.json` beside it records the exact settings, seed and timings, and
`taskstream.json` caps the render size at the training size (`gpu.models.render_size`).

Sizes are chosen from measured step times on the 2-core machine, idle: VAE (16, 32) at batch
32 0.17 s/step; UNet (32, 64) at batch 32 0.46-0.5 s/step (0.80 M parameters), against 1.7 s
for (64, 128) at batch 64. 1,000 + 5,000 steps is then about 3 + 42 minutes.

Why latent diffusion and not pixel space: the worker's pipeline class expects a VAE, and a
trained one lets the UNet work at 16x16, a quarter of the pixels, which is what makes CPU
training fit in an hour.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    size: int = 32
    pool: int = 4032  # images rendered once (24 placements of each of the 168 combinations)
    vae_steps: int = 1000
    vae_batch: int = 32
    vae_lr: float = 1e-3
    unet_steps: int = 5000
    unet_batch: int = 32
    unet_lr: float = 5e-4
    unet_warmup: int = 200
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    # zero terminal SNR with v-prediction (Lin et al., 2024): see the module docstring
    zero_terminal_snr: bool = True
    prediction_type: str = "v_prediction"
    text_positions: int = 32


def _images(config: TrainConfig):
    import numpy as np
    import torch

    from gpu.base_model.shapes import dataset

    pixels, captions = [], []
    for image, sample in dataset(config.pool, seed=config.seed, size=config.size):
        pixels.append(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
        captions.append(sample.caption)
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous(), captions


def build(config: TrainConfig):
    from diffusers import DDPMScheduler

    from gpu.base_model.shapes import CAPTION_WORDS
    from gpu.models import small_unet, small_vae, text_parts

    tokenizer, text_encoder = text_parts(
        hidden=64, positions=config.text_positions, words=CAPTION_WORDS
    )
    vae = small_vae(sample_size=config.size)
    unet = small_unet(sample_size=config.size // 2, cross_attention_dim=64, norm_groups=16)
    noise = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        rescale_betas_zero_snr=config.zero_terminal_snr,
        prediction_type=config.prediction_type,
        timestep_spacing="trailing",
    )
    return tokenizer, text_encoder, vae, unet, noise


def train_vae(vae, pixels, config: TrainConfig, rng) -> float:
    import torch

    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr)
    vae.train()
    started, loss = time.monotonic(), torch.tensor(0.0)
    for step in range(config.vae_steps):
        batch = pixels[torch.randint(len(pixels), (config.vae_batch,), generator=rng)]
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample(generator=rng)).sample
        loss = torch.nn.functional.mse_loss(recon, batch) + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            logger.info(
                "vae %d/%d loss %.4f (%.0fs)",
                step,
                config.vae_steps,
                loss.item(),
                time.monotonic() - started,
            )
    vae.eval()
    return float(loss.item())


def prediction_target(scheduler, clean, noise, timesteps):
    """What the UNet learns to predict: the noise, or the velocity under v-prediction."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    return noise


def train_unet(tokenizer, text_encoder, vae, unet, noise, pixels, captions, config, rng) -> float:
    import torch

    from gpu.models import token_ids

    with torch.no_grad():
        latents = torch.cat(
            [vae.encode(pixels[i : i + 256]).latent_dist.mean for i in range(0, len(pixels), 256)]
        )
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = latents * scaling
    ids = token_ids(tokenizer, captions)
    empty = token_ids(tokenizer, [""])
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.unet_lr)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.unet_warmup, config.unet_steps)
    ema = EMAModel(params, decay=config.ema_decay, use_ema_warmup=True)
    unet.train()
    text_encoder.train()
    started, loss = time.monotonic(), torch.tensor(0.0)
    for step in range(config.unet_steps):
        pick = torch.randint(len(latents), (config.unet_batch,), generator=rng)
        batch_ids = ids[pick].clone()
        dropped = torch.rand(config.unet_batch, generator=rng) < config.caption_dropout
        batch_ids[dropped] = empty
        clean = latents[pick]
        noise_sample = torch.randn(clean.shape, generator=rng)
        timesteps = torch.randint(
            0, noise.config.num_train_timesteps, (config.unet_batch,), generator=rng
        )
        noisy = noise.add_noise(clean, noise_sample, timesteps)
        hidden = text_encoder(batch_ids).last_hidden_state
        predicted = unet(noisy, timesteps, encoder_hidden_states=hidden).sample
        loss = torch.nn.functional.mse_loss(
            predicted, prediction_target(noise, clean, noise_sample, timesteps)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        ema.step(params)
        if step % 100 == 0:
            logger.info(
                "unet %d/%d loss %.4f (%.0fs)",
                step,
                config.unet_steps,
                loss.item(),
                time.monotonic() - started,
            )
    ema.copy_to(params)  # the averaged weights are the ones saved
    unet.eval()
    text_encoder.eval()
    return float(loss.item())


def train(out: Path, config: TrainConfig) -> dict:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    rng = torch.Generator().manual_seed(config.seed)
    pixels, captions = _images(config)
    tokenizer, text_encoder, vae, unet, noise = build(config)
    started = time.monotonic()
    vae_loss = train_vae(vae, pixels, config, rng)
    vae_s = time.monotonic() - started
    unet_loss = train_unet(tokenizer, text_encoder, vae, unet, noise, pixels, captions, config, rng)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler.from_config(
            noise.config, clip_sample=False, set_alpha_to_one=False, steps_offset=1
        ),  # trailing timesteps and the zero-SNR betas come with the config
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out, safe_serialization=True)
    report = {
        "config": asdict(config),
        "vae_loss": vae_loss,
        "unet_loss": unet_loss,
        "vae_seconds": round(vae_s),
        "total_seconds": round(time.monotonic() - started),
        "torch": torch.__version__,
    }
    (out / "train_config.json").write_text(json.dumps(report, indent=2) + "\n")
    write_render_cap(out, config)
    return report


def write_render_cap(out: Path, config: TrainConfig) -> None:
    """`taskstream.json`: the model draws at most its training size (`gpu.models.render_size`)."""
    (out / "taskstream.json").write_text(json.dumps({"max_render_size": config.size}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = TrainConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    print(json.dumps(train(args.out, config), indent=2))


if __name__ == "__main__":
    main()
