#!/usr/bin/env python3
"""A kohya/LyCORIS DoRA file and diffusers' image with it, for Lumen's LoRA tests.

DoRA files add a magnitude vector per adapted layer (`<module>.dora_scale`) to the low-rank
factors. diffusers' Stable Diffusion and SDXL LoRA loaders filter every `dora_scale` key out of the
file (with a warning) and apply the rest as a plain LoRA; Lumen refused the file. Run by hand, never
in CI, after tools/make_fixtures.py and tools/make_lora_fixtures.py (the venv of
tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_lora_dora_fixtures.py

Writes, under Tests/Fixtures/lora/:

  tiny-kohya-dora.safetensors  tiny-kohya.safetensors plus, for each adapted module, `dora_scale`:
                               the row norms of its weight (as LyCORIS initialises it: [out, 1] for a
                               linear layer, [out, 1, 1, 1] for a convolution) times U(0.5, 1.5), f16
  tiny-peft-dora.safetensors   a PEFT DoRA adapter (use_dora: `lora_magnitude_vector` beside lora_A/lora_B,
                               which diffusers applies) for tiny-sd's UNet (attention projections, proj_in,
                               the ResNets' conv1; r 4, lora_alpha 8) and a plain LoRA for its text encoder
                               (q/k/v/out_proj, fc1; r 2, lora_alpha 4, use_rslora, alpha_pattern
                               {"q_proj": 1}: the text encoder's DoRA magnitudes do not load with the
                               pinned transformers), lora_B and the
                               magnitudes randomised, saved by save_lora_weights with each LoraConfig as
                               `lora_adapter_metadata` in the header (diffusers builds the adapters from
                               it: alphas, rsLoRA and patterns that no tensor carries)
  reference-dora.safetensors   f32 images [1, 64, 64, 3] (numpy, [0, 1]) of StableDiffusionPipeline on
                               tiny-sd with a file loaded by load_lora_weights (make_lora_fixtures.py's
                               request, in __metadata__): image.dora (the kohya DoRA file), image.peft_dora
                               and image.peft_dora_0_6 (the PEFT file at adapter weights 1 and 0.6)
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
import make_lora_fixtures as lora_fixtures  # noqa: E402
from make_fixtures import torch, diffusers  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from peft import LoraConfig  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402

OUT = lora_fixtures.OUT
DORA = os.path.join(OUT, "tiny-kohya-dora.safetensors")
PEFT_DORA = os.path.join(OUT, "tiny-peft-dora.safetensors")
REFERENCE = os.path.join(OUT, "reference-dora.safetensors")
SEED = 5300


def main():
    base.set_up()
    pipe = StableDiffusionPipeline.from_pretrained(base.FOLDER, dtype=torch.float32, local_files_only=True)
    kohya = load_file(lora_fixtures.KOHYA)
    weights = {}
    for prefix, model in (("lora_unet_", pipe.unet), ("lora_te_text_model_", pipe.text_encoder)):
        for name, module in model.named_modules():
            if hasattr(module, "weight") and module.weight is not None:
                weights[prefix + name.replace(".", "_")] = module.weight.detach()
    g = torch.Generator().manual_seed(SEED)
    tensors = dict(kohya)
    modules = sorted({k.split(".")[0] for k in kohya})
    for m in modules:
        w = weights[m]
        norms = w.flatten(1).norm(dim=1).view(-1, *([1] * (w.dim() - 1)))
        tensors[m + ".dora_scale"] = (norms * (0.5 + torch.rand(norms.shape, generator=g))).to(torch.float16)
    base.save_safetensors(dict(sorted(tensors.items())), DORA, metadata={"format": "pt"})
    pipe.load_lora_weights(DORA, adapter_name="d")
    ref = {"image.dora": lora_fixtures.draw(pipe)}

    # PEFT's DoRA, with the adapters' configs in the header.
    pipe = StableDiffusionPipeline.from_pretrained(base.FOLDER, dtype=torch.float32, local_files_only=True)
    none = lora_fixtures.draw(pipe)
    torch.manual_seed(SEED + 1)
    unet_config = LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian", use_dora=True,
                             target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "conv1"])
    # No DoRA in the text encoder: with transformers 5.23 the text encoder's magnitude vectors do not
    # load (its report lists them MISSING/UNEXPECTED: `…lora_magnitude_vector.p` against
    # `….p.weight`), so diffusers' image would keep their initial values, a loading bug Lumen does
    # not copy (it applies them as PEFT defines).
    text_config = LoraConfig(r=2, lora_alpha=4, init_lora_weights="gaussian", use_rslora=True,
                             alpha_pattern={"q_proj": 1}, target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1"])
    pipe.unet.add_adapter(unet_config)
    pipe.text_encoder.add_adapter(text_config)
    with torch.no_grad():
        for model in (pipe.unet, pipe.text_encoder):
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_((torch.randn(p.shape, generator=g) * 0.5).to(torch.float16).float())
                elif "lora_A" in name:
                    p.copy_(p.to(torch.float16).float())
                elif "lora_magnitude_vector" in name:
                    p.copy_((p * (0.7 + 0.6 * torch.rand(p.shape, generator=g))).to(torch.float16).float())
    StableDiffusionPipeline.save_lora_weights(
        OUT, weight_name=os.path.basename(PEFT_DORA), safe_serialization=True,
        unet_lora_layers=get_peft_model_state_dict(pipe.unet), text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder),
        unet_lora_adapter_metadata=unet_config.to_dict(), text_encoder_lora_adapter_metadata=text_config.to_dict())
    saved = load_file(PEFT_DORA)
    assert any(k.endswith("lora_magnitude_vector") for k in saved) and not any(k.endswith(".alpha") for k in saved)
    pipe = StableDiffusionPipeline.from_pretrained(base.FOLDER, dtype=torch.float32, local_files_only=True)
    pipe.load_lora_weights(PEFT_DORA, adapter_name="p")
    q = pipe.text_encoder.text_model.encoder.layers[0].self_attn.q_proj if hasattr(pipe.text_encoder, "text_model") \
        else pipe.text_encoder.encoder.layers[0].self_attn.q_proj
    k = pipe.text_encoder.text_model.encoder.layers[0].self_attn.k_proj if hasattr(pipe.text_encoder, "text_model") \
        else pipe.text_encoder.encoder.layers[0].self_attn.k_proj
    # The header's configs were used: rsLoRA scalings, the pattern's alpha, DoRA layers.
    assert abs(q.scaling["p"] - 1 / 2 ** 0.5) < 1e-6 and abs(k.scaling["p"] - 4 / 2 ** 0.5) < 1e-6, (q.scaling, k.scaling)
    unet_q = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert "p" in unet_q.lora_magnitude_vector
    for name, weight in (("peft_dora", 1.0), ("peft_dora_0_6", 0.6)):
        pipe.set_adapters(["p"], adapter_weights=[weight])
        ref["image." + name] = lora_fixtures.draw(pipe)
        assert (ref["image." + name] - none).abs().max() > 0.1, name
    base.save_safetensors({k: v.contiguous() for k, v in ref.items()}, REFERENCE, metadata={
        "format": "pt", "generator": "tools/make_lora_dora_fixtures.py", "request": json.dumps(lora_fixtures.REQUEST, sort_keys=True),
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__}, sort_keys=True)})
    for p in (DORA, PEFT_DORA, REFERENCE):
        os.chmod(p, 0o644)
        print(f"  {os.path.relpath(p, base.REPO):45s} {os.path.getsize(p):>10,} bytes ({len(modules)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
