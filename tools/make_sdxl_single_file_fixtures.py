#!/usr/bin/env python3
"""Generates the committed SDXL single-file fixtures: the tiny SDXL model of
tools/make_sdxl_fixtures.py (Tests/Fixtures/tiny-sdxl, read, never rewritten) written as one
checkpoint with the original (Stability "sgm") names, as SDXL files are downloaded:

  conditioner.embedders.0.transformer.text_model.*   CLIP ViT-L (text_encoder), with the int64
                                                     position_ids buffer real files carry
  conditioner.embedders.1.model.*                    OpenCLIP bigG (text_encoder_2): q/k/v fused into
                                                     transformer.resblocks.N.attn.in_proj_{weight,bias}
                                                     (rows q, k, v), ln_1/ln_2, mlp.c_fc/c_proj,
                                                     positional_embedding, ln_final, text_projection
                                                     stored TRANSPOSED ([hidden, projection]: OpenCLIP
                                                     computes x @ text_projection), and logit_scale
  model.diffusion_model.*                            the UNet; add_embedding as label_emb.0.0 / label_emb.0.2
  first_stage_model.*                                the VAE

Run by hand, never in CI, from the repository root, after tools/make_sdxl_fixtures.py:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_sdxl_single_file_fixtures.py

Deterministic. Nothing is downloaded. It writes, under Tests/Fixtures/:

  tiny-sdxl-single-f16.safetensors    the checkpoint in float16 (the folder's own values)
  (a bf16 copy, each value rounded, is written to a temporary folder only: the tests make it
  from the f16 file)
  tiny-sdxl-single-file-reference.safetensors (f32):
    f16.image [1,64,64,3]   StableDiffusionXLPipeline.from_single_file(tiny-sdxl-single-f16,
                            config=Tests/Fixtures/tiny-sdxl, torch_dtype=float32, local_files_only),
                            make_sdxl_fixtures' request (prompt, 64x64, 4 steps, guidance 5, seed 7,
                            no negative prompt), output_type "np"
    bf16.image [1,64,64,3]  the same from the bf16 copy

Asserted: each file loads back through diffusers' own converter (from_single_file) into state
dicts equal to the folder's (bf16: to the folder's values rounded to bf16), so the names and the
transposed projection are diffusers' reading of the format, not this script's; the f16 file's
image equals the folder pipeline's image (tiny-sdxl-reference's pipeline.image) to float rounding.
"""

import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
import make_sdxl_fixtures as sdxl  # noqa: E402
from make_fixtures import torch, diffusers, transformers, safetensors  # noqa: E402
from diffusers import StableDiffusionXLPipeline  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

FOLDER = sdxl.FOLDER
TMP = tempfile.mkdtemp(prefix="lumen-sdxl-single-")
OUT = {"f16": os.path.join(base.FIXTURES, "tiny-sdxl-single-f16.safetensors"),
       # Not committed (it would double the fixture's 5 MB): the tests write it from the f16 file,
       # each value rounded to bf16 as torch's .to(bfloat16) does, and compare with bf16.image.
       "bf16": os.path.join(TMP, "tiny-sdxl-single-bf16.safetensors")}
REFERENCE = os.path.join(base.FIXTURES, "tiny-sdxl-single-file-reference.safetensors")
DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16}


def unet_to_sgm(state, config):
    """make_fixtures' UNet renaming, plus SDXL's added embedding: add_embedding.linear_1/_2 are
    label_emb.0.0 / label_emb.0.2 in the original."""
    added = {k: v for k, v in state.items() if k.startswith("add_embedding.")}
    rest = {k: v for k, v in state.items() if not k.startswith("add_embedding.")}
    out = base.unet_to_ldm(rest, config)
    for k, v in added.items():
        layer, kind = k.split(".")[1:]
        out[f"model.diffusion_model.label_emb.0.{0 if layer == 'linear_1' else 2}.{kind}"] = v
    return out


def clip_to_sgm(state):
    out = {"conditioner.embedders.0.transformer.text_model." + k.removeprefix("text_model."): v
           for k, v in state.items() if k != "text_model.embeddings.position_ids" and k != "embeddings.position_ids"}
    out["conditioner.embedders.0.transformer.text_model.embeddings.position_ids"] = \
        torch.arange(base.MAX_LENGTH, dtype=torch.int64)[None]
    return out


