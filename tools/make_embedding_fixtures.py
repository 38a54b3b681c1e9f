"""Fixtures for textual-inversion embeddings (issue #20), with diffusers' load_textual_inversion as
the oracle. Run by hand with the pinned venv (never in CI), after make_fixtures.py and
make_sdxl_fixtures.py:
    .venv-fixtures/bin/python tools/make_embedding_fixtures.py

Writes Tests/Fixtures/embeddings/:
  lumenstyle.safetensors       A1111 layout: emb_params [2, 16] (2 vectors; token = file name)
  learned_embeds.safetensors   diffusers layout: {"<cat-toy>": [16]} (1 vector; token = key)
  xlstyle.safetensors          SDXL layout: clip_l [3, 16], clip_g [3, 8]
  reference.safetensors        sd.context [2, 77, 16]: StableDiffusionPipeline.encode_prompt with both
                               SD embeddings loaded, rows [negative, prompt]; sdxl.context [2, 77, 24]
                               and sdxl.pooled [2, 8]: StableDiffusionXLPipeline.encode_prompt with the
                               pair loaded into text_encoder/tokenizer and text_encoder_2/tokenizer_2.
Prompts in reference's __metadata__.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch  # noqa: E402
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

OUT = os.path.join(base.FIXTURES, "embeddings")
SD = {"prompt": "a lumenstyle photo of <cat-toy> on a hill", "negative_prompt": "blurry lumenstyle"}
XL = {"prompt": "a xlstyle castle at night", "negative_prompt": "ugly"}


def main():
    base.set_up()
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(2020)
    a1111 = os.path.join(OUT, "lumenstyle.safetensors")
    diffusers_file = os.path.join(OUT, "learned_embeds.safetensors")
    xl_file = os.path.join(OUT, "xlstyle.safetensors")
    # Scaled like the tiny encoders' own token rows, so that the vectors matter but stay in range.
    save_file({"emb_params": torch.randn(2, 16, generator=g) * 0.05}, a1111)
    save_file({"<cat-toy>": torch.randn(16, generator=g) * 0.05}, diffusers_file)
    save_file({"clip_l": torch.randn(3, 16, generator=g) * 0.05, "clip_g": torch.randn(3, 8, generator=g) * 0.05}, xl_file)

    ref = {}
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(base.FIXTURES, "tiny-sd"), dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False, local_files_only=True)
    pipe.load_textual_inversion(a1111, token="lumenstyle")
    pipe.load_textual_inversion(diffusers_file)
    with torch.no_grad():
        positive, negative = pipe.encode_prompt(SD["prompt"], "cpu", 1, True, SD["negative_prompt"])
    ref["sd.context"] = torch.cat([negative, positive])
    ids = pipe.tokenizer(pipe.maybe_convert_prompt(SD["prompt"], pipe.tokenizer))["input_ids"]
    assert len([i for i in ids if i >= 49408]) == 3, ids

    xl = StableDiffusionXLPipeline.from_pretrained(os.path.join(base.FIXTURES, "tiny-sdxl"), dtype=torch.float32,
                                                   local_files_only=True)
    pair = load_file(xl_file)
    xl.load_textual_inversion(pair["clip_l"], token="xlstyle", text_encoder=xl.text_encoder, tokenizer=xl.tokenizer)
    xl.load_textual_inversion(pair["clip_g"], token="xlstyle", text_encoder=xl.text_encoder_2, tokenizer=xl.tokenizer_2)
    with torch.no_grad():
        p, n, pp, npooled = xl.encode_prompt(XL["prompt"], device="cpu", num_images_per_prompt=1,
                                             do_classifier_free_guidance=True, negative_prompt=XL["negative_prompt"])
    ref["sdxl.context"] = torch.cat([n, p])
    ref["sdxl.pooled"] = torch.cat([npooled, pp])
    base.save_safetensors(ref, os.path.join(OUT, "reference.safetensors"),
                          metadata={"sd": json.dumps(SD), "sdxl": json.dumps(XL)})
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))


if __name__ == "__main__":
    main()
