#!/usr/bin/env python3
"""Generates the fixtures of Lumen's per-family defaults for single-file checkpoints read without
`--config`: what diffusers' `StableDiffusionPipeline.from_single_file(path)` takes from the
diffusers repository that `DIFFUSERS_DEFAULT_PIPELINE_PATHS` maps the detected family to
("v1" -> stable-diffusion-v1-5/stable-diffusion-v1-5, "v2" -> stabilityai/stable-diffusion-2-1).

Run by hand, never in CI, from the repository root (it imports tools/make_fixtures.py for the
vocabulary, random initialisation, name converters and file writer, and make_sd2_fixtures.py for the
OpenCLIP converter, but reads no file they write):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_single_file_fixtures.py

Deterministic (fixed seeds, one CPU thread): a re-run rewrites the same bytes. Nothing is
downloaded. The hub download is stood in for by a diffusers folder in a temporary directory (never
committed): a tiny model whose configs have, of every field that tensor shapes cannot show, the
value the real repository has (scheduler_config.json verbatim; UNet attention heads, upcast,
sample_size and norm groups; VAE sample_size, scaling factor and norm groups; text activation;
tokenizer padding and length), so that Lumen's inference rules give exactly that network.

  sd1  "tiny-sd1-defaults": UNet [32, 64], 1 layer a block, CrossAttnDown/Down, Up/CrossAttnUp,
       attention_head_dim 8 (SD 1.5's head COUNT), 32 norm groups, sample_size 64; VAE 4 levels of 32
       channels (scale factor 8, as SD's), 32 norm groups, sample_size 512, scaling 0.18215; CLIP text
       encoder 8 wide, 1 head, 2 layers, quick_gelu, full vocabulary, 77 positions; tokenizer padded
       with <|endoftext|>; scheduler: SD 1.5's PNDMScheduler config.
  sd2  "tiny-sd2-defaults": UNet [32, 64], attention_head_dim [1, 1] (64-wide heads, at least one),
       linear projections, upcast attention, sample_size 96; VAE as sd1 but sample_size 768; the
       OpenCLIP text tower of tools/make_sd2_fixtures.py (8 wide, 1 head, gelu, 24 resblocks in the
       file of which diffusers drops resblocks.23, so 23 layers); tokenizer padded with "!"; scheduler:
       SD 2.1's DDIMScheduler config (v_prediction).

It writes, under Tests/Fixtures/:

  tiny-sd1-defaults.safetensors   the sd1 model as one f16 checkpoint with the original SD 1.x names
  tiny-sd2-defaults.safetensors   the sd2 model as one f16 checkpoint with the original SD 2.x names
  single-file-defaults-reference.safetensors
    sd1.input_ids [1,77] int64            the prompt as the pipeline tokenizes it (padded with 49407)
    sd1.image [1,64,64,3] f32             from_single_file(tiny-sd1-defaults, config=<the folder>), the
                                          pipeline's own scheduler (PNDM), 4 steps, guidance 7.5, 64x64,
                                          negative_prompt None, output_type "np" (values in [0, 1])
    sd1.image_dpmpp_2m_karras [1,64,64,3] the same with DPMSolverMultistepScheduler.from_config(
                                          pipe.scheduler.config, use_karras_sigmas=True), 3 steps
    sd2.input_ids [1,77] int64            padded with "!" (0)
    sd2.image [1,64,64,3] f32             as sd1.image with the sd2 model (DDIM, v-prediction)
  and, in its __metadata__, per family (<f> = sd1, sd2): <f>.request and
  sd1.request_dpmpp_2m_karras (JSON: prompt, negative_prompt, seed, steps, guidance_scale, height,
  width, scheduler "default" / "dpmpp-2m-karras"), <f>.scheduler_config (JSON: dict(pipe.scheduler
  .config) of the loaded pipeline, what diffusers used) and sd1.scheduler_config_dpmpp_2m_karras
  (non-finite floats as the strings "-Infinity" etc.),
  <f>.repository_scheduler_config (the repository's scheduler_config.json as the folder holds it),
  <f>.default_size (pipe.unet.config.sample_size * pipe.vae_scale_factor), <f>.model_type and
  <f>.repository (diffusers' detection and mapping of the REAL family), <f>.tiny_model_type (what
  diffusers detects for the tiny file), <f>.checkpoint, <f>.unet_config, <f>.vae_config,
  <f>.text_encoder_config, <f>.tokenizer (JSON: pad_token, model_max_length); versions, notes.

diffusers detects "v2" only by the width of input_blocks.2.1.transformer_blocks.0.attn2.to_k (1024,
the ViT-H text width; the key exists only with two layers a block); no tiny model has it, so both
tiny files are detected as "v1". The detection and mapping are therefore asserted on the real
families' key shapes, and the folder given as `config=` supplies what the hub would.

Asserted: the tiny files load with from_single_file(config=folder) into state dicts equal to the
originals, with the folder's scheduler class and config; diffusers' detection maps each family to
the repository the folder stands for; images are not flat; and the family-default scheduler draws
another image than the scheduler class's own defaults (so the fixture can tell them apart).
"""

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402  (sets HF_HUB_OFFLINE and the verbosity first)
import make_sd2_fixtures as sd2  # noqa: E402
from make_fixtures import torch, diffusers, transformers, safetensors  # noqa: E402
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler,  # noqa: E402
                       StableDiffusionPipeline)
