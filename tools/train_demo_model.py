#!/usr/bin/env python3
"""Trains Lumen's demo model (issue 6) from scratch on the CPU: a small Stable-Diffusion-1.x-family
latent diffusion model of the shapes world (tools/shapes_dataset.py), saved as a diffusers folder.

Run by hand, never in CI, on a machine you may load (it uses --threads cores for --minutes). From the
repository root, the full run (about 2 h 05 min of wall time on 2 cores, of which 2 h training and a
few minutes to build the latent cache and save):

    nice -n 19 .venv-fixtures/bin/python tools/train_demo_model.py --minutes 120 --threads 2 \\
        --work .train/demo --out Models/demo

and a smoke run (about 10 min on one core; the model draws blobs of roughly the right colours at best):

    nice -n 19 .venv-fixtures/bin/python tools/train_demo_model.py --minutes 8 --threads 1 \\
        --cache-size 4000 --work /tmp/lumen_demo/train --out /tmp/lumen_demo/model

Then tools/eval_adherence.py --model Models/demo scores it on the held-out prompts.

Resumable: the whole state (networks, EMA, optimisers, step, elapsed time, RNG) is checkpointed
to WORK/checkpoint.pt every --checkpoint-minutes and at each stage's end; running the same command
again continues where it stopped (with the time already spent counted against --minutes); --fresh
starts over. WORK/log.txt has the losses. Deterministic data: the images of step n are rendered
from seed (stage, n), so a resumed run sees the data the uninterrupted one would have.

Stages
  1. VAE (--vae-fraction of the budget, 15 %; longer, up to --vae-max-fraction 30 %, while its
     reconstructions of the held-out images score under 98 % colour or 90 % shape, checked every
     2 min past the 15 %): AutoencoderKL on freshly rendered 64x64 images,
     L1 + MSE reconstruction + 1e-4 x KL (per latent element), batch 32, Adam 1e-3 (50 warm-up
     steps), cosine decay to 1e-4.
     At its end it reconstructs the held-out evaluation images and scores them with
     tools/adherence.py: the ceiling any UNet can reach through this VAE.
  2. Latent cache: --cache-size training scenes (60 000) rendered and encoded once (posterior mean
     and standard deviation, f16); the latent scaling factor is 1 / std of the means (written as
     the VAE config's scaling_factor, as SD's 0.18215 was measured).
  3. UNet + text encoder, trained together on the cached latents (a fresh posterior sample each
     time), epsilon prediction, uniform timesteps on SD 1.x's scaled-linear schedule, Min-SNR-5
     loss weighting (faster convergence), caption dropout 10 % (-> "" for classifier-free
     guidance), captions redrawn each time (size / position words dropped at random), batch 64,
     AdamW 5e-4 with 300 warm-up steps and a linear decay over the last 30 % of the time, gradient
     clipping 1, EMA 0.999 of both networks (the EMA weights are what is saved).

The model (all f16: about 20.3 MB, 19.3 MiB)
  text_encoder  CLIPTextModel, REAL CLIP vocabulary (49408 tokens) x 64 hidden, 3 layers, 4 heads,
                quick_gelu, 77 positions: 3.32 M parameters (3.16 M of them the token embedding;
                only the ~30 tokens of this world ever get a gradient)
  unet          UNet2DConditionModel on 8x8x4 latents: block_out_channels (64, 128, 128),
                CrossAttnDownBlock2D, CrossAttnDownBlock2D, DownBlock2D / UpBlock2D,
                CrossAttnUpBlock2D, CrossAttnUpBlock2D, UNetMidBlock2DCrossAttn, 1 layer per
                block, 4 heads, cross-attention to 64 wide, 32 norm groups: 5.84 M
  vae           AutoencoderKL, 4 levels (16, 32, 64, 64) like SD's (spatial factor 8: 64x64 images
                <-> 8x8x4 latents), 1 layer per block, 16 norm groups: 0.98 M
  scheduler     DDIMScheduler with SD 1.x's betas, steps_offset 1, "leading" spacing

Why these sizes: at 64x64 pixels the four shape kinds stay distinguishable when small (16 px) and the
scorer works; a factor-8 VAE makes the UNet's latent 8x8, where a training step costs a third of
what a 16x16 latent does (measured: 0.58 s vs 1.3 s for a step of 64 vs 32 samples on one busy
core), so two hours buy ~3x more UNet updates; the shapes world carries little information, so
4 x 8 x 8 latents reconstruct it (checked by the stage-1 score). Cross-attention at 8x8 and 4x4 is
where a caption's colour and position words reach the image. Width 64-128 and one layer per block
keep the UNet near 6 M parameters: with the 3.2 M token embedding and the VAE, under 20 MB.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lumen_tools_common as common  # noqa: E402  (sets HF_HUB_OFFLINE before the imports below)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

import adherence  # noqa: E402
import shapes_dataset as sd  # noqa: E402

TEXT_HIDDEN = 64

TEXT_CONFIG = dict(
    vocab_size=common.VOCAB_SIZE, hidden_size=TEXT_HIDDEN, intermediate_size=4 * TEXT_HIDDEN,
    num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=common.MAX_LENGTH,
    hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=TEXT_HIDDEN,
    attention_dropout=0.0, dropout=0.0, initializer_range=0.02, initializer_factor=1.0,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,  # as SD 1.5's folder (tools/make_fixtures.py)
)

UNET_CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4, center_input_sample=False,
    flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(64, 128, 128), layers_per_block=1, downsample_padding=1,
    mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
    cross_attention_dim=TEXT_HIDDEN, attention_head_dim=4, use_linear_projection=False,
    upcast_attention=False,
)

VAE_CONFIG = dict(
    in_channels=3, out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 64, 64), layers_per_block=1, act_fn="silu", latent_channels=4,
    norm_num_groups=16, sample_size=sd.IMAGE_SIZE, scaling_factor=0.18215,  # measured in stage 2
)

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    trained_betas=None, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    prediction_type="epsilon", timestep_spacing="leading",
)

SEED_VAE_DATA, SEED_CACHE, SEED_UNET = 1_000_000, 2_000_000, 3_000_000


def log(work, text):
    line = f"[{time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    with open(os.path.join(work, "log.txt"), "a") as f:
        f.write(line + "\n")


def to_tensor(images):
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def count(module):
    return sum(p.numel() for p in module.parameters())


class EMA:
    """Exponential moving average of a module's parameters, with the usual warm-up
    decay = min(decay, (1 + n) / (10 + n)) so that a short run's average is not mostly the init."""

    def __init__(self, module, decay):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module, n):
        d = min(self.decay, (1 + n) / (10 + n))
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)


