#!/usr/bin/env python3
"""Checks, with diffusers/transformers as the oracle, every model-file variant that
Tests/LumenTests/ModelVariantTests.swift writes at run time from the committed tiny model.

Run by hand (never in CI), after tools/make_fixtures.py, from the repository root:

    HF_HUB_OFFLINE=1 .venv-fixtures/bin/python tools/make_variant_fixtures.py

The variants only rename keys, rename files, change the dtype or add/drop tensors that the
model does not use, so the Swift test makes them itself (with SafetensorsWriter, into a temporary
folder) instead of committing copies of the weights. What has to be true for that to be a fair
test is that each renaming rule is one diffusers/transformers accept, giving the same model.
This script applies the same rules to the same files (into a temporary folder), loads each
variant with diffusers' / transformers' own loaders (from_pretrained, from_single_file, the
fp16 `variant=`), and asserts that:

  * the loaded state dicts equal the canonical fixture's exactly (bf16: the bf16-rounded values),
  * the generated image (diffusers' StableDiffusionPipeline with the request below) equals the
    canonical folder's image exactly (bf16: equals the image of the same values in f32),

then records what it checked, per variant name, in Tests/Fixtures/variant-checks.json (the Swift
test asserts each variant it builds is listed there), and writes
Tests/Fixtures/variant-reference.safetensors: diffusers' uint8 image of the canonical folder
and of the folder with the other VAE, for the same request, so that the Swift test also compares
Lumen's canonical image with diffusers'.

Request (the Swift test's): prompt "a photo of an astronaut riding a horse on mars", negative
"blurry", 3 steps, guidance 7.5, 64x64, seed 42, the folder's PNDM scheduler.

The "other VAE" is the tiny VAE with decoder.conv_out.bias shifted by +0.5, -0.25, +0.5 (f32 sum
rounded to f16), so that a --vae that was silently ignored shows.
"""

import json
import os
import shutil
import sys
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from diffusers import AutoencoderKL, StableDiffusionPipeline  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "Tests", "Fixtures")
FOLDER = os.path.join(FIXTURES, "tiny-sd")
SINGLE = os.path.join(FIXTURES, "tiny-sd.safetensors")
CHECKS = os.path.join(FIXTURES, "variant-checks.json")
REFERENCE = os.path.join(FIXTURES, "variant-reference.safetensors")

PINNED = {"torch": "2.15.0", "diffusers": "0.42.1", "transformers": "5.23.0", "safetensors": "0.8.0"}
REQUEST = dict(prompt="a photo of an astronaut riding a horse on mars", negative_prompt="blurry",
               num_inference_steps=3, guidance_scale=7.5, width=64, height=64)
SEED = 42
TEXT = "cond_stage_model.transformer.text_model."
SHIFT = torch.tensor([0.5, -0.25, 0.5])
NETWORKS = (("text_encoder", "model"), ("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"))


def image(pipe):
    pipe.set_progress_bar_config(disable=True)
    out = pipe(**REQUEST, generator=torch.Generator("cpu").manual_seed(SEED), output_type="np").images
    return (out * 255).round().astype(np.uint8)


def load_pipe(path, **kwargs):
    return StableDiffusionPipeline.from_pretrained(path, dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True, **kwargs)


def single_pipe(path):
    return StableDiffusionPipeline.from_single_file(path, config=FOLDER, local_files_only=True, torch_dtype=torch.float32,
                                                    safety_checker=None, requires_safety_checker=False)


def floats(state):
    """Floating-point entries, names without transformers' text_model. level, as f32."""
    return {k.removeprefix("text_model."): v.float() for k, v in state.items() if v.is_floating_point()}


def assert_state(what, got, want):
    got, want = floats(got), floats(want)
    assert got.keys() == want.keys(), (what, sorted(got.keys() ^ want.keys())[:8])
    for k in want:
        assert torch.equal(got[k], want[k]), (what, k)


def rewrite(source, target, rename=lambda k: k, convert=lambda t: t, extra=None):
    """The Swift test's rewrite: rename (None drops), convert floating-point tensors, add extra."""
    out = {}
    for k, v in load_file(source).items():
        name = rename(k)
        if name is not None:
            out[name] = convert(v).contiguous() if v.is_floating_point() else v
    out.update(extra or {})
    save_file(out, target)


def save_sorted(tensors, path, metadata):
    """save_file with the header's keys sorted, so that a re-run writes the same bytes (the
    library writes __metadata__ in hash order)."""
    save_file(tensors, path, metadata=metadata)
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    text = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + blob[8 + n:])