from diffusers.loaders.single_file_utils import (CHECKPOINT_KEY_NAMES,  # noqa: E402
                                                 DIFFUSERS_DEFAULT_PIPELINE_PATHS,
                                                 infer_diffusers_model_type)
from safetensors.torch import load_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

FIXTURES = base.FIXTURES
REFERENCE = os.path.join(FIXTURES, "single-file-defaults-reference.safetensors")

# The repositories' scheduler/scheduler_config.json, field for field.
SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
                  "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False}
SD21_SCHEDULER = {"_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "clip_sample": False, "num_train_timesteps": 1000,
                  "prediction_type": "v_prediction", "set_alpha_to_one": False, "skip_prk_steps": True,
                  "steps_offset": 1, "trained_betas": None}

# The VAE: four levels as SD's (scale factor 8, so default size = unet sample_size * 8), 32 channels
# each so that SD's 32 norm groups divide them.
VAE_CONFIG = dict(base.VAE_CONFIG, block_out_channels=(32, 32, 32, 32), norm_num_groups=32)

SD1_TEXT_HIDDEN = 8
FAMILIES = {
    "sd1": dict(
        name="tiny-sd1-defaults", model_type="v1", pad="<|endoftext|>", pad_id=49407,
        scheduler=SD15_SCHEDULER, class_default=PNDMScheduler,
        text=dict(base.TEXT_CONFIG, hidden_size=SD1_TEXT_HIDDEN, intermediate_size=16, num_hidden_layers=2,
                  num_attention_heads=1, hidden_act="quick_gelu", projection_dim=SD1_TEXT_HIDDEN),
        unet=dict(base.UNET_CONFIG, sample_size=64, block_out_channels=(32, 64), norm_num_groups=32,
                  attention_head_dim=8, cross_attention_dim=SD1_TEXT_HIDDEN, use_linear_projection=False,
                  upcast_attention=False),
        vae=dict(VAE_CONFIG, sample_size=512),
        seeds={"text_encoder": 5000, "unet": 5001, "vae": 5002},
        seed=42, max_bytes=int(3.5 * 2 ** 20)),
    "sd2": dict(
        name="tiny-sd2-defaults", model_type="v2", pad="!", pad_id=0,
        scheduler=SD21_SCHEDULER, class_default=DDIMScheduler,
        # make_sd2_fixtures' OpenCLIP tower (8 wide, 1 head, gelu, 23 + 1 unused resblocks); its
        # converter writes a text_projection of that width, which diffusers reads as the width.
        text=sd2.TEXT_CONFIG,
        unet=dict(base.UNET_CONFIG, sample_size=96, block_out_channels=(32, 64), norm_num_groups=32,
                  attention_head_dim=(1, 1), cross_attention_dim=sd2.TEXT_HIDDEN, use_linear_projection=True,
                  upcast_attention=True),
        vae=dict(VAE_CONFIG, sample_size=768),
        seeds={"text_encoder": 5100, "unet": 5101, "vae": 5102, "unused": 5103},
        seed=42, max_bytes=int(3.5 * 2 ** 20)),
}
PROMPT = base.PROMPTS[0]
DEFAULT = dict(steps=4, guidance_scale=7.5, height=64, width=64)
DPMPP = dict(steps=3, guidance_scale=7.5, height=64, width=64)
# The keys diffusers detects SD 1.x / 2.x by, with the shapes the real files have (SD 1.5's and
# SD 2.1's): detection looks at a cross-attention key's WIDTH (1024 for 2.x), which no tiny model has.
REAL_SHAPES = {"v1": {CHECKPOINT_KEY_NAMES["v1"]: (320, 640, 1, 1),
                      CHECKPOINT_KEY_NAMES["v2"]: (320, 768)},
               "v2": {CHECKPOINT_KEY_NAMES["v1"]: (320, 640, 1, 1),
                      CHECKPOINT_KEY_NAMES["v2"]: (320, 1024)}}


