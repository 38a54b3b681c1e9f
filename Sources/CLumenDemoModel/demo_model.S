/* The demo model (Models/demo) inside the binary: each file's bytes between two labels.
 * The assembler finds the files through the target's header search path (Package.swift:
 * ../../Models/demo). SwiftPM does not track .incbin inputs: after replacing Models/demo, touch
 * this file (or clean the build) so that the new weights are embedded.
 * Built with LUMEN_NO_DEMO_MODEL (Package.swift) nothing is embedded. */
#ifndef LUMEN_NO_DEMO_MODEL
    .section .rodata

    .balign 64
    .global lumen_demo_file_0_start
    .global lumen_demo_file_0_end
    .hidden lumen_demo_file_0_start
    .hidden lumen_demo_file_0_end
lumen_demo_file_0_start:
    .incbin "model_index.json"
lumen_demo_file_0_end:
    .balign 64
    .global lumen_demo_file_1_start
    .global lumen_demo_file_1_end
    .hidden lumen_demo_file_1_start
    .hidden lumen_demo_file_1_end
lumen_demo_file_1_start:
    .incbin "scheduler/scheduler_config.json"
lumen_demo_file_1_end:
    .balign 64
    .global lumen_demo_file_2_start
    .global lumen_demo_file_2_end
    .hidden lumen_demo_file_2_start
    .hidden lumen_demo_file_2_end
lumen_demo_file_2_start:
    .incbin "text_encoder/config.json"
lumen_demo_file_2_end:
    .balign 64
    .global lumen_demo_file_3_start
    .global lumen_demo_file_3_end
    .hidden lumen_demo_file_3_start
    .hidden lumen_demo_file_3_end
lumen_demo_file_3_start:
    .incbin "text_encoder/model.safetensors"
lumen_demo_file_3_end:
    .balign 64
    .global lumen_demo_file_4_start
    .global lumen_demo_file_4_end
    .hidden lumen_demo_file_4_start
    .hidden lumen_demo_file_4_end
lumen_demo_file_4_start:
    .incbin "tokenizer/merges.txt"
lumen_demo_file_4_end:
    .balign 64
    .global lumen_demo_file_5_start
    .global lumen_demo_file_5_end
    .hidden lumen_demo_file_5_start
    .hidden lumen_demo_file_5_end
lumen_demo_file_5_start:
    .incbin "tokenizer/special_tokens_map.json"
lumen_demo_file_5_end:
    .balign 64
    .global lumen_demo_file_6_start
    .global lumen_demo_file_6_end
    .hidden lumen_demo_file_6_start
    .hidden lumen_demo_file_6_end
lumen_demo_file_6_start:
    .incbin "tokenizer/tokenizer_config.json"
lumen_demo_file_6_end:
    .balign 64
    .global lumen_demo_file_7_start
    .global lumen_demo_file_7_end
    .hidden lumen_demo_file_7_start
    .hidden lumen_demo_file_7_end
lumen_demo_file_7_start:
    .incbin "tokenizer/vocab.json"
lumen_demo_file_7_end:
    .balign 64
    .global lumen_demo_file_8_start
    .global lumen_demo_file_8_end
    .hidden lumen_demo_file_8_start
    .hidden lumen_demo_file_8_end
lumen_demo_file_8_start:
    .incbin "unet/config.json"
lumen_demo_file_8_end:
    .balign 64
    .global lumen_demo_file_9_start
    .global lumen_demo_file_9_end
    .hidden lumen_demo_file_9_start
    .hidden lumen_demo_file_9_end
lumen_demo_file_9_start:
    .incbin "unet/diffusion_pytorch_model.safetensors"
lumen_demo_file_9_end:
    .balign 64
    .global lumen_demo_file_10_start
    .global lumen_demo_file_10_end
    .hidden lumen_demo_file_10_start
    .hidden lumen_demo_file_10_end
lumen_demo_file_10_start:
    .incbin "vae/config.json"
lumen_demo_file_10_end:
    .balign 64
    .global lumen_demo_file_11_start
    .global lumen_demo_file_11_end
    .hidden lumen_demo_file_11_start
    .hidden lumen_demo_file_11_end
lumen_demo_file_11_start:
    .incbin "vae/diffusion_pytorch_model.safetensors"
lumen_demo_file_11_end:
    .balign 64
    .global lumen_demo_file_12_start
    .global lumen_demo_file_12_end
    .hidden lumen_demo_file_12_start
    .hidden lumen_demo_file_12_end
lumen_demo_file_12_start:
    .incbin "training_info.json"
lumen_demo_file_12_end:
    .balign 64
    .global lumen_demo_file_13_start
    .global lumen_demo_file_13_end
    .hidden lumen_demo_file_13_start
    .hidden lumen_demo_file_13_end
lumen_demo_file_13_start:
    .incbin "eval_prompts.tsv"
lumen_demo_file_13_end:
#endif

    .section .note.GNU-stack,"",@progbits
