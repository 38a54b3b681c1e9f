#!/usr/bin/env python3
"""Generates the committed LoRA fixtures that Lumen's LoRA tests compare against.

Run by hand, never in CI, after tools/make_fixtures.py, from the repository root (the venv of
tools/requirements-fixtures.txt; diffusers needs peft to load LoRAs):

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_lora_fixtures.py

Deterministic (fixed seeds, one CPU thread). Nothing is downloaded. It writes, under
Tests/Fixtures/lora/:

  tiny-kohya.safetensors     a random LoRA for tiny-sd in the kohya-ss / A1111 layout: for each
                             adapted layer `lora_unet_<diffusers module path, dots as underscores>` or
                             `lora_te_<text encoder path>` with `.lora_down.weight` [r, in(, kh, kw)],
                             `.lora_up.weight` [out, r(, 1, 1)] and a scalar `.alpha` (rank 4, alpha
                             2: scale alpha / r = 0.5; one alpha for all layers, since diffusers
                             0.42's kohya converter drops per-layer alphas of some layers). Adapted: the UNet's attention projections (to_q, to_k,
                             to_v, to_out.0), the transformers' 1x1-convolution proj_in/proj_out, the
                             feed-forwards (ff.net.0.proj, ff.net.2), the ResNets' 3x3 conv1/conv2,
                             time_emb_proj and conv_shortcut, the down/up-samplers' 3x3 convolutions
                             (LoCon-style, as LCM-LoRA) and the text encoder's q/k/v/out projections
                             and MLPs. f16.
  tiny-peft.safetensors      the same adapter as diffusers' save_lora_weights writes it (PEFT
                             names: unet.<module>.lora_A.weight / lora_B.weight, text_encoder.<...>;
                             alpha folded into lora_B, as PEFT saves it without a config file)
  tiny-sdxl-kohya.safetensors  a random LoRA for tiny-sdxl as kohya-ss writes SDXL LoRAs: UNet modules under
                             their original (sgm/LDM) names, `lora_unet_input_blocks_4_1_…`, and
                             both text encoders as `lora_te1_` / `lora_te2_`
  tiny-sdxl-peft.safetensors the same in the PEFT layout (unet., text_encoder., text_encoder_2.)
  reference.safetensors      f32 images [1, 64, 64, 3] (numpy, [0, 1]) of StableDiffusionPipeline on
                             tiny-sd with the kohya file loaded by load_lora_weights and its weight set
                             by set_adapters: `image.scale_1` (1.0), `image.scale_0_6` (0.6); and
                             `image.none` without the LoRA; `sdxl.scale_1` and `sdxl.none`, the same for
                             StableDiffusionXLPipeline on tiny-sdxl with tiny-sdxl-kohya (without a
                             negative prompt: zero unconditional inputs). The request
                             is in __metadata__.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as base  # noqa: E402
from make_fixtures import torch, diffusers  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
import peft  # noqa: E402

OUT = os.path.join(base.FIXTURES, "lora")
KOHYA = os.path.join(OUT, "tiny-kohya.safetensors")
PEFT = os.path.join(OUT, "tiny-peft.safetensors")
SDXL_KOHYA = os.path.join(OUT, "tiny-sdxl-kohya.safetensors")
SDXL_PEFT = os.path.join(OUT, "tiny-sdxl-peft.safetensors")
REFERENCE = os.path.join(OUT, "reference.safetensors")
PINNED_PEFT = "0.21.2"
RANK = 4
ALPHA = 2.0
SEED = 5100
REQUEST = dict(prompt="a photo of an astronaut riding a horse on mars", negative_prompt="", height=64, width=64,
               num_inference_steps=4, guidance_scale=5.0, seed=11)
SCALES = {"scale_1": 1.0, "scale_0_6": 0.6}

UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k", "attn2.to_v",
                "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out",
                # LoCon-style layers, as LCM-LoRA adapts them: the ResNets' 3x3 convolutions, time
                # projections and 1x1 shortcuts, the down/up-samplers' 3x3 convolutions
                "conv1", "conv2", "time_emb_proj", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv")
TEXT_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


def adapted_layers(model, targets):
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and name.endswith(targets)]


def random_lora(prefix, layers, g):
    """kohya tensors for each layer: down ~ N(0, 1/in), up ~ N(0, 1/r) so the merged update is a
    visible fraction of the weight; alpha 2."""
    out = {}
    for i, (name, m) in enumerate(layers):
        key = prefix + name.replace(".", "_")
        if isinstance(m, torch.nn.Linear):
            down_shape, up_shape = (RANK, m.in_features), (m.out_features, RANK)
            fan_in = m.in_features
        else:
            kh, kw = m.kernel_size
            down_shape, up_shape = (RANK, m.in_channels, kh, kw), (m.out_channels, RANK, 1, 1)
            fan_in = m.in_channels * kh * kw
        out[key + ".lora_down.weight"] = (torch.randn(down_shape, generator=g) / fan_in ** 0.5).to(torch.float16)
        out[key + ".lora_up.weight"] = (torch.randn(up_shape, generator=g) / RANK ** 0.5).to(torch.float16)
        out[key + ".alpha"] = torch.tensor(ALPHA, dtype=torch.float16)
    return out


def sdxl_lora(g):
    """tiny-sdxl's LoRA in kohya's SDXL layout, the pipeline with it loaded, and the layer counts."""
    import make_sdxl_fixtures as xl
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(xl.FOLDER, dtype=torch.float32, local_files_only=True)
    unet_layers = adapted_layers(pipe.unet, UNET_TARGETS)
    te1, te2 = adapted_layers(pipe.text_encoder, TEXT_TARGETS), adapted_layers(pipe.text_encoder_2, TEXT_TARGETS)
    # UNet module paths in the original names: map "<module>.weight" through make_fixtures' converter.
    ldm = {}
    for name, m in unet_layers:
        (key,) = base.unet_to_ldm({name + ".weight": None}, xl.UNET_CONFIG).keys()
        ldm[key.removeprefix("model.diffusion_model.").removesuffix(".weight")] = m
    assert any(k.startswith("input_blocks") for k in ldm), sorted(ldm)[:4]
    lora = random_lora("lora_unet_", list(ldm.items()), g)
    text = lambda layers: [("text_model." + n if not n.startswith("text_model.") else n, m) for n, m in layers]
    lora.update(random_lora("lora_te1_", text(te1), g))
    lora.update(random_lora("lora_te2_", text(te2), g))
    return pipe, dict(sorted(lora.items())), (len(unet_layers), len(te1), len(te2))


def save_peft(pipe, adapter, parts, path):
    """The loaded adapter as diffusers' PEFT layout (`<part>.<module>.lora_A/B.weight`). PEFT keeps
    alpha in its config, which a bare state dict lacks, so alpha / r is folded into lora_B."""
    from peft.utils import get_peft_model_state_dict
    tensors = {}
    for part in parts:
        model = getattr(pipe, part)
        sd = get_peft_model_state_dict(model, adapter_name=adapter)
        for name, m in model.named_modules():
            if hasattr(m, "lora_A") and adapter in m.lora_A:
                key = name + ".lora_B.weight"
                assert key in sd, key
                sd[key] = sd[key] * m.scaling[adapter]
        tensors.update({part + "." + k: v for k, v in sd.items()})
    base.save_safetensors({k: v.to(torch.float16).contiguous() for k, v in sorted(tensors.items())}, path,
                          metadata={"format": "pt"})


def draw(pipe, skip=("seed",)):
    args = {k: v for k, v in REQUEST.items() if k not in skip}
    return torch.from_numpy(pipe(**args, generator=torch.Generator().manual_seed(REQUEST["seed"]),
                                 output_type="np").images).float()


def main():
    base.set_up()
    assert peft.__version__ == PINNED_PEFT, f"peft {peft.__version__}, pinned {PINNED_PEFT}"
    os.makedirs(OUT, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(base.FOLDER, dtype=torch.float32, local_files_only=True)
    g = torch.Generator().manual_seed(SEED)
    unet_layers = adapted_layers(pipe.unet, UNET_TARGETS)
    text_layers = adapted_layers(pipe.text_encoder, TEXT_TARGETS)
    assert unet_layers and text_layers
    lora = {}
    lora.update(random_lora("lora_unet_", unet_layers, g))
    lora.update(random_lora("lora_te_", [("text_model." + n if not n.startswith("text_model.") else n, m)
                                         for n, m in text_layers], g))
    base.save_safetensors(dict(sorted(lora.items())), KOHYA, metadata={"format": "pt", "ss_network_dim": str(RANK)})

    ref = {"image.none": draw(pipe)}
    pipe.load_lora_weights(KOHYA, adapter_name="a")
    # Every adapted layer was taken up by diffusers (none silently dropped by its converter).
    n_unet = sum(1 for _, m in pipe.unet.named_modules() if hasattr(m, "lora_A") and "a" in m.lora_A)
    n_text = sum(1 for _, m in pipe.text_encoder.named_modules() if hasattr(m, "lora_A") and "a" in m.lora_A)
    assert (n_unet, n_text) == (len(unet_layers), len(text_layers)), (n_unet, len(unet_layers), n_text, len(text_layers))
    scalings = {m.scaling["a"] for model in (pipe.unet, pipe.text_encoder) for _, m in model.named_modules()
                if hasattr(m, "lora_A") and "a" in m.lora_A}
    assert scalings == {ALPHA / RANK}, scalings  # diffusers applies alpha / r as kohya defines it
    for name, scale in SCALES.items():
        pipe.set_adapters(["a"], adapter_weights=[scale])
        ref["image." + name] = draw(pipe)
    assert (ref["image.scale_1"] - ref["image.none"]).abs().max() > 0.1
    assert (ref["image.scale_0_6"] - ref["image.scale_1"]).abs().max() > 0.05

    # The same adapter in diffusers' own (PEFT) layout.
    pipe.set_adapters(["a"], adapter_weights=[1.0])
    save_peft(pipe, "a", ("unet", "text_encoder"), PEFT)
    pipe.unload_lora_weights()
    pipe.load_lora_weights(PEFT, adapter_name="b")
    again = draw(pipe)
    peft_vs_kohya = (again - ref["image.scale_1"]).abs().max().item()
    assert peft_vs_kohya < 2 / 255, peft_vs_kohya

    # SDXL, kohya's SDXL names.
    xl_pipe, xl_lora, (n_unet_xl, n_te1, n_te2) = sdxl_lora(g)
    base.save_safetensors(xl_lora, SDXL_KOHYA, metadata={"format": "pt", "ss_network_dim": str(RANK)})
    # No negative prompt for SDXL: zero unconditional inputs, what Lumen's empty negative prompt means.
    ref["sdxl.none"] = draw(xl_pipe, skip=("seed", "negative_prompt"))
    xl_pipe.load_lora_weights(SDXL_KOHYA, adapter_name="x")
    counts = tuple(sum(1 for _, m in model.named_modules() if hasattr(m, "lora_A") and "x" in m.lora_A)
                   for model in (xl_pipe.unet, xl_pipe.text_encoder, xl_pipe.text_encoder_2))
    assert counts == (n_unet_xl, n_te1, n_te2), (counts, (n_unet_xl, n_te1, n_te2))
    ref["sdxl.scale_1"] = draw(xl_pipe, skip=("seed", "negative_prompt"))
    assert (ref["sdxl.scale_1"] - ref["sdxl.none"]).abs().max() > 0.1
    save_peft(xl_pipe, "x", ("unet", "text_encoder", "text_encoder_2"), SDXL_PEFT)
    xl_pipe.unload_lora_weights()
    xl_pipe.load_lora_weights(SDXL_PEFT, adapter_name="y")
    xl_again = (draw(xl_pipe, skip=("seed", "negative_prompt")) - ref["sdxl.scale_1"]).abs().max().item()
    assert xl_again < 2 / 255, xl_again

    ref = {k: v.contiguous() for k, v in ref.items()}
    base.save_safetensors(ref, REFERENCE, metadata={
        "format": "pt", "generator": "tools/make_lora_fixtures.py",
        "request": json.dumps(REQUEST, sort_keys=True), "scales": json.dumps(SCALES, sort_keys=True),
        "versions": json.dumps({"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "peft": peft.__version__}, sort_keys=True)})
    for p in (KOHYA, PEFT, SDXL_KOHYA, SDXL_PEFT, REFERENCE):
        os.chmod(p, 0o644)
        print(f"  {os.path.relpath(p, base.REPO):45s} {os.path.getsize(p):>10,} bytes")
    print(f"adapted: {len(unet_layers)} UNet layers, {len(text_layers)} text-encoder layers, rank {RANK}")
    print(f"PEFT file vs kohya file in diffusers: largest difference {peft_vs_kohya:.2e}")
    for k in ("scale_1", "scale_0_6"):
        print(f"image.{k} vs image.none: largest difference {(ref['image.' + k] - ref['image.none']).abs().max():.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
