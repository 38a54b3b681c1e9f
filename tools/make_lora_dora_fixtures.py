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
  reference-dora.safetensors   image.dora [1, 64, 64, 3] f32 (numpy, [0, 1]): StableDiffusionPipeline
                               on tiny-sd with that file loaded by load_lora_weights (make_lora_fixtures.py's
                               request, in __metadata__)
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

OUT = lora_fixtures.OUT
DORA = os.path.join(OUT, "tiny-kohya-dora.safetensors")
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
    image = lora_fixtures.draw(pipe)
    base.save_safetensors({"image.dora": image.contiguous()}, REFERENCE, metadata={
        "format": "pt", "generator": "tools/make_lora_dora_fixtures.py", "request": json.dumps(lora_fixtures.REQUEST, sort_keys=True),
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__}, sort_keys=True)})
    for p in (DORA, REFERENCE):
        os.chmod(p, 0o644)
        print(f"  {os.path.relpath(p, base.REPO):45s} {os.path.getsize(p):>10,} bytes ({len(modules)} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
