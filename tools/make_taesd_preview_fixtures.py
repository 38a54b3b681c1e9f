"""Fixtures for TAESD previews, the TAESD final decode and the TAESD encoder (issue #20). Run by hand
with the pinned venv (never in CI), after make_fixtures.py and make_taesd_fixtures.py:
    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_taesd_preview_fixtures.py

The oracle is diffusers: StableDiffusionPipeline on the tiny SD model (Tests/Fixtures/tiny-sd, f32)
with a callback_on_step_end that decodes the step's latents (`callback_kwargs["latents"]`, what the
callback hands out after the scheduler's step) with the tiny AutoencoderTiny of Tests/Fixtures/taesd/tiny,
every PREVIEW_EVERY steps; the final latents decoded by the same AutoencoderTiny, checked equal to the
pipeline run with `vae=AutoencoderTiny` (diffusers' own TAESD final decode); and the encoder.

Writes Tests/Fixtures/taesd-preview/:
  reference.safetensors     step-K.image [1, 64, 64, 3] uint8 values (as floats) for K = 2, 4, 6;
                            step-K.latents [1, 4, 8, 8]; final.latents; final.image (TAESD decode);
                            encoder.image [1, 3, 64, 64] (init64.png in [-1, 1]) and encoder.latents
                            (AutoencoderTiny.encode(image).latents [1, 4, 8, 8]); the request in
                            __metadata__['pipeline'] (DiffusersRequest's fields), 'every' and
                            'scheduler' (Lumen's name of EulerAncestralDiscreteScheduler)
  tiny_encoder.safetensors  the tiny model's encoder in the original taesd_encoder layout
                            (encoder.layers.N is N)
  wide/                     an AutoencoderTiny with 16 latent channels (as TAESD3 / TAEF1): refused
                            by a 4-channel model
  scale4/                   an AutoencoderTiny with 2 upsamplings (4 pixels a latent): refused by a
                            model whose VAE has 8
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers, transformers  # noqa: E402
from diffusers import AutoencoderTiny, EulerAncestralDiscreteScheduler, StableDiffusionPipeline  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
import numpy as np  # noqa: E402

OUT = os.path.join(base.FIXTURES, "taesd-preview")
MODEL = os.path.join(base.FIXTURES, "tiny-sd")
TAESD = os.path.join(base.FIXTURES, "taesd", "tiny")
# Euler ancestral draws noise every step: a preview must not disturb the random stream.
PIPELINE = dict(prompt="a red circle on a blue background", negative_prompt="blurry", num_inference_steps=6,
                guidance_scale=7.5, width=64, height=64, seed=7)
EVERY = 2


def to_uint8(sample):
    """diffusers' VaeImageProcessor.postprocess to uint8: (x / 2 + 0.5).clamp(0, 1) · 255, rounded."""
    image = (sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    return (image * 255).round()


def main():
    base.set_up()
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    taesd = AutoencoderTiny.from_pretrained(TAESD, local_files_only=True).eval()
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    args = {k: v for k, v in PIPELINE.items() if k != "seed"}
    ref = {}

    def preview(p, i, t, kwargs):
        if (i + 1) % EVERY == 0:
            latents = kwargs["latents"]
            with torch.no_grad():
                ref[f"step-{i + 1}.image"] = to_uint8(taesd.decode(latents).sample)
            ref[f"step-{i + 1}.latents"] = latents.clone()
        return {}

    with torch.no_grad():
        latents = pipe(**args, generator=torch.Generator("cpu").manual_seed(PIPELINE["seed"]), output_type="latent",
                       callback_on_step_end=preview, callback_on_step_end_tensor_inputs=["latents"]).images
        ref["final.latents"] = latents
        ref["final.image"] = to_uint8(taesd.decode(latents).sample)
        # diffusers' own final decode through AutoencoderTiny (scaling_factor 1: the latents as they are).
        fast = StableDiffusionPipeline(**{**pipe.components, "vae": taesd})
        fast.set_progress_bar_config(disable=True)
        image = fast(**args, generator=torch.Generator("cpu").manual_seed(PIPELINE["seed"]), output_type="np").images
        assert (torch.from_numpy(image * 255).round() - ref["final.image"]).abs().max() <= 1, "the pipeline's TAESD decode"
        assert (ref["step-6.latents"] - latents).abs().max() == 0
    assert sorted(k for k in ref if k.endswith(".image")) == ["final.image", "step-2.image", "step-4.image", "step-6.image"]
    assert (ref["step-2.image"] - ref["step-6.image"]).abs().max() > 10, "the previews must differ between steps"

    # The encoder: init64.png in [-1, 1], as diffusers' image processor normalises it.
    rgb = np.asarray(Image.open(os.path.join(base.FIXTURES, "images", "init64.png")).convert("RGB"), dtype=np.float32) / 255
    x = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0) * 2 - 1
    with torch.no_grad():
        ref["encoder.image"] = x
        ref["encoder.latents"] = taesd.encode(x).latents
    assert ref["encoder.latents"].std() > 0.05
    state = taesd.state_dict()
    save_file({k[len("encoder.layers."):]: v.contiguous() for k, v in state.items() if k.startswith("encoder.layers.")},
              os.path.join(OUT, "tiny_encoder.safetensors"))

    # TAESDs for other latent spaces, refused by name.
    for name, kwargs, seed in (("wide", dict(latent_channels=16, num_decoder_blocks=(1, 1, 1, 1)), 2021),
                               ("scale4", dict(latent_channels=4, num_decoder_blocks=(1, 1, 1),
                                               decoder_block_out_channels=(8, 8, 8),
                                               num_encoder_blocks=(1, 1, 1), encoder_block_out_channels=(8, 8, 8)), 2022)):
        kwargs = {"encoder_block_out_channels": (8, 8, 8, 8), "decoder_block_out_channels": (8, 8, 8, 8),
                  "num_encoder_blocks": (1, 1, 1, 1), **kwargs}
        other = AutoencoderTiny(**kwargs)
        base.randomise(other, seed)
        other.save_pretrained(os.path.join(OUT, name), safe_serialization=True)

    ref = {k: v.to(torch.float32).contiguous() for k, v in ref.items()}
    for k, v in ref.items():
        assert torch.isfinite(v).all(), k
    path = os.path.join(OUT, "reference.safetensors")
    base.save_safetensors(ref, path, metadata={
        "format": "pt", "generator": "tools/make_taesd_preview_fixtures.py",
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__}, sort_keys=True),
        "pipeline": json.dumps(PIPELINE, sort_keys=True), "every": json.dumps(EVERY), "scheduler": "euler-a"})
    base.print_fixtures([path], ref)
    for root, _, files in os.walk(OUT):
        for f in sorted(files):
            print(os.path.join(root, f), os.path.getsize(os.path.join(root, f)))


if __name__ == "__main__":
    main()