class Trainer:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        self.path = os.path.join(self.work, "checkpoint.pt")
        torch.manual_seed(a.seed)
        self.vae = AutoencoderKL(**VAE_CONFIG)
        self.text = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
        self.text.config.architectures = ["CLIPTextModel"]
        self.unet = UNet2DConditionModel(**UNET_CONFIG)
        self.vae_opt = torch.optim.Adam(self.vae.parameters(), lr=a.vae_lr)
        # No weight decay on the token embedding: almost all of its rows never get a gradient.
        decay, no_decay = [], []
        for name, p in list(self.unet.named_parameters()) + list(self.text.named_parameters()):
            (no_decay if ("embedding" in name or p.dim() < 2) else decay).append(p)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=a.lr, betas=(0.9, 0.99))
        self.ema_unet = EMA(self.unet, a.ema)
        self.ema_text = EMA(self.text, a.ema)
        self.state = {"stage": "vae", "vae_step": 0, "unet_step": 0, "elapsed": 0.0,
                      "vae_seconds": 0.0, "scaling_factor": None, "vae_score": None}
        self.cache = None
        self.tokenizer = common.clip_tokenizer()
        self.token_cache = {}
        self.noise = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items()
                                      if k not in ("set_alpha_to_one", "steps_offset")})
        ac = self.noise.alphas_cumprod
        self.snr = ac / (1 - ac)
        self.started = time.time()
        self.last_checkpoint = time.time()

    # -- time ----------------------------------------------------------------------------
    def elapsed(self):
        return self.state["elapsed"] + (time.time() - self.started)

    def budget(self):
        return self.a.minutes * 60.0

    # -- checkpoints -----------------------------------------------------------------------
    def save(self):
        self.state["elapsed"] = self.elapsed()
        self.started = time.time()
        blob = {"state": self.state, "args": vars(self.a),
                "vae": self.vae.state_dict(), "vae_opt": self.vae_opt.state_dict(),
                "text": self.text.state_dict(), "unet": self.unet.state_dict(), "opt": self.opt.state_dict(),
                "ema_unet": self.ema_unet.shadow, "ema_text": self.ema_text.shadow,
                "torch_rng": torch.get_rng_state()}
        tmp = self.path + ".tmp"
        torch.save(blob, tmp)
        os.replace(tmp, self.path)
        self.last_checkpoint = time.time()

    def adapt_threads(self):
        """WORK/threads, when present, overrides --threads; re-read every --log-every steps, so a
        person sharing the machine can lend the training fewer cores (echo 1 > WORK/threads) and give
        them back (rm WORK/threads) without stopping it. Oversubscribed OpenMP threads slow down far
        more than the core they lose; one fewer thread does not."""
        want = self.a.threads
        try:
            with open(os.path.join(self.work, "threads")) as f:
                want = max(1, int(f.read().strip()))
        except (OSError, ValueError):
            pass
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)
            log(self.work, f"now on {want} thread(s)")

    def maybe_save(self):
        if time.time() - self.last_checkpoint > self.a.checkpoint_minutes * 60:
            self.save()
            log(self.work, f"checkpoint saved ({self.elapsed() / 60:.1f} min elapsed)")

    def load(self):
        blob = torch.load(self.path, weights_only=False)
        self.state = blob["state"]
        self.vae.load_state_dict(blob["vae"])
        self.vae_opt.load_state_dict(blob["vae_opt"])
        self.text.load_state_dict(blob["text"])
        self.unet.load_state_dict(blob["unet"])
        self.opt.load_state_dict(blob["opt"])
        self.ema_unet.shadow = blob["ema_unet"]
        self.ema_text.shadow = blob["ema_text"]
        torch.set_rng_state(blob["torch_rng"])
        self.started = time.time()
        log(self.work, f"resumed at stage {self.state['stage']}, vae step {self.state['vae_step']}, "
                       f"unet step {self.state['unet_step']}, {self.state['elapsed'] / 60:.1f} min spent")

    # -- stage 1: VAE --------------------------------------------------------------------
    def vae_budget(self):
        return self.budget() * self.a.vae_fraction

    def train_vae(self):
        a, vae = self.a, self.vae
        vae.train()
        t0, losses = time.time(), []
        while True:
            if self.elapsed() >= self.vae_budget():
                # Past the nominal budget: go on at the floor learning rate, checking the
                # reconstructions' score now and then, until they are good enough or the cap is hit.
                if self.elapsed() >= self.budget() * max(a.vae_max_fraction, a.vae_fraction):
                    log(self.work, "VAE: time cap reached")
                    break
                if time.time() - self.state.get("vae_checked", 0) > 120 or self.state.get("vae_checked", 0) == 0:
                    report = self.score_vae()
                    self.state["vae_checked"] = time.time()
                    if report["colour"] >= a.vae_target_colour and report["shape"] >= a.vae_target_shape:
                        break
                    log(self.work, "VAE below its targets: training on")
            n = self.state["vae_step"]
            progress = self.elapsed() / self.vae_budget()
            lr = a.vae_lr * min(1.0, (n + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
            for g in self.vae_opt.param_groups:
                g["lr"] = lr
            images, _, _ = sd.training_batch(SEED_VAE_DATA + n, a.vae_batch)
            x = to_tensor(images)
            dist = vae.encode(x).latent_dist
            y = vae.decode(dist.sample()).sample
            rec = (y - x).abs().mean() + ((y - x) ** 2).mean()
            kl = 0.5 * (dist.mean ** 2 + dist.var - 1 - dist.logvar).mean()
            loss = rec + a.kl_weight * kl
            self.vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            self.vae_opt.step()
            self.state["vae_step"] = n + 1
            losses.append((rec.item(), kl.item()))
            if (n + 1) % a.log_every == 0:
                r, k = np.mean(losses, 0)
                rate = len(losses) / (time.time() - t0)
                log(self.work, f"vae step {n + 1}: rec {r:.4f} kl {k:.2f} lr {lr:.2e} "
                               f"{rate:.2f} steps/s ({rate * a.vae_batch:.0f} img/s), {self.elapsed() / 60:.1f} min")
                t0, losses = time.time(), []
                self.adapt_threads()
            self.maybe_save()
        vae.eval()
        self.state["vae_seconds"] = self.elapsed()
        self.state["vae_score"] = self.score_vae()
        if self.state["vae_score"]["colour"] < a.vae_target_colour:
            log(self.work, "WARNING: the VAE's reconstructions miss the colour target; the UNet cannot do "
                           "better than they do (raise --vae-max-fraction)")
        self.state["stage"] = "cache"
        self.save()

    @torch.no_grad()
    def score_vae(self):
        """Held-out evaluation images through encode (mean) and decode, scored: the VAE's ceiling."""
        ev = sd.eval_set()
        truth = np.stack([sd.render(s, seed) for _, seed, _, s in ev])
        out = []
        for i in range(0, len(truth), 64):
            x = to_tensor(truth[i:i + 64])
            out.append(to_uint8(self.vae.decode(self.vae.encode(x).latent_dist.mean).sample))
        report = adherence.score(np.concatenate(out), [c for _, _, c, _ in ev])
        log(self.work, "VAE reconstructions of the held-out set:\n" + adherence.format_table([("vae recon", report)]))
        return report

    # -- stage 2: latent cache -------------------------------------------------------------
    def cache_path(self):
        return os.path.join(self.work, f"latents-{self.a.cache_size}.pt")

    @torch.no_grad()
    def build_cache(self):
        path = self.cache_path()
        if not os.path.exists(path):
            t0 = time.time()
            means, stds, keys = [], [], []
            chunk = 250
            for i in range(0, self.a.cache_size, chunk):
                n = min(chunk, self.a.cache_size - i)
                images, scenes, _ = sd.training_batch(SEED_CACHE + i, n)
                dist = self.vae.encode(to_tensor(images)).latent_dist
                means.append(dist.mean.half())
                stds.append(dist.std.half())
                keys += [s.key() for s in scenes]
                if (i // chunk) % 20 == 0:
                    log(self.work, f"latent cache {i + n}/{self.a.cache_size}")
            blob = {"mean": torch.cat(means), "std": torch.cat(stds), "keys": keys}
            torch.save(blob, path + ".tmp")
            os.replace(path + ".tmp", path)
            log(self.work, f"latent cache built in {time.time() - t0:.0f} s")
        blob = torch.load(path, weights_only=False)
        by_key = {s.key(): s for part in sd.split()["train"] for s in part}
        self.cache = {"mean": blob["mean"].float(), "std": blob["std"].float(),
                      "scenes": [by_key[k] for k in blob["keys"]]}
        if self.state["scaling_factor"] is None:
            self.state["scaling_factor"] = float(1.0 / self.cache["mean"].std())
            log(self.work, f"latent std {self.cache['mean'].std():.4f} -> scaling_factor "
                           f"{self.state['scaling_factor']:.5f}")
        if self.state["stage"] == "cache":
            self.state["stage"] = "unet"
            self.save()

    # -- stage 3: UNet + text encoder ------------------------------------------------------
    def tokens(self, captions):
        missing = [c for c in set(captions) if c not in self.token_cache]
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=common.MAX_LENGTH,
                                 truncation=True, return_tensors="pt").input_ids
            self.token_cache.update(zip(missing, ids))
        return torch.stack([self.token_cache[c] for c in captions])

    def train_unet(self):
        a = self.a
        self.unet.train()
        self.text.train()
        params = list(self.unet.parameters()) + list(self.text.parameters())
        start_elapsed = self.state.get("unet_start_elapsed") or self.elapsed()
        self.state["unet_start_elapsed"] = start_elapsed
        span = max(1.0, self.budget() - start_elapsed)
        n_cache = len(self.cache["scenes"])
        t0, losses = time.time(), []
        while self.elapsed() < self.budget():
            n = self.state["unet_step"]
            progress = (self.elapsed() - start_elapsed) / span
            lr = a.lr * min(1.0, (n + 1) / 300) * min(1.0, 0.1 + 0.9 * (1 - progress) / 0.3)
            for g in self.opt.param_groups:
                g["lr"] = lr
            rng = np.random.default_rng(SEED_UNET + n)
            idx = torch.from_numpy(rng.integers(0, n_cache, a.batch))
            captions = [sd.sample_caption(self.cache["scenes"][i], rng) if rng.random() >= a.uncond else ""
                        for i in idx.tolist()]
            g = torch.Generator().manual_seed(SEED_UNET + n)
            mean, std = self.cache["mean"][idx], self.cache["std"][idx]
            latents = (mean + std * torch.randn(mean.shape, generator=g)) * self.state["scaling_factor"]
            noise = torch.randn(latents.shape, generator=g)
            t = torch.randint(0, 1000, (a.batch,), generator=g)
            noisy = self.noise.add_noise(latents, noise, t)
            context = self.text(self.tokens(captions)).last_hidden_state
            pred = self.unet(noisy, t, encoder_hidden_states=context).sample
            weight = (self.snr[t].clamp(max=a.min_snr) / self.snr[t]) if a.min_snr > 0 else torch.ones(a.batch)
            loss = (((pred - noise) ** 2).mean(dim=(1, 2, 3)) * weight).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.opt.step()
            self.ema_unet.update(self.unet, n)
            self.ema_text.update(self.text, n)
            self.state["unet_step"] = n + 1
            losses.append(loss.item())
            if (n + 1) % a.log_every == 0:
                rate = len(losses) / (time.time() - t0)
                left = (self.budget() - self.elapsed()) / 60
                log(self.work, f"unet step {n + 1}: loss {np.mean(losses):.4f} lr {lr:.2e} {rate:.2f} steps/s "
                               f"({rate * a.batch:.0f} samples/s), {self.elapsed() / 60:.1f} min, {left:.1f} left")
                t0, losses = time.time(), []
                self.adapt_threads()
            self.maybe_save()
        self.state["stage"] = "done"
        self.save()

    # -- output ----------------------------------------------------------------------------
    def export(self, out):
        """The diffusers folder in f16 (EMA weights), with the classic tokenizer layout."""
        self.unet.load_state_dict(self.ema_unet.shadow)
        self.text.load_state_dict(self.ema_text.shadow)
        for m in (self.unet, self.text, self.vae):
            m.eval()
        self.vae.register_to_config(scaling_factor=round(self.state["scaling_factor"], 5))
        pipe = StableDiffusionPipeline(vae=self.vae, text_encoder=self.text, tokenizer=self.tokenizer,
                                       unet=self.unet, scheduler=DDIMScheduler(**SCHEDULER_CONFIG),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.to(torch.float16)
        tmp = out.rstrip("/") + ".tmp"
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        pipe.save_pretrained(tmp, safe_serialization=True)
        pipe.to(torch.float32)
        common.write_tokenizer_folder(os.path.join(tmp, "tokenizer"))
        info = {"generator": "tools/train_demo_model.py", "args": vars(self.a),
                "vae_steps": self.state["vae_step"], "unet_steps": self.state["unet_step"],
                "minutes": round(self.elapsed() / 60, 1), "scaling_factor": self.state["scaling_factor"],
                "vae_reconstruction_score": self.state["vae_score"],
                "parameters": {"text_encoder": count(self.text), "unet": count(self.unet), "vae": count(self.vae)},
                "versions": {"torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
                             "transformers": __import__("transformers").__version__}}
        with open(os.path.join(tmp, "training_info.json"), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
            f.write("\n")
        for d, _, fs in os.walk(tmp):
            for f in fs:
                os.chmod(os.path.join(d, f), 0o644)
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
        log(self.work, f"saved {out}")
        for sub in ("text_encoder", "unet", "vae"):
            log(self.work, f"  {sub:13s} {info['parameters'][sub]:>10,} parameters "
                           f"{common.folder_bytes(os.path.join(out, sub)):>12,} bytes")
        log(self.work, f"  {'all':13s} {sum(info['parameters'].values()):>10,} parameters "
                       f"{common.folder_bytes(out):>12,} bytes (tokenizer included)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=120, help="total training budget (all stages)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default=os.path.join(common.REPO, ".train", "demo"))
    p.add_argument("--out", default=os.path.join(common.REPO, "Models", "demo"))
    p.add_argument("--fresh", action="store_true", help="ignore WORK/checkpoint.pt and start over")
    p.add_argument("--vae-fraction", type=float, default=0.15)
    p.add_argument("--vae-max-fraction", type=float, default=0.3,
                   help="the VAE may train on past --vae-fraction, up to this, while it misses its targets")
    p.add_argument("--vae-target-colour", type=float, default=0.98,
                   help="colour score of the VAE's reconstructions of the held-out images that ends stage 1")
    p.add_argument("--vae-target-shape", type=float, default=0.9)
    p.add_argument("--vae-batch", type=int, default=32)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--cache-size", type=int, default=60000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--uncond", type=float, default=0.1, help="caption dropout for classifier-free guidance")
    p.add_argument("--min-snr", type=float, default=5.0, help="Min-SNR-gamma loss weighting; 0 turns it off")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--checkpoint-minutes", type=float, default=10)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    common.check_pinned_versions()
    torch.set_num_threads(a.threads)
    os.makedirs(a.work, exist_ok=True)
    if a.fresh and os.path.exists(os.path.join(a.work, "checkpoint.pt")):
        os.remove(os.path.join(a.work, "checkpoint.pt"))
    t = Trainer(a)
    log(a.work, f"parameters: text_encoder {count(t.text):,}, unet {count(t.unet):,}, vae {count(t.vae):,}; "
                f"{a.threads} threads, budget {a.minutes} min")
    if os.path.exists(t.path):
        t.load()
        if t.state["stage"] == "done" and t.elapsed() < t.budget():
            t.state["stage"] = "unet"   # a larger --minutes continues the UNet (the VAE stays as it is)
    if t.state["stage"] == "vae":
        t.train_vae()
    if t.state["stage"] in ("cache", "unet", "done"):
        t.build_cache()
    if t.state["stage"] == "unet":
        t.train_unet()
    t.export(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
