#!/usr/bin/env python3
"""Generates the committed Stable Diffusion XL fixtures that Lumen's SDXL tests compare against.

Run by hand, never in CI, after tools/make_fixtures.py (it shares that script's vocabulary and
random initialisation), from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_sdxl_fixtures.py

Deterministic (fixed seeds, one CPU thread). Nothing is downloaded. A tiny model with what makes
SDXL (the real values in brackets):

  text_encoder     CLIP ViT-L-like CLIPTextModel, quick_gelu, hidden 16 [768]
  text_encoder_2   OpenCLIP bigG-like CLIPTextModelWithProjection, gelu, hidden 8 [1280], with a
                   text_projection to 8 [1280]; tokenizer_2 pads with "!"
  context          both encoders' penultimate hidden states (hidden_states[-2]) side by side:
                   24 wide [2048]; the pooled, projected output of text_encoder_2 (text_embeds)
                   goes to the UNet's added conditioning
  UNet             addition_embed_type "text_time": time ids (original size, crop, target size)
                   through sinusoidal embeddings of addition_time_embed_dim 4 [256], concatenated
                   after text_embeds, through add_embedding, added to the time embedding; first
                   level without attention, transformer_layers_per_block (1, 2) [1, 2, 10], linear
                   projections
  VAE              scaling_factor 0.13025
  scheduler        EulerDiscreteScheduler as SDXL base ships it
  pipeline         force_zeros_for_empty_prompt: with no negative prompt, the unconditional
                   context and text_embeds are zeros

It writes, under Tests/Fixtures/: tiny-sdxl/ (diffusers folder, f16; the tokenizers' vocab.json and
merges.txt are symlinks to tiny-sd's) and tiny-sdxl-reference.safetensors (f32):
  text.input_ids, text.input_ids_2 [2,77] int64   PROMPTS through tokenizer and tokenizer_2
  text.hidden_1 [2,77,16], text.hidden_2 [2,77,8] hidden_states[-2] of each encoder
  text.text_embeds [2,8]                           text_encoder_2's text_embeds
  unet.sample [2,4,8,8], unet.timestep [2], unet.encoder_hidden_states [2,77,24] (the two hidden
  states concatenated), unet.text_embeds [2,8], unet.time_ids [2,6], unet.out [2,4,8,8]
  pipeline.image [1,64,64,3]                       StableDiffusionXLPipeline(PROMPTS[0], no negative
                                                   prompt, 64x64, 4 steps, guidance 5, seed 7, np)
  pipeline.image_negative [1,64,64,3]              the same with negative_prompt "blurry"
  pipeline.image_empty_negative [1,64,64,3]        the same with negative_prompt "" (encoded, not zeros)
  pipeline.image_clip_skip_1 [1,64,64,3]           the first request with clip_skip 1 (hidden_states[-3] of both)
  pipeline.img2img [1,64,64,3]                     StableDiffusionXLImg2ImgPipeline (no aesthetic score) from
                                                   Tests/Fixtures/images/init64.png, strength 0.6, the same
                                                   prompt, steps, guidance and seed
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers, transformers  # noqa: E402
from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline,  # noqa: E402
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from PIL import Image  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer  # noqa: E402

FOLDER = os.path.join(base.FIXTURES, "tiny-sdxl")
REFERENCE = os.path.join(base.FIXTURES, "tiny-sdxl-reference.safetensors")

TEXT_CONFIG = base.TEXT_CONFIG
TEXT_2_HIDDEN = 8
TEXT_2_CONFIG = dict(base.TEXT_CONFIG, hidden_size=TEXT_2_HIDDEN, intermediate_size=19, num_attention_heads=1,
                     hidden_act="gelu", projection_dim=TEXT_2_HIDDEN)
CONTEXT = base.TEXT_HIDDEN + TEXT_2_HIDDEN
TIME_DIM = 4
UNET_CONFIG = dict(base.UNET_CONFIG, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2),
                   attention_head_dim=(2, 2), use_linear_projection=True, cross_attention_dim=CONTEXT,
                   addition_embed_type="text_time", addition_time_embed_dim=TIME_DIM,
                   projection_class_embeddings_input_dim=TEXT_2_HIDDEN + 6 * TIME_DIM)
VAE_CONFIG = dict(base.VAE_CONFIG, scaling_factor=0.13025)
# stabilityai/stable-diffusion-xl-base-1.0's scheduler_config.json
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                        trained_betas=None, prediction_type="epsilon", interpolation_type="linear",
                        use_karras_sigmas=False, timestep_spacing="leading", steps_offset=1, sample_max_value=1.0,
                        set_alpha_to_one=False, skip_prk_steps=True, clip_sample=False)
SEED_WEIGHTS = {"text_encoder": 1300, "text_encoder_2": 1400, "unet": 2300, "vae": 3300}
SEED_INPUTS = 4300
PIPELINE = dict(prompt=base.PROMPTS[0], height=64, width=64, num_inference_steps=4, guidance_scale=5.0, seed=7)
IMG2IMG_STRENGTH = 0.6


def main():
    base.set_up()
    vocab, merges = base.build_clip_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=base.MAX_LENGTH)
    tokenizer_2 = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=base.MAX_LENGTH, pad_token="!")

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    text_encoder.config.architectures = ["CLIPTextModel"]
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**TEXT_2_CONFIG))
    text_encoder_2.config.architectures = ["CLIPTextModelWithProjection"]
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    for name, model in (("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2), ("unet", unet), ("vae", vae)):
        base.randomise(model, SEED_WEIGHTS[name])
        model.eval()
    originals = {n: base.float_state(m) for n, m in (("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2),
                                                      ("unet", unet), ("vae", vae))}
    scheduler = EulerDiscreteScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items()
                                          if k not in ("skip_prk_steps", "set_alpha_to_one", "clip_sample", "sample_max_value")})

    if os.path.isdir(FOLDER):
        shutil.rmtree(FOLDER)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler, add_watermarker=False)
    pipe.to(torch.float16)
    pipe.save_pretrained(FOLDER, safe_serialization=True)
    base.linked_tokenizer_folder(os.path.join(FOLDER, "tokenizer"), "<|endoftext|>")
    base.linked_tokenizer_folder(os.path.join(FOLDER, "tokenizer_2"), "!")
    for sub, weights in (("text_encoder", "model.safetensors"), ("text_encoder_2", "model.safetensors"),
                         ("unet", "diffusion_pytorch_model.safetensors"), ("vae", "diffusion_pytorch_model.safetensors")):
        base.assert_same_state(sub, load_file(os.path.join(FOLDER, sub, weights)), originals[sub])

    pipe = StableDiffusionXLPipeline.from_pretrained(FOLDER, dtype=torch.float32, local_files_only=True)
    assert pipe.config.force_zeros_for_empty_prompt
    ids = base.tokenize(pipe.tokenizer)
    ids_2 = base.tokenize(pipe.tokenizer_2)
    assert ids_2[1, 2:].eq(0).all() and ids[1, 2:].eq(49407).all()
    g = torch.Generator().manual_seed(SEED_INPUTS)
    ref = {}
    with torch.no_grad():
        out_1 = pipe.text_encoder(ids, output_hidden_states=True)
        out_2 = pipe.text_encoder_2(ids_2, output_hidden_states=True)
        ref["text.input_ids"], ref["text.input_ids_2"] = ids, ids_2
        ref["text.hidden_1"] = out_1.hidden_states[-2]
        ref["text.hidden_2"] = out_2.hidden_states[-2]
        ref["text.text_embeds"] = out_2.text_embeds
        ref["unet.sample"] = torch.randn((2, 4, 8, 8), generator=g)
        ref["unet.timestep"] = torch.tensor([981.0, 1.0])
        ref["unet.encoder_hidden_states"] = torch.cat([ref["text.hidden_1"], ref["text.hidden_2"]], dim=-1)
        ref["unet.text_embeds"] = ref["text.text_embeds"]
        ref["unet.time_ids"] = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [96.0, 80.0, 8.0, 16.0, 64.0, 48.0]])
        ref["unet.out"] = pipe.unet(ref["unet.sample"], ref["unet.timestep"],
                                    encoder_hidden_states=ref["unet.encoder_hidden_states"],
                                    added_cond_kwargs={"text_embeds": ref["unet.text_embeds"],
                                                       "time_ids": ref["unet.time_ids"]}).sample

    def draw(**extra):
        args = {k: v for k, v in PIPELINE.items() if k != "seed"}
        return torch.from_numpy(pipe(**args, **extra, generator=torch.Generator().manual_seed(PIPELINE["seed"]),
                                     output_type="np").images)
    ref["pipeline.image"] = draw()
    ref["pipeline.image_negative"] = draw(negative_prompt="blurry")
    ref["pipeline.image_empty_negative"] = draw(negative_prompt="")
    ref["pipeline.image_clip_skip_1"] = draw(clip_skip=1)
    assert (ref["pipeline.image"] - ref["pipeline.image_clip_skip_1"]).abs().max() > 0.01
    assert (ref["pipeline.image"] - ref["pipeline.image_negative"]).abs().max() > 0.05
    # Image-to-image from Tests/Fixtures/images/init64.png (the base model's img2img: no aesthetic score).
    i2i = StableDiffusionXLImg2ImgPipeline(**pipe.components, requires_aesthetics_score=False)
    init = Image.open(os.path.join(base.FIXTURES, "images", "init64.png")).convert("RGB")
    args = {k: v for k, v in PIPELINE.items() if k not in ("seed", "height", "width")}
    ref["pipeline.img2img"] = torch.from_numpy(i2i(**args, image=init, strength=IMG2IMG_STRENGTH,
                                                   generator=torch.Generator().manual_seed(PIPELINE["seed"]),
                                                   output_type="np").images)
    assert (ref["pipeline.image"] - ref["pipeline.image_empty_negative"]).abs().max() > 0.01  # zeros != encoded ""
    assert ref["pipeline.image"].std() > 0.02

    ref = {k: (v.to(torch.int64) if k.startswith("text.input_ids") else v.to(torch.float32)).clone().contiguous()
           for k, v in ref.items()}
    for k, v in ref.items():
        assert torch.isfinite(v.float()).all(), k
    base.save_safetensors(ref, REFERENCE, metadata={
        "format": "pt", "generator": "tools/make_sdxl_fixtures.py",
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__}, sort_keys=True),
        "pipeline": json.dumps(PIPELINE, sort_keys=True),
        "notes": ("pipeline.image: no negative prompt (force_zeros_for_empty_prompt: zero unconditional context and "
                  "text_embeds); pipeline.image_negative: negative_prompt 'blurry'; pipeline.image_empty_negative: "
                  "negative_prompt '' (encoded, not zeros). Time ids (H, W, 0, 0, H, W). pipeline.img2img: "
                  "StableDiffusionXLImg2ImgPipeline, init images/init64.png, strength 0.6."),
        "img2img_strength": json.dumps(IMG2IMG_STRENGTH),
        "param_counts": json.dumps({n: base.count(getattr(pipe, n)) for n in ("text_encoder", "text_encoder_2", "unet", "vae")},
                                   sort_keys=True)})
    for d, _, fs in os.walk(base.FIXTURES):
        for f in fs:
            p = os.path.join(d, f)
            if not os.path.islink(p):
                os.chmod(p, 0o644)
    base.print_fixtures((FOLDER, REFERENCE), ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
