#!/usr/bin/env python3
"""LoRA fixtures in the layouts diffusers' own training scripts write, for Lumen's LoRA tests.

Run by hand, never in CI, after tools/make_fixtures.py and tools/make_lora_fixtures.py, from the
repository root (the venv of tools/requirements-fixtures.txt):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_lora_diffusers_fixtures.py

Deterministic (fixed seeds, one CPU thread). It writes, under Tests/Fixtures/lora/:

  tiny-diffusers.safetensors  a random LoRA for tiny-sd as diffusers' train_text_to_image_lora.py /
                              train_dreambooth_lora.py save it: PEFT adapters on the UNet's
                              attention projections (to_q, to_k, to_v, to_out.0, rank 4) and the text
                              encoder's (q_proj, k_proj, v_proj, out_proj, rank 2), their state dicts
                              through convert_state_dict_to_diffusers and save_lora_weights, so the
                              names are `unet.<module>.lora.down.weight` / `.lora.up.weight` and
                              `text_encoder.<module>.lora_linear_layer.down.weight` / `.up.weight`
                              (no alpha: diffusers then scales by 1).
  tiny-diffusers-processor.safetensors  the UNet half of the same adapter in the attention
                              processors' layout of diffusers before 0.18:
                              `unet.<attention>.processor.to_q_lora.down.weight` (to_k_lora,
                              to_v_lora, to_out_lora for to_out.0). Those files' keys often lack the
                              `unet.` prefix, which diffusers 0.42 no longer reads (it loads nothing
                              from them), so this one has it.
  tiny-diffusers-mixed.safetensors  the same recipe with the UNet's proj_in/proj_out adapted too
                              (its own seeds): convert_state_dict_to_diffusers renames only the
                              attention projections (`lora.down`), so the file mixes them with PEFT's
                              `lora_A`/`lora_B` for proj_in/proj_out. diffusers' load_lora_adapter
                              sees `lora_A` in the first UNet key and reads the file as PEFT's
                              layout alone: the attention factors adapt nothing (checked below).
  reference-diffusers.safetensors  f32 images [1, 64, 64, 3] (numpy, [0, 1]) of
                              StableDiffusionPipeline on tiny-sd with each file loaded by
                              load_lora_weights: `image.training_scripts`, `image.processor`,
                              `image.mixed`; the
                              request (make_lora_fixtures.py's) is in __metadata__.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
import make_lora_fixtures as lora_fixtures  # noqa: E402
from make_fixtures import torch, diffusers  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from diffusers.utils import convert_state_dict_to_diffusers  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
import peft  # noqa: E402
from peft import LoraConfig  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402

OUT = lora_fixtures.OUT
TRAINING = os.path.join(OUT, "tiny-diffusers.safetensors")
PROCESSOR = os.path.join(OUT, "tiny-diffusers-processor.safetensors")
MIXED = os.path.join(OUT, "tiny-diffusers-mixed.safetensors")
REFERENCE = os.path.join(OUT, "reference-diffusers.safetensors")
SEED = 5200
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]  # train_text_to_image_lora.py's
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]  # train_dreambooth_lora.py's
PROCESSOR_NAMES = {"to_q": "to_q_lora", "to_k": "to_k_lora", "to_v": "to_v_lora", "to_out.0": "to_out_lora"}


def pipeline():
    return StableDiffusionPipeline.from_pretrained(base.FOLDER, dtype=torch.float32, local_files_only=True)


def adapted(model, adapter):
    return sum(1 for _, m in model.named_modules() if hasattr(m, "lora_A") and adapter in m.lora_A)


def main():
    base.set_up()
    assert peft.__version__ == lora_fixtures.PINNED_PEFT, peft.__version__
    pipe = pipeline()
    torch.manual_seed(SEED)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=UNET_TARGETS))
    pipe.text_encoder.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=TEXT_TARGETS))
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():  # B is zero at initialisation; a random B makes the update visible
        for model in (pipe.unet, pipe.text_encoder):
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_((torch.randn(p.shape, generator=g) * 0.5).to(torch.float16).float())
                elif "lora_A" in name:
                    p.copy_(p.to(torch.float16).float())
    unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    text_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.text_encoder))
    StableDiffusionPipeline.save_lora_weights(OUT, unet_lora_layers=unet_layers, text_encoder_lora_layers=text_layers,
                                              weight_name=os.path.basename(TRAINING), safe_serialization=True)
    saved = load_file(TRAINING)
    assert all(k.endswith((".lora.down.weight", ".lora.up.weight")) for k in saved if k.startswith("unet.")), sorted(saved)[:4]
    assert all(".lora_linear_layer." in k for k in saved if k.startswith("text_encoder.")), sorted(saved)[-4:]
    n_unet = sum(1 for k in saved if k.startswith("unet.") and k.endswith("down.weight"))
    n_text = sum(1 for k in saved if k.startswith("text_encoder.") and k.endswith("down.weight"))

    # The UNet half in the attention processors' layout.
    processor = {}
    for k, v in saved.items():
        if not k.startswith("unet."):
            continue
        module, role = k[len("unet."):].rsplit(".lora.", 1)  # role: down.weight / up.weight
        attention, projection = module.rsplit(".to_", 1)
        processor[f"unet.{attention}.processor.{PROCESSOR_NAMES['to_' + projection]}.{role}"] = v
    base.save_safetensors({k: v.to(torch.float16).contiguous() for k, v in sorted(processor.items())}, PROCESSOR,
                          metadata={"format": "pt"})

    ref = {"image.none": lora_fixtures.draw(pipeline())}
    for name, path, counts in (("training_scripts", TRAINING, (n_unet, n_text)), ("processor", PROCESSOR, (n_unet, 0))):
        pipe = pipeline()
        pipe.load_lora_weights(path, adapter_name="d")
        # every adapted layer taken up (diffusers drops some names silently when layouts mix)
        assert (adapted(pipe.unet, "d"), adapted(pipe.text_encoder, "d")) == counts, (name, counts)
        ref["image." + name] = lora_fixtures.draw(pipe)
        assert (ref["image." + name] - ref["image.none"]).abs().max() > 0.1, name

    # Attention and proj_in/proj_out: a file of mixed names, which diffusers reads only in part.
    pipe = pipeline()
    torch.manual_seed(SEED + 2)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=UNET_TARGETS + ["proj_in", "proj_out"]))
    g = torch.Generator().manual_seed(SEED + 3)
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.copy_((torch.randn(p.shape, generator=g) * 0.5).to(torch.float16).float())
            elif "lora_A" in name:
                p.copy_(p.to(torch.float16).float())
    StableDiffusionPipeline.save_lora_weights(OUT, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet)),
                                              weight_name=os.path.basename(MIXED), safe_serialization=True)
    mixed = load_file(MIXED)
    n_peft = sum(1 for k in mixed if k.endswith(".lora_A.weight"))
    first_unet = next(k for k in mixed if k.startswith("unet."))
    assert n_peft and any(k.endswith(".lora.down.weight") for k in mixed) and "lora_A" in first_unet, sorted(mixed)[:4]
    pipe = pipeline()
    pipe.load_lora_weights(MIXED, adapter_name="d")
    assert adapted(pipe.unet, "d") == n_peft  # only the PEFT-named modules
    ref["image.mixed"] = lora_fixtures.draw(pipe)
    assert (ref["image.mixed"] - ref["image.none"]).abs().max() > 0.1
    del ref["image.none"]

    base.save_safetensors({k: v.contiguous() for k, v in ref.items()}, REFERENCE, metadata={
        "format": "pt", "generator": "tools/make_lora_diffusers_fixtures.py",
        "request": json.dumps(lora_fixtures.REQUEST, sort_keys=True),
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "peft": peft.__version__}, sort_keys=True)})
    for p in (TRAINING, PROCESSOR, MIXED, REFERENCE):
        os.chmod(p, 0o644)
        print(f"  {os.path.relpath(p, base.REPO):45s} {os.path.getsize(p):>10,} bytes")
    print(f"adapted: {n_unet} UNet layers, {n_text} text-encoder layers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