def copy_folder(tmp, name):
    path = os.path.join(tmp, name)
    shutil.copytree(FOLDER, path)
    return path


def shifted(t):
    return (t.float() + SHIFT[: t.numel()]).to(t.dtype)


def main():
    for name, want in PINNED.items():
        have = {"torch": torch, "diffusers": diffusers, "transformers": transformers, "safetensors": safetensors}[name].__version__
        assert have.split("+")[0] == want, f"{name} {have}, pinned {want}: see tools/requirements-fixtures.txt"
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    checks = {}
    tmp = tempfile.mkdtemp(prefix="lumen-variants-")
    try:
        canonical_pipe = load_pipe(FOLDER)
        canonical = image(canonical_pipe)
        originals = {n: canonical_pipe.components[n].state_dict() for n in ("text_encoder", "unet", "vae")}
        position_ids = load_file(SINGLE)[TEXT + "embeddings.position_ids"]
        assert position_ids.dtype == torch.int64 and position_ids.shape == (1, 77)

        def same_image(what, pipe, expected=canonical):
            got = image(pipe)
            assert np.array_equal(got, expected), (what, int(np.abs(got.astype(int) - expected.astype(int)).max()))

        # -- text encoder names ----------------------------------------------------------------
        for name, prefix, ids in (("text-model-prefix-position-ids", True, True), ("text-model-prefix", True, False),
                                  ("no-prefix-position-ids", False, True)):
            path = copy_folder(tmp, name)
            weights = os.path.join(path, "text_encoder", "model.safetensors")
            extra = {("text_model." if prefix else "") + "embeddings.position_ids": position_ids} if ids else None
            rewrite(weights, weights, rename=(lambda k: "text_model." + k) if prefix else (lambda k: k), extra=extra)
            model, info = CLIPTextModel.from_pretrained(os.path.join(path, "text_encoder"), output_loading_info=True,
                                                        local_files_only=True)
            assert not info["missing_keys"] and not info["mismatched_keys"], (name, info)
            assert_state(name, model.state_dict(), originals["text_encoder"])
            same_image(name, load_pipe(path))
            checks[name] = ("CLIPTextModel.from_pretrained: no missing keys, unexpected "
                            f"{sorted(info['unexpected_keys'])}; state dict equal; pipeline image equal")

        # -- tokenizer.json only ---------------------------------------------------------------
        path = os.path.join(tmp, "tok-saved")
        CLIPTokenizer.from_pretrained(os.path.join(FOLDER, "tokenizer"), local_files_only=True).save_pretrained(path)
        written = sorted(os.listdir(path))
        assert "tokenizer.json" in written and "vocab.json" not in written, written
        saved = json.load(open(os.path.join(path, "tokenizer.json"), encoding="utf-8"))
        vocab = json.load(open(os.path.join(FOLDER, "tokenizer", "vocab.json"), encoding="utf-8"))
        merges = [line.split() for line in open(os.path.join(FOLDER, "tokenizer", "merges.txt"), encoding="utf-8").read().split("\n")[1:] if line]
        assert saved["model"]["type"] == "BPE" and saved["model"]["vocab"] == vocab, "tokenizer.json vocab"
        assert [list(m) for m in saved["model"]["merges"]] == merges, "tokenizer.json merges (pairs)"
        assert saved["model"]["end_of_word_suffix"] == "</w>"
        assert {(t["id"], t["content"]) for t in saved["added_tokens"]} >= {(49406, "<|startoftext|>"), (49407, "<|endoftext|>")}
        model = copy_folder(tmp, "tokenizer-json-only")
        shutil.rmtree(os.path.join(model, "tokenizer"))
        shutil.copytree(path, os.path.join(model, "tokenizer"))
        same_image("tokenizer-json-only", load_pipe(model))
        checks["tokenizer-json-only"] = (f"transformers 5 save_pretrained writes {written}; its tokenizer.json model.vocab equals "
                                         "vocab.json and model.merges (pairs) equal merges.txt, end_of_word_suffix </w>, "
                                         "added tokens 49406/49407 (what the Swift test writes); pipeline image equal")

        # -- fp16 variant files ----------------------------------------------------------------
        path = copy_folder(tmp, "fp16-variant-only")
        for sub, base in NETWORKS:
            os.rename(os.path.join(path, sub, base + ".safetensors"), os.path.join(path, sub, base + ".fp16.safetensors"))
        pipe = load_pipe(path, variant="fp16")
        for n in originals:
            assert_state("fp16-variant-only " + n, pipe.components[n].state_dict(), originals[n])
        same_image("fp16-variant-only", pipe)
        checks["fp16-variant-only"] = "from_pretrained(variant='fp16'): state dicts equal; pipeline image equal"

        path = copy_folder(tmp, "plain-f32-and-fp16-variant")
        for sub, base in NETWORKS:
            plain = os.path.join(path, sub, base + ".safetensors")
            half = os.path.join(path, sub, base + ".fp16.safetensors")
            os.rename(plain, half)
            rewrite(half, plain, convert=lambda t: t.float())
        for variant in (None, "fp16"):
            pipe = load_pipe(path, variant=variant)
            for n in originals:
                assert_state(f"plain+fp16 ({variant}) {n}", pipe.components[n].state_dict(), originals[n])
            same_image(f"plain+fp16 ({variant})", pipe)
        checks["plain-f32-and-fp16-variant"] = ("from_pretrained() reads the f32 plain files, from_pretrained(variant='fp16') "
                                                "the fp16 ones: state dicts equal; both pipeline images equal")

        # -- VAE config without scaling_factor -------------------------------------------------
        path = copy_folder(tmp, "vae-config-without-scaling-factor")
        config_path = os.path.join(path, "vae", "config.json")
        config = json.load(open(config_path))
        del config["scaling_factor"]
        json.dump(config, open(config_path, "w"))
        pipe = load_pipe(path)
        assert pipe.vae.config.scaling_factor == 0.18215
        same_image("vae-config-without-scaling-factor", pipe)
        checks["vae-config-without-scaling-factor"] = "AutoencoderKL config defaults scaling_factor to 0.18215; pipeline image equal"

        # -- single files ----------------------------------------------------------------------
        ema = {"model_ema.decay": torch.tensor([0.9999]), "model_ema.num_updates": torch.tensor(12345, dtype=torch.int32),
               "model_ema.diffusion_modelinput_blocks00weight": (torch.arange(1152) % 7 - 3).reshape(32, 4, 3, 3).half(),
               "model_ema.diffusion_modelout2bias": torch.tensor([5.0, -5.0, 5.0, -5.0]).half()}
        older = lambda k: "cond_stage_model.transformer." + k[len(TEXT):] if k.startswith(TEXT) else k  # noqa: E731
        cases = (("single-file-transformer-names", older, None, None),
                 ("single-file-no-position-ids", lambda k: None if k.endswith("position_ids") else k, None, None),
                 ("single-file-model-ema", lambda k: k, None, ema),
                 ("single-file-f32", lambda k: k, torch.float32, None))
        for name, rename, dtype, extra in cases:
            path = os.path.join(tmp, name + ".safetensors")
            rewrite(SINGLE, path, rename=rename, convert=(lambda t: t.to(dtype)) if dtype else (lambda t: t), extra=extra)
            if name == "single-file-transformer-names":
                # diffusers 0.42.1's from_single_file finds the CLIP text encoder by the key
                # cond_stage_model.transformer.text_model.embeddings.position_embedding.weight
                # only, so it reports this file's text encoder as missing. Its own conversion
                # (convert_ldm_clip_checkpoint: strip cond_stage_model.transformer.) still
                # gives names CLIPTextModel loads strictly: check that, then the pipeline with
                # that text encoder passed in.
                try:
                    single_pipe(path)
                    refused = "from_single_file loads it"
                except diffusers.loaders.single_file_utils.SingleFileComponentError as e:
                    refused = "from_single_file refuses it (" + str(e).split(".")[0] + ")"
                from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
                converted = convert_ldm_clip_checkpoint(load_file(path))
                text_encoder = CLIPTextModel(CLIPTextModel.config_class.from_pretrained(os.path.join(FOLDER, "text_encoder")))
                text_encoder.load_state_dict({k: v for k, v in converted.items() if v.is_floating_point()}, strict=True)
                text_encoder = text_encoder.float().eval()
                pipe = StableDiffusionPipeline.from_single_file(
                    path, config=FOLDER, local_files_only=True, torch_dtype=torch.float32, safety_checker=None,
                    requires_safety_checker=False, text_encoder=text_encoder)
                for n in originals:
                    assert_state(f"{name} {n}", pipe.components[n].state_dict(), originals[n])
                same_image(name, pipe)
                checks[name] = (f"diffusers {diffusers.__version__}: {refused}; its convert_ldm_clip_checkpoint output loads into "
                                "CLIPTextModel with load_state_dict(strict=True), and from_single_file(text_encoder=that): "
                                "state dicts equal; pipeline image equal")
                continue
            pipe = single_pipe(path)
            for n in originals:
                assert_state(f"{name} {n}", pipe.components[n].state_dict(), originals[n])
            same_image(name, pipe)
            checks[name] = "StableDiffusionPipeline.from_single_file(config=tiny-sd): state dicts equal; pipeline image equal"

        bf16 = os.path.join(tmp, "bf16.safetensors")
        as_f32 = os.path.join(tmp, "bf16-as-f32.safetensors")
        rewrite(SINGLE, bf16, convert=lambda t: t.to(torch.bfloat16))
        rewrite(bf16, as_f32, convert=lambda t: t.float())
        pipe, pipe32 = single_pipe(bf16), single_pipe(as_f32)
        for n in originals:
            want = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in originals[n].items()}
            assert_state(f"bf16 {n}", pipe.components[n].state_dict(), want)
        same_image("single-file-bf16", pipe, image(pipe32))
        checks["single-file-bf16"] = ("from_single_file: state dicts equal the bf16-rounded weights; pipeline image equals that of "
                                      "the same values stored as f32")

        # -- a separate VAE --------------------------------------------------------------------
        reference = copy_folder(tmp, "reference")
        vae_file = os.path.join(reference, "vae", "diffusion_pytorch_model.safetensors")
        rewrite(vae_file, vae_file, convert=lambda t: t)
        state = load_file(vae_file)
        state["decoder.conv_out.bias"] = shifted(state["decoder.conv_out.bias"])
        save_file(state, vae_file)
        reference_pipe = load_pipe(reference)
        other = image(reference_pipe)
        assert not np.array_equal(other, canonical), "the other VAE must change the image"
        other_state = reference_pipe.vae.state_dict()

        single = load_file(SINGLE)
        vae_part = {k: v for k, v in single.items() if k.startswith("first_stage_model.")}
        vae_part["first_stage_model.decoder.conv_out.bias"] = shifted(vae_part["first_stage_model.decoder.conv_out.bias"])
        bare = os.path.join(tmp, "vae-ft.safetensors")
        prefixed = os.path.join(tmp, "vae-prefixed.safetensors")
        save_file({k.removeprefix("first_stage_model."): v for k, v in vae_part.items()}, bare)
        save_file(vae_part, prefixed)
        for name, path in (("vae-single-file-original-names", bare), ("vae-single-file-first-stage-model", prefixed)):
            vae = AutoencoderKL.from_single_file(path, config=FOLDER, subfolder="vae", local_files_only=True,
                                                 torch_dtype=torch.float32)
            assert_state(name, vae.state_dict(), other_state)
            same_image(name, load_pipe(FOLDER, vae=vae), other)
            checks[name] = ("AutoencoderKL.from_single_file(config=tiny-sd, subfolder='vae'): state dict equals the other VAE's; "
                            "pipeline with vae= gives the image of the folder whose own VAE it is")
        vae = AutoencoderKL.from_pretrained(os.path.join(reference, "vae"), local_files_only=True, torch_dtype=torch.float32)
        same_image("vae-diffusers-folder", load_pipe(FOLDER, vae=vae), other)
        checks["vae-diffusers-folder"] = "AutoencoderKL.from_pretrained(vae folder); pipeline with vae= gives the other VAE's image"
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(os.path.join(reference, "vae")))
        vae.load_state_dict(load_file(vae_file), strict=True)
        same_image("vae-single-file-diffusers-names", load_pipe(FOLDER, vae=vae.float().eval()), other)
        checks["vae-single-file-diffusers-names"] = ("the vae folder's safetensors file on its own: load_state_dict(strict=True) "
                                                     "into the config's AutoencoderKL; pipeline image equal")

        versions = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                    "safetensors": safetensors.__version__, "numpy": np.__version__}
        record = {"generator": "tools/make_variant_fixtures.py", "versions": versions,
                  "request": dict(REQUEST, seed=SEED, scheduler="PNDM (the folder's)"), "checks": checks}
        with open(CHECKS, "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.write("\n")
        save_sorted({"canonical.image": torch.from_numpy(canonical[0]).contiguous(),
                     "other-vae.image": torch.from_numpy(other[0]).contiguous()}, REFERENCE,
                    metadata={"generator": "tools/make_variant_fixtures.py", "request": json.dumps(record["request"], sort_keys=True)})
        for p in (CHECKS, REFERENCE):
            os.chmod(p, 0o644)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, what in sorted(checks.items()):
        print(f"{name:36s} {what}")
    print(f"\nwrote {os.path.relpath(CHECKS, REPO)} ({os.path.getsize(CHECKS):,} bytes) and "
          f"{os.path.relpath(REFERENCE, REPO)} ({os.path.getsize(REFERENCE):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
