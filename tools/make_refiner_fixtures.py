#!/usr/bin/env python3
"""Generates the committed SDXL refiner fixtures: a tiny random refiner (diffusers'
StableDiffusionXLImg2ImgPipeline with requires_aesthetics_score=True and no first text encoder),
as a diffusers folder and as a single file with Stability's names, and diffusers' images of it on
its own (image-to-image) and after the tiny SDXL base (the base-to-refiner handoff).

Run by hand, never in CI, after tools/make_sdxl_fixtures.py, from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_refiner_fixtures.py

Deterministic (fixed seeds, one CPU thread). Nothing is downloaded. The tiny refiner (the real
stable-diffusion-xl-refiner-1.0 values in brackets):

  text_encoder_2   the tiny SDXL base's OpenCLIP bigG-like encoder (the real refiner ships the
                   base's bigG too): its files are symlinks to Tests/Fixtures/tiny-sdxl's
  text_encoder     none (model_index: [null, null]); the context is bigG's penultimate hidden
                   states alone, 8 wide [1280], and the pooled text_embeds are bigG's
  UNet             cross_attention_dim 8 [1280]; addition_time_embed_dim 4 [256] over FIVE time ids
                   (original size, crop top-left, aesthetic score), so
                   projection_class_embeddings_input_dim 8 + 5 * 4 = 28 [1280 + 5 * 256 = 2560];
                   levels (DownBlock2D, CrossAttnDownBlock2D, DownBlock2D) as the refiner's
                   (DownBlock2D, CrossAttn, CrossAttn, DownBlock2D): no attention in the last level
                   while the mid block has it; transformer_layers_per_block 2 [4], linear projections;
                   channels (8, 16, 16) [384, 768, 1536, 1536] to keep the files small
  VAE              the tiny SDXL base's (symlinked; force_upcast, scaling 0.13025)
  scheduler        EulerDiscreteScheduler as SDXL ships it (the refiner's is the same)
  pipeline         requires_aesthetics_score true, force_zeros_for_empty_prompt false (the refiner's
                   model_index.json): with no negative prompt the empty string is encoded

It writes, under Tests/Fixtures/:
  tiny-sdxl-refiner/                        the diffusers folder (f16)
  tiny-sdxl-refiner-single-f16.safetensors  the same weights with the original names:
                                            conditioner.embedders.0.model.* (bigG: fused in_proj,
                                            text_projection transposed), model.diffusion_model.* with
                                            label_emb.0, first_stage_model.*; asserted to load back
                                            through diffusers' from_single_file into the folder's state
  refiner-reference.safetensors (f32):
    img2img.image [1,64,64,3]      StableDiffusionXLImg2ImgPipeline(folder) from images/init64.png,
                                   PROMPT, strength 0.6, 8 steps, guidance 5, seed 7, np (aesthetic 6,
                                   negative 2.5: the defaults)
    img2img.aesthetic [1,64,64,3]  the same with aesthetic_score 8.5, negative_aesthetic_score 1.0
    single.image [1,64,64,3]       img2img.image's request through from_single_file(single f16,
                                   config=folder); asserted equal to img2img.image to float rounding
    handoff.latents [1,4,8,8]      StableDiffusionXLPipeline(tiny-sdxl)(PROMPT, 64x64, 8 steps,
                                   guidance 5, seed 7, denoising_end 0.8, output_type "latent")
    handoff.image [1,64,64,3]      the refiner from those latents: image=latents, denoising_start 0.8,
                                   the same prompt, steps, guidance and seed (a new generator)
    handoff.base_whole [1,64,64,3] the base alone, all 8 steps (asserted to differ from the handoff)
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
import make_sdxl_fixtures as sdxl  # noqa: E402
import make_sdxl_single_file_fixtures as sdxl_single  # noqa: E402
from make_fixtures import torch, diffusers, transformers, safetensors  # noqa: E402
from diffusers import (EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline,  # noqa: E402
                       UNet2DConditionModel)
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

FOLDER = os.path.join(base.FIXTURES, "tiny-sdxl-refiner")
SINGLE = os.path.join(base.FIXTURES, "tiny-sdxl-refiner-single-f16.safetensors")
REFERENCE = os.path.join(base.FIXTURES, "refiner-reference.safetensors")

TIME_DIM = 4
UNET_CONFIG = dict(base.UNET_CONFIG, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(8, 16, 16),
                   norm_num_groups=4, transformer_layers_per_block=2, attention_head_dim=(1, 2, 2), use_linear_projection=True,
                   cross_attention_dim=sdxl.TEXT_2_HIDDEN, addition_embed_type="text_time",
                   addition_time_embed_dim=TIME_DIM, projection_class_embeddings_input_dim=sdxl.TEXT_2_HIDDEN + 5 * TIME_DIM)
SEED_UNET = 2500
PIPELINE = dict(prompt=base.PROMPTS[0], num_inference_steps=8, guidance_scale=5.0, seed=7)
STRENGTH = 0.6
AESTHETIC = dict(aesthetic_score=8.5, negative_aesthetic_score=1.0)
SPLIT = 0.8


def generator():
    return torch.Generator().manual_seed(PIPELINE["seed"])


def args():
    return {k: v for k, v in PIPELINE.items() if k != "seed"}


def link_to_base(sub, name):
    """Replaces FOLDER/sub/name (asserted equal in values to tiny-sdxl's) by a symlink to it."""
    mine, theirs = os.path.join(FOLDER, sub, name), os.path.join(sdxl.FOLDER, sub, name)
    base.assert_same_state(sub, load_file(mine), load_file(theirs))
    os.remove(mine)
    os.symlink(os.path.join("..", "..", "tiny-sdxl", sub, name), mine)


def main():
    base.set_up()
    sdxl_base = StableDiffusionXLPipeline.from_pretrained(sdxl.FOLDER, dtype=torch.float32, local_files_only=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    base.randomise(unet, SEED_UNET)
    unet.eval()
    original_unet = base.float_state(unet)
    scheduler = EulerDiscreteScheduler.from_config(sdxl_base.scheduler.config)

    if os.path.isdir(FOLDER):
        shutil.rmtree(FOLDER)
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=sdxl_base.vae, text_encoder=None, text_encoder_2=sdxl_base.text_encoder_2, tokenizer=None,
        tokenizer_2=sdxl_base.tokenizer_2, unet=unet, scheduler=scheduler, requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False, add_watermarker=False)
    refiner.to(torch.float16)
    refiner.save_pretrained(FOLDER, safe_serialization=True)
    refiner.to(torch.float32)
    base.linked_tokenizer_folder(os.path.join(FOLDER, "tokenizer_2"), "!")
    link_to_base("text_encoder_2", "model.safetensors")
    link_to_base("vae", "diffusion_pytorch_model.safetensors")
    base.assert_same_state("unet", load_file(os.path.join(FOLDER, "unet", "diffusion_pytorch_model.safetensors")), original_unet)
    with open(os.path.join(FOLDER, "model_index.json")) as f:
        index = json.load(f)
    assert index["requires_aesthetics_score"] is True and index["force_zeros_for_empty_prompt"] is False, index
    assert index["text_encoder"] == [None, None] and index["tokenizer"] == [None, None], index

    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(FOLDER, dtype=torch.float32, local_files_only=True)
    assert pipe.text_encoder is None and pipe.config.requires_aesthetics_score
    init = Image.open(os.path.join(base.FIXTURES, "images", "init64.png")).convert("RGB")
    ref, checks = {}, {}

    def img2img(p, **extra):
        return torch.from_numpy(p(**args(), image=init, strength=STRENGTH, generator=generator(), output_type="np",
                                  **extra).images)
    ref["img2img.image"] = img2img(pipe)
    ref["img2img.aesthetic"] = img2img(pipe, **AESTHETIC)
    checks["aesthetic_vs_default_max_abs"] = (ref["img2img.image"] - ref["img2img.aesthetic"]).abs().max().item()
    assert checks["aesthetic_vs_default_max_abs"] > 0.01, checks  # the scores reach the image

    # The single file, with the refiner's original names (bigG as embedders.0).
    states = {"text_encoder_2": base.float_state(pipe.text_encoder_2), "unet": base.float_state(pipe.unet),
              "vae": base.float_state(pipe.vae)}
    checkpoint = {}
    bigg = sdxl_single.bigg_to_sgm(states["text_encoder_2"], pipe.text_encoder_2.config.num_hidden_layers)
    checkpoint.update({k.replace("conditioner.embedders.1.", "conditioner.embedders.0.", 1): v for k, v in bigg.items()})
    checkpoint.update(sdxl_single.unet_to_sgm(states["unet"], dict(pipe.unet.config)))
    checkpoint.update(base.vae_to_ldm(states["vae"], dict(pipe.vae.config)))
    assert not any(k.startswith("conditioner.embedders.1.") for k in checkpoint)
    cast = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in checkpoint.items()}
    base.save_safetensors(cast, SINGLE, metadata={"format": "pt", "generator": "tools/make_refiner_fixtures.py"})
    single = StableDiffusionXLImg2ImgPipeline.from_single_file(SINGLE, config=FOLDER, local_files_only=True,
                                                               torch_dtype=torch.float32)
    assert single.text_encoder is None and single.config.requires_aesthetics_score
    for n in states:
        want = {k: v.to(torch.float16).float() for k, v in states[n].items() if v.is_floating_point()}
        base.assert_same_state(f"single {n}", base.float_state(getattr(single, n)), want)
    ref["single.image"] = img2img(single)
    checks["single_vs_folder_max_abs"] = (ref["single.image"] - ref["img2img.image"]).abs().max().item()
    assert checks["single_vs_folder_max_abs"] < 1e-4, checks

    # Base to refiner: diffusers' ensemble of experts.
    latents = sdxl_base(**args(), height=64, width=64, denoising_end=SPLIT, output_type="latent", generator=generator()).images
    ref["handoff.latents"] = latents
    ref["handoff.image"] = torch.from_numpy(pipe(**args(), image=latents, denoising_start=SPLIT, generator=generator(),
                                                 output_type="np").images)
    ref["handoff.base_whole"] = torch.from_numpy(sdxl_base(**args(), height=64, width=64, generator=generator(),
                                                           output_type="np").images)
    checks["handoff_vs_base_whole_max_abs"] = (ref["handoff.image"] - ref["handoff.base_whole"]).abs().max().item()
    assert checks["handoff_vs_base_whole_max_abs"] > 0.01, checks  # the refiner's steps show
    for k, v in ref.items():
        assert torch.isfinite(v).all(), k
        if k.endswith("image") or k.endswith("aesthetic"):
            assert v.std() > 0.02, k

    ref = {k: v.to(torch.float32).clone().contiguous() for k, v in ref.items()}
    base.save_safetensors(ref, REFERENCE, metadata={
        "format": "pt", "generator": "tools/make_refiner_fixtures.py",
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__, "safetensors": safetensors.__version__},
                               sort_keys=True),
        "pipeline": json.dumps(PIPELINE, sort_keys=True),
        "strength": json.dumps(STRENGTH),
        "aesthetic": json.dumps(AESTHETIC, sort_keys=True),
        "split": json.dumps(SPLIT),
        "checks": json.dumps(checks, sort_keys=True),
        "param_counts": json.dumps({"text_encoder_2": base.count(pipe.text_encoder_2), "unet": base.count(pipe.unet),
                                    "vae": base.count(pipe.vae)}, sort_keys=True)})
    for d, _, fs in os.walk(FOLDER):
        for f in fs:
            p = os.path.join(d, f)
            if not os.path.islink(p):
                os.chmod(p, 0o644)
    for p in (SINGLE, REFERENCE):
        os.chmod(p, 0o644)
    base.print_fixtures((FOLDER, SINGLE, REFERENCE), ref)
    print(json.dumps(checks, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
