#!/usr/bin/env python3
"""Generates the committed Stable Diffusion 2.x fixtures that Lumen's SD 2.x tests compare against.

Run by hand, never in CI, after tools/make_fixtures.py (it shares that script's vocabulary, random
initialisation and name converters), from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_sd2_fixtures.py

Deterministic (fixed seeds, one CPU thread). Nothing is downloaded. What makes a model "2.x", and
what this tiny one has of each (the real values in brackets):

  text encoder   OpenCLIP ViT-H/14 as a transformers CLIPTextModel: hidden_act "gelu" [gelu], 64-wide
                 heads scaled down to 8 [1024 wide, 16 heads], num_hidden_layers 23 of the checkpoint's
                 24 resblocks [the same: SD 2.x conditions on the penultimate layer, so diffusers'
                 folders drop the last block]
  tokenizer      the CLIP vocabulary padded with "!" (id 0) instead of <|endoftext|>
  UNet           use_linear_projection (proj_in/proj_out are Linear), attention_head_dim a per-level
                 list of head counts [5, 10, 20, 20], upcast_attention, cross_attention_dim = text
                 hidden size [1024]
  scheduler      DDIM with prediction_type v_prediction, as stabilityai/stable-diffusion-2(-1) ship it
  VAE            unchanged from 1.x

It writes, under Tests/Fixtures/:

  tiny-sd2/                       the diffusers folder, f16 weights; tokenizer/vocab.json and
                                  merges.txt are symlinks to tiny-sd's (the same vocabulary)
  tiny-sd2.safetensors            the same weights as one f16 checkpoint with the original SD 2.x
                                  names: cond_stage_model.model.* (OpenCLIP: token_embedding,
                                  positional_embedding, transformer.resblocks.N with fused
                                  attn.in_proj_weight/bias, ln_final, text_projection, logit_scale,
                                  and a 24th resblock that nothing uses), model.diffusion_model.*
                                  with Linear proj_in/proj_out, first_stage_model.*; verified with
                                  diffusers' from_single_file(config=tiny-sd2)
  tiny-sd2-reference.safetensors  f32 references computed by diffusers/transformers:
    text.input_ids [2,77] int64        the prompts, padded with "!" (0)
    text.last_hidden_state [2,77,8]    CLIPTextModel (23 gelu layers, final layer norm)
    unet.sample [2,4,8,8], unet.timestep [2] (981, 1), unet.encoder_hidden_states = the above,
    unet.out [2,4,8,8]
    pipeline.image [1,64,64,3]         StableDiffusionPipeline(PROMPTS[0], negative "", 64x64, DDIM
                                       v-prediction, 4 steps, guidance 5, torch.Generator seed 7,
                                       output_type "np"), from the folder; from_single_file gives the
                                       same image (asserted)
    pipeline.image_as_epsilon          the same request with the scheduler's prediction_type set to
                                       "epsilon" (what Lumen's --prediction-type epsilon must draw);
                                       it differs from pipeline.image (asserted)
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402  (sets HF_HUB_OFFLINE and the verbosity first)
from make_fixtures import torch, diffusers, transformers, safetensors  # noqa: E402
from diffusers import DDIMScheduler, StableDiffusionPipeline  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

FIXTURES = base.FIXTURES
FOLDER = os.path.join(FIXTURES, "tiny-sd2")
SINGLE_FILE = os.path.join(FIXTURES, "tiny-sd2.safetensors")
REFERENCE = os.path.join(FIXTURES, "tiny-sd2-reference.safetensors")

TEXT_HIDDEN = 8
OPENCLIP_BLOCKS = 24  # diffusers ignores resblocks.23 of an SD 2.x checkpoint (the last, unused block)

TEXT_CONFIG = dict(base.TEXT_CONFIG, hidden_size=TEXT_HIDDEN, intermediate_size=19, num_hidden_layers=OPENCLIP_BLOCKS - 1,
                   num_attention_heads=1, hidden_act="gelu", projection_dim=TEXT_HIDDEN,
                   # as stabilityai/stable-diffusion-2-1's text_encoder/config.json
                   bos_token_id=0, eos_token_id=2, pad_token_id=1)

# SD 2.x's UNet pattern at 1.x's tiny sizes: 2 heads of 16 at level 0, 2 heads of 32 at level 1.
UNET_CONFIG = dict(base.UNET_CONFIG, cross_attention_dim=TEXT_HIDDEN, attention_head_dim=(2, 2),
                   use_linear_projection=True, upcast_attention=True)

VAE_CONFIG = base.VAE_CONFIG

# stabilityai/stable-diffusion-2-1's scheduler_config.json.
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                        trained_betas=None, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                        skip_prk_steps=True, prediction_type="v_prediction", timestep_spacing="leading")

PROMPTS = base.PROMPTS
PIPELINE = dict(prompt=PROMPTS[0], negative_prompt="", height=64, width=64, num_inference_steps=4,
                guidance_scale=5.0, seed=7)
SEED_WEIGHTS = {"text_encoder": 1100, "unet": 2100, "vae": 3100, "unused": 1199}
SEED_INPUTS = 4100


def check_tokenizer(tokenizer, where):
    ids = base.tokenize(tokenizer)
    n = len(base.EXPECTED_IDS)
    assert ids[0, :n].tolist() == base.EXPECTED_IDS, (where, ids[0, :16].tolist())
    assert ids[0, n:].eq(0).all(), where  # padded with "!"
    assert ids[1, :2].tolist() == [49406, 49407] and ids[1, 2:].eq(0).all(), where
    return ids


def text_to_openclip(state, unused_block):
    """CLIPTextModel state dict -> cond_stage_model.model.* (OpenCLIP) names: q/k/v fused into
    in_proj (rows q, then k, then v), ln_1/ln_2, mlp.c_fc/c_proj, positional_embedding as a bare
    tensor; plus the unused last resblock, a text_projection [H, H] and the scalar logit_scale that
    real SD 2.x checkpoints carry."""
    s = {k.removeprefix("text_model."): v for k, v in state.items()}
    p = "cond_stage_model.model."
    out = {p + "token_embedding.weight": s.pop("embeddings.token_embedding.weight"),
           p + "positional_embedding": s.pop("embeddings.position_embedding.weight"),
           p + "ln_final.weight": s.pop("final_layer_norm.weight"),
           p + "ln_final.bias": s.pop("final_layer_norm.bias")}
    s.pop("embeddings.position_ids", None)
    layers = TEXT_CONFIG["num_hidden_layers"]
    blocks = [{k[len(f"encoder.layers.{i}."):]: s.pop(k) for k in list(s) if k.startswith(f"encoder.layers.{i}.")}
              for i in range(layers)] + [unused_block]
    assert not s, sorted(s)
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i, b in enumerate(blocks):
        r = f"{p}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[r + f"attn.in_proj_{kind}"] = torch.cat([b.pop(f"self_attn.{x}_proj.{kind}") for x in "qkv"])
        for k, v in b.items():
            out[r + base._sub(k, names)] = v
    g = torch.Generator().manual_seed(SEED_WEIGHTS["unused"])
    out[p + "text_projection"] = (torch.randn((TEXT_HIDDEN, TEXT_HIDDEN), generator=g) / TEXT_HIDDEN ** 0.5)
    out[p + "logit_scale"] = torch.tensor(4.6052)
    return out


def main():
    base.set_up()
    vocab, merges = base.build_clip_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=base.MAX_LENGTH, pad_token="!")
    check_tokenizer(tokenizer, "CLIPTokenizer(vocab=, merges=, pad_token='!')")

    text_encoder, unet, vae = base.build_networks(TEXT_CONFIG, UNET_CONFIG, VAE_CONFIG, SEED_WEIGHTS)
    scheduler = DDIMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "skip_prk_steps"})
    # The checkpoint's 24th OpenCLIP block, which SD 2.x never runs: a layer of the same shape.
    spare = CLIPTextModel(CLIPTextConfig(**dict(TEXT_CONFIG, num_hidden_layers=1)))
    base.randomise(spare, SEED_WEIGHTS["unused"])
    unused_block = {k.removeprefix("text_model.").removeprefix("encoder.layers.0."): v.detach().clone()
                    for k, v in spare.state_dict().items() if "encoder.layers.0." in k}
    originals = {"text_encoder": base.float_state(text_encoder), "unet": base.float_state(unet),
                 "vae": base.float_state(vae)}

    # The diffusers folder.
    base.save_sd_folder(FOLDER, vae, text_encoder, tokenizer, unet, scheduler)
    base.linked_tokenizer_folder(os.path.join(FOLDER, "tokenizer"), "!")
    with open(os.path.join(FOLDER, "scheduler", "scheduler_config.json")) as f:
        saved = json.load(f)
    assert saved["prediction_type"] == "v_prediction" and saved["_class_name"] == "DDIMScheduler", saved
    for sub, weights in (("text_encoder", "model.safetensors"), ("unet", "diffusion_pytorch_model.safetensors"),
                         ("vae", "diffusion_pytorch_model.safetensors")):
        stored = load_file(os.path.join(FOLDER, sub, weights))
        assert all(t.dtype == torch.float16 for t in stored.values()), sub
        base.assert_same_state(sub, stored, originals[sub])

    # The single file with the original SD 2.x names.
    single = {}
    single.update(base.unet_to_ldm(originals["unet"], UNET_CONFIG))
    single.update(base.vae_to_ldm(originals["vae"], VAE_CONFIG))
    single.update(text_to_openclip(originals["text_encoder"], unused_block))
    assert single["model.diffusion_model.input_blocks.1.1.proj_in.weight"].dim() == 2  # Linear, as SD 2.x
    single = {k: v.to(torch.float16).contiguous() for k, v in sorted(single.items())}
    base.save_safetensors(single, SINGLE_FILE, metadata={
        "format": "pt", "lumen_fixture": "tiny random-weight SD 2.x; tools/make_sd2_fixtures.py"})
    loaded = StableDiffusionPipeline.from_single_file(SINGLE_FILE, config=FOLDER, local_files_only=True,
                                                      torch_dtype=torch.float32, safety_checker=None,
                                                      requires_safety_checker=False)
    for name in ("unet", "vae", "text_encoder"):
        base.assert_same_state(f"from_single_file {name}", getattr(loaded, name).state_dict(), originals[name])
    assert loaded.scheduler.config.prediction_type == "v_prediction"

    # References, in f32, from the folder as saved.
    pipe = StableDiffusionPipeline.from_pretrained(FOLDER, dtype=torch.float32, local_files_only=True)
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.scheduler.config.prediction_type == "v_prediction"
    ids = check_tokenizer(pipe.tokenizer, "tokenizer folder")
    g = torch.Generator().manual_seed(SEED_INPUTS)
    ref = {}
    with torch.no_grad():
        ref["text.input_ids"] = ids
        ref["text.last_hidden_state"] = pipe.text_encoder(ids).last_hidden_state
        ref["unet.sample"] = torch.randn((2, 4, 8, 8), generator=g)
        ref["unet.timestep"] = torch.tensor([981.0, 1.0])
        ref["unet.encoder_hidden_states"] = ref["text.last_hidden_state"]
        ref["unet.out"] = pipe.unet(ref["unet.sample"], ref["unet.timestep"],
                                    encoder_hidden_states=ref["unet.encoder_hidden_states"]).sample

    def draw(p):
        args = {k: v for k, v in PIPELINE.items() if k != "seed"}
        return torch.from_numpy(p(**args, generator=torch.Generator().manual_seed(PIPELINE["seed"]),
                                  output_type="np").images)
    ref["pipeline.image"] = draw(pipe)
    from_single = draw(loaded.to(torch.float32))
    assert torch.equal(from_single, ref["pipeline.image"]), (from_single - ref["pipeline.image"]).abs().max()
    # Not a flat image, and v-prediction matters: the same weights read as epsilon draw another one.
    assert ref["pipeline.image"].std() > 0.02, ref["pipeline.image"].std()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="epsilon")
    as_epsilon = draw(pipe)
    assert (as_epsilon - ref["pipeline.image"]).abs().max() > 0.05
    ref["pipeline.image_as_epsilon"] = as_epsilon

    ref = {k: (v.to(torch.int64) if k == "text.input_ids" else v.to(torch.float32)).clone().contiguous()
           for k, v in ref.items()}
    for k, v in ref.items():
        assert torch.isfinite(v.float()).all(), k
    metadata = {
        "format": "pt",
        "generator": "tools/make_sd2_fixtures.py",
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__, "safetensors": safetensors.__version__},
                               sort_keys=True),
        "text_encoder_config": json.dumps(TEXT_CONFIG, sort_keys=True),
        "unet_config": json.dumps(UNET_CONFIG, sort_keys=True),
        "scheduler_config": json.dumps(dict(SCHEDULER_CONFIG, _class_name="DDIMScheduler"), sort_keys=True),
        "prompts": json.dumps(PROMPTS),
        "pipeline": json.dumps(PIPELINE, sort_keys=True),
        "notes": ("Computed in float32 from Tests/Fixtures/tiny-sd2 loaded with from_pretrained(dtype=torch.float32). "
                  "pipeline.image: output_type np, values in [0, 1]; from_single_file(tiny-sd2.safetensors, "
                  "config=tiny-sd2) draws the identical image; pipeline.image_as_epsilon: the scheduler's prediction_type "
                  "set to epsilon, another image (asserted)."),
    }
    base.save_safetensors(ref, REFERENCE, metadata=metadata)
    for d, _, fs in os.walk(FIXTURES):
        for f in fs:
            path = os.path.join(d, f)
            if not os.path.islink(path):
                os.chmod(path, 0o644)

    print("tokenizer: padded with '!' (asserted)")
    print("single file: from_single_file(config=tiny-sd2) state dicts equal the originals; same image (asserted)")
    print(f"as epsilon instead of v: largest pixel difference {(as_epsilon - ref['pipeline.image']).abs().max():.3f}")
    base.print_fixtures((FOLDER, SINGLE_FILE, REFERENCE), ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())