def json_config(config):
    """A scheduler config as sorted, standard JSON: `_use_default_values` (a list made from a set)
    sorted; a non-finite float (DPMSolverMultistep's lambda_min_clipped is -inf) written as the
    string "-Infinity" / "Infinity" / "NaN", which plain JSON parsers accept."""
    d = dict(config)
    if "_use_default_values" in d:
        d["_use_default_values"] = sorted(d["_use_default_values"])
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            d[k] = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return json.dumps(d, sort_keys=True, allow_nan=False)


def unused_openclip_block(text_config, seed):
    """The checkpoint's 24th OpenCLIP block, which SD 2.x never runs: a layer of the same shape."""
    spare = CLIPTextModel(CLIPTextConfig(**dict(text_config, num_hidden_layers=1)))
    base.randomise(spare, seed)
    return {k.removeprefix("text_model.").removeprefix("encoder.layers.0."): v.detach().clone()
            for k, v in spare.state_dict().items() if "encoder.layers.0." in k}


def tokenize(tokenizer):
    """As StableDiffusionPipeline.encode_prompt tokenizes a prompt."""
    return tokenizer(PROMPT, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(torch.int64)


def draw(pipe, request, seed):
    out = pipe(PROMPT, negative_prompt=None, height=request["height"], width=request["width"],
               num_inference_steps=request["steps"], guidance_scale=request["guidance_scale"],
               generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images
    return torch.from_numpy(out).to(torch.float32).contiguous()


def make_family(key, spec, vocab, merges, tmp):
    folder = os.path.join(tmp, spec["name"])
    single_file = os.path.join(FIXTURES, spec["name"] + ".safetensors")
    is_sd2 = key == "sd2"

    # 1. The networks and the folder that stands for the repository ---------------------------
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=base.MAX_LENGTH, pad_token=spec["pad"])
    text_encoder, unet, vae = base.build_networks(spec["text"], spec["unet"], spec["vae"], spec["seeds"])
    cls = {"PNDMScheduler": PNDMScheduler, "DDIMScheduler": DDIMScheduler}[spec["scheduler"]["_class_name"]]
    scheduler = cls.from_config({k: v for k, v in spec["scheduler"].items() if k != "_class_name"})
    originals = {"text_encoder": base.float_state(text_encoder), "unet": base.float_state(unet),
                 "vae": base.float_state(vae)}
    base.save_sd_folder(folder, vae, text_encoder, tokenizer, unet, scheduler)
    base.write_tokenizer_folder(os.path.join(folder, "tokenizer"), vocab, merges)
    base.write_special_tokens(os.path.join(folder, "tokenizer"), spec["pad"])
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(spec["scheduler"], f, indent=2)  # the repository's file, verbatim
        f.write("\n")

    # 2. The single file with the original names -------------------------------------------------
    single = {}
    single.update(base.unet_to_ldm(originals["unet"], spec["unet"]))
    single.update(base.vae_to_ldm(originals["vae"], spec["vae"]))
    if is_sd2:
        assert spec["text"] is sd2.TEXT_CONFIG  # text_to_openclip reads that module's sizes
        single.update(sd2.text_to_openclip(originals["text_encoder"],
                                           unused_openclip_block(spec["text"], spec["seeds"]["unused"])))
    else:
        single.update(base.text_to_ldm(originals["text_encoder"]))
    single = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in sorted(single.items())}
    base.save_safetensors(single, single_file, metadata={
        "format": "pt", "lumen_fixture": f"tiny random-weight {key.upper()} with {spec['model_type']}'s default "
                                         "configs; tools/make_single_file_fixtures.py"})
    os.chmod(single_file, 0o644)
    assert os.path.getsize(single_file) <= spec["max_bytes"], (single_file, os.path.getsize(single_file))

    # 3. diffusers' detection: the family, and the repository it maps to -------------------------
    tiny_type = infer_diffusers_model_type(load_file(single_file))
    real = {k: torch.empty(s, device="meta") for k, s in REAL_SHAPES[spec["model_type"]].items()}
    real_type = infer_diffusers_model_type(real)
    assert real_type == spec["model_type"], (key, real_type)
    repository = DIFFUSERS_DEFAULT_PIPELINE_PATHS[real_type]["pretrained_model_name_or_path"]
    assert repository == {"v1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                          "v2": "stabilityai/stable-diffusion-2-1"}[real_type], repository
    # A tiny SD 1.x file is detected as v1 (the fallback). A tiny SD 2.x file cannot be detected as
    # v2: diffusers requires input_blocks.2.1...attn2.to_k 1024 wide (and two layers a block).
    assert tiny_type == "v1", (key, tiny_type)

    # 4. from_single_file with the folder as its config ------------------------------------------
    pipe = StableDiffusionPipeline.from_single_file(single_file, config=folder, local_files_only=True,
                                                    torch_dtype=torch.float32, safety_checker=None,
                                                    requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    for name in ("unet", "vae", "text_encoder"):
        model = getattr(pipe, name)
        assert not model.training, name
        base.assert_same_state(f"{key} from_single_file {name}", model.state_dict(), originals[name])
    assert type(pipe.scheduler).__name__ == spec["scheduler"]["_class_name"], type(pipe.scheduler)
    for k, v in spec["scheduler"].items():
        if k.startswith("_") or (is_sd2 and k == "skip_prk_steps"):  # not a DDIMScheduler argument
            continue
        assert pipe.scheduler.config[k] == v, (key, k, pipe.scheduler.config[k], v)
    if is_sd2:
        assert pipe.scheduler.config.prediction_type == "v_prediction"
    else:
        assert pipe.scheduler.config.prediction_type == "epsilon"
    for name, want in (("sample_size", spec["unet"]["sample_size"]), ("norm_num_groups", 32),
                       ("upcast_attention", is_sd2), ("use_linear_projection", is_sd2)):
        assert pipe.unet.config[name] == want, (key, name, pipe.unet.config[name])
    want_heads = list(spec["unet"]["attention_head_dim"]) if is_sd2 else 8
    got_heads = pipe.unet.config.attention_head_dim
    assert (list(got_heads) if isinstance(got_heads, (list, tuple)) else got_heads) == want_heads, got_heads
    if is_sd2:  # Lumen's rule for SD 2.1's 64-wide heads ([5, 10, 20, 20] for [320, 640, 1280, 1280]):
        # max(1, channels // 64) heads, one head at both of these narrow levels
        assert [max(1, c // 64) for c in pipe.unet.config.block_out_channels] == list(got_heads)
    assert pipe.vae.config.scaling_factor == 0.18215 and pipe.vae.config.norm_num_groups == 32
    assert pipe.vae.config.sample_size == spec["vae"]["sample_size"]
    assert pipe.text_encoder.config.hidden_act == ("gelu" if is_sd2 else "quick_gelu")
    assert pipe.text_encoder.config.num_hidden_layers == (23 if is_sd2 else 2)
    assert pipe.tokenizer.model_max_length == 77 and pipe.tokenizer.pad_token == spec["pad"]
    default_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert default_size == (768 if is_sd2 else 512), default_size

    # 5. References ------------------------------------------------------------------------------
    ids = tokenize(pipe.tokenizer)
    n = len(base.EXPECTED_IDS)
    assert ids.shape == (1, 77) and ids[0, :n].tolist() == base.EXPECTED_IDS and ids[0, n:].eq(spec["pad_id"]).all()
    ref = {f"{key}.input_ids": ids}
    seed = spec["seed"]
    request = dict(prompt=PROMPT, negative_prompt=None, seed=seed, scheduler="default", **DEFAULT)
    image = draw(pipe, DEFAULT, seed)
    ref[f"{key}.image"] = image
    metadata = {f"{key}.request": json.dumps(request, sort_keys=True),
                f"{key}.scheduler_config": json_config(pipe.scheduler.config)}
    checks = {}

    own = pipe.scheduler
    pipe.scheduler = spec["class_default"]()
    class_default = draw(pipe, DEFAULT, seed)
    pipe.scheduler = own
    checks["class_default_max_abs_diff"] = (class_default - image).abs().max().item()
    assert checks["class_default_max_abs_diff"] > 0.01, checks

    if not is_sd2:
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(own.config, use_karras_sigmas=True)
        ref[f"{key}.image_dpmpp_2m_karras"] = draw(pipe, DPMPP, seed)
        metadata[f"{key}.request_dpmpp_2m_karras"] = json.dumps(
            dict(prompt=PROMPT, negative_prompt=None, seed=seed, scheduler="dpmpp-2m-karras", **DPMPP), sort_keys=True)
        metadata[f"{key}.scheduler_config_dpmpp_2m_karras"] = json_config(pipe.scheduler.config)
        pipe.scheduler = own
    # The image is reproducible within this process (same call, same pipeline, same bytes).
    assert torch.equal(draw(pipe, DEFAULT, seed), image)
    for name, v in ref.items():
        if v.is_floating_point():
            assert tuple(v.shape) == (1, 64, 64, 3) and torch.isfinite(v).all(), name
            assert v.std().item() > 0.02, (name, v.std().item())
            checks[f"{name.removeprefix(key + '.')}.std"] = v.std().item()

    metadata.update({
        f"{key}.repository_scheduler_config": json.dumps(spec["scheduler"], sort_keys=True),
        f"{key}.default_size": str(default_size),
        f"{key}.model_type": real_type,
        f"{key}.tiny_model_type": tiny_type,
        f"{key}.repository": repository,
        f"{key}.checkpoint": os.path.relpath(single_file, base.REPO),
        f"{key}.unet_config": json.dumps(spec["unet"], sort_keys=True),
        f"{key}.vae_config": json.dumps(spec["vae"], sort_keys=True),
        f"{key}.text_encoder_config": json.dumps(spec["text"], sort_keys=True),
        f"{key}.tokenizer": json.dumps({"pad_token": spec["pad"], "model_max_length": base.MAX_LENGTH},
                                       sort_keys=True),
    })
    return single_file, ref, metadata, checks


def main():
    base.set_up()
    vocab, merges = base.build_clip_vocab()
    tmp = tempfile.mkdtemp(prefix="lumen-single-file-defaults-")
    try:
        files, ref, checks = [], {}, {}
        metadata = {
            "format": "pt",
            "generator": "tools/make_single_file_fixtures.py",
            "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                    "transformers": transformers.__version__,
                                    "safetensors": safetensors.__version__}, sort_keys=True),
            "notes": (
                "Each image: StableDiffusionPipeline.from_single_file(<f>.checkpoint, config=<a diffusers folder "
                "standing for <f>.repository: the tiny model's configs with that repository's values of every field "
                "shapes cannot show, and its scheduler_config.json verbatim>, local_files_only=True, "
                "torch_dtype=float32), then pipe(prompt, negative_prompt=None, height, width, num_inference_steps="
                "steps, guidance_scale, generator=torch.Generator('cpu').manual_seed(seed), output_type='np'): "
                "float32 [1,H,W,3] in [0, 1]. <f>.scheduler_config = dict(pipe.scheduler.config), what diffusers "
                "used (keys it filled from the class defaults are listed in its _use_default_values). "
                "<f>.default_size = unet.config.sample_size * vae_scale_factor. <f>.model_type: "
                "infer_diffusers_model_type of the real family's key shapes (v2: input_blocks.2.1...attn2.to_k "
                "[320, 1024]); the tiny files are both detected as v1 (<f>.tiny_model_type), since no tiny "
                "cross-attention is 1024 wide. The images differ from the scheduler class's own defaults' "
                "(PNDMScheduler() / DDIMScheduler()) by more than 0.01 (asserted)."),
        }
        for key, spec in FAMILIES.items():
            single_file, r, m, c = make_family(key, spec, vocab, merges, tmp)
            files.append(single_file)
            ref.update(r)
            metadata.update(m)
            checks.update({f"{key}.{k}": v for k, v in c.items()})
    finally:
        shutil.rmtree(tmp)
    ref = {k: v.clone().contiguous() for k, v in sorted(ref.items())}
    base.save_safetensors(ref, REFERENCE, metadata=metadata)
    os.chmod(REFERENCE, 0o644)
    files.append(REFERENCE)

    print("asserted: from_single_file(config=folder) state dicts equal the originals; scheduler class and "
          "config are the repository's; detection maps v1/v2 to their repositories; images not flat and "
          "unlike the scheduler classes' own defaults")
    for k, v in checks.items():
        print(f"  {k:40s} {v:.4f}")
    print("metadata:")
    for k in sorted(metadata):
        v = metadata[k]
        print(f"  {k:40s} {v if len(v) <= 100 else v[:97] + '...'}")
    print("files:")
    for p in files:
        digest = hashlib.sha256(open(p, "rb").read()).hexdigest()
        print(f"  {os.path.relpath(p, base.REPO):50s} {os.path.getsize(p):>10,} bytes  sha256 {digest[:16]}")
    for k, v in ref.items():
        print(f"  {k:32s} {str(list(v.shape)):15s} {str(v.dtype).removeprefix('torch.')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