def bigg_to_sgm(state, layers):
    s = {k.removeprefix("text_model."): v for k, v in state.items()}
    s.pop("embeddings.position_ids", None)
    p = "conditioner.embedders.1.model."
    out = {p + "token_embedding.weight": s.pop("embeddings.token_embedding.weight"),
           p + "positional_embedding": s.pop("embeddings.position_embedding.weight"),
           p + "ln_final.weight": s.pop("final_layer_norm.weight"),
           p + "ln_final.bias": s.pop("final_layer_norm.bias"),
           p + "text_projection": s.pop("text_projection.weight").T.contiguous(),
           p + "logit_scale": torch.tensor(4.6052)}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i in range(layers):
        pre = f"encoder.layers.{i}."
        b = {k[len(pre):]: s.pop(k) for k in list(s) if k.startswith(pre)}
        r = f"{p}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[r + f"attn.in_proj_{kind}"] = torch.cat([b.pop(f"self_attn.{x}_proj.{kind}") for x in "qkv"])
        for k, v in b.items():
            out[r + base._sub(k, names)] = v
    assert not s, sorted(s)
    return out


def main():
    base.set_up()
    folder = StableDiffusionXLPipeline.from_pretrained(FOLDER, dtype=torch.float32, local_files_only=True)
    states = {n: base.float_state(getattr(folder, n)) for n in ("text_encoder", "text_encoder_2", "unet", "vae")}
    checkpoint = {}
    checkpoint.update(clip_to_sgm(states["text_encoder"]))
    checkpoint.update(bigg_to_sgm(states["text_encoder_2"], folder.text_encoder_2.config.num_hidden_layers))
    checkpoint.update(unet_to_sgm(states["unet"], dict(folder.unet.config)))
    checkpoint.update(base.vae_to_ldm(states["vae"], dict(folder.vae.config)))

    request = {k: v for k, v in sdxl.PIPELINE.items() if k != "seed"}
    ref, checks = {}, {}
    for key, dtype in DTYPES.items():
        cast = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in checkpoint.items()}
        base.save_safetensors(cast, OUT[key], metadata={"format": "pt", "generator": "tools/make_sdxl_single_file_fixtures.py"})
        pipe = StableDiffusionXLPipeline.from_single_file(OUT[key], config=FOLDER, local_files_only=True,
                                                          torch_dtype=torch.float32)
        assert pipe.config.force_zeros_for_empty_prompt
        for n in states:
            want = {k: v.to(dtype).float() for k, v in states[n].items() if v.is_floating_point()}
            base.assert_same_state(f"{key} {n}", base.float_state(getattr(pipe, n)), want)
        image = torch.from_numpy(pipe(**request, generator=torch.Generator().manual_seed(sdxl.PIPELINE["seed"]),
                                      output_type="np").images).float()
        assert torch.isfinite(image).all() and image.std() > 0.02, key
        ref[f"{key}.image"] = image.contiguous()
    folder_image = load_file(sdxl.REFERENCE)["pipeline.image"]
    checks["f16_vs_folder_max_abs"] = (ref["f16.image"] - folder_image).abs().max().item()
    assert checks["f16_vs_folder_max_abs"] < 1e-4, checks
    checks["bf16_vs_f16_max_abs"] = (ref["bf16.image"] - ref["f16.image"]).abs().max().item()
    assert checks["bf16_vs_f16_max_abs"] > 1e-3, checks  # the bf16 fixture tests something of its own
    base.save_safetensors(ref, REFERENCE, metadata={
        "format": "pt", "generator": "tools/make_sdxl_single_file_fixtures.py",
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__, "safetensors": safetensors.__version__},
                               sort_keys=True),
        "pipeline": json.dumps(sdxl.PIPELINE, sort_keys=True),
        "checks": json.dumps(checks, sort_keys=True),
        "notes": ("<d>.image: StableDiffusionXLPipeline.from_single_file(Tests/Fixtures/tiny-sdxl-single-<d>."
                  "safetensors, config=Tests/Fixtures/tiny-sdxl, torch_dtype=float32), pipeline request as in "
                  "metadata 'pipeline' (no negative prompt), output_type np.")})
    shutil.rmtree(TMP)
    for p in (OUT["f16"], REFERENCE):
        os.chmod(p, 0o644)
        print(f"{os.path.relpath(p, base.REPO)}: {os.path.getsize(p)} bytes")
    print(json.dumps(checks, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
