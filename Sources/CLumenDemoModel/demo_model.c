#include "lumen_demo_model.h"

#ifndef LUMEN_NO_DEMO_MODEL

extern const unsigned char lumen_demo_file_0_start[], lumen_demo_file_0_end[];
extern const unsigned char lumen_demo_file_1_start[], lumen_demo_file_1_end[];
extern const unsigned char lumen_demo_file_2_start[], lumen_demo_file_2_end[];
extern const unsigned char lumen_demo_file_3_start[], lumen_demo_file_3_end[];
extern const unsigned char lumen_demo_file_4_start[], lumen_demo_file_4_end[];
extern const unsigned char lumen_demo_file_5_start[], lumen_demo_file_5_end[];
extern const unsigned char lumen_demo_file_6_start[], lumen_demo_file_6_end[];
extern const unsigned char lumen_demo_file_7_start[], lumen_demo_file_7_end[];
extern const unsigned char lumen_demo_file_8_start[], lumen_demo_file_8_end[];
extern const unsigned char lumen_demo_file_9_start[], lumen_demo_file_9_end[];
extern const unsigned char lumen_demo_file_10_start[], lumen_demo_file_10_end[];
extern const unsigned char lumen_demo_file_11_start[], lumen_demo_file_11_end[];
extern const unsigned char lumen_demo_file_12_start[], lumen_demo_file_12_end[];
extern const unsigned char lumen_demo_file_13_start[], lumen_demo_file_13_end[];

static const lumen_embedded_file files[] = {
    {"model_index.json", lumen_demo_file_0_start, lumen_demo_file_0_end},
    {"scheduler/scheduler_config.json", lumen_demo_file_1_start, lumen_demo_file_1_end},
    {"text_encoder/config.json", lumen_demo_file_2_start, lumen_demo_file_2_end},
    {"text_encoder/model.safetensors", lumen_demo_file_3_start, lumen_demo_file_3_end},
    {"tokenizer/merges.txt", lumen_demo_file_4_start, lumen_demo_file_4_end},
    {"tokenizer/special_tokens_map.json", lumen_demo_file_5_start, lumen_demo_file_5_end},
    {"tokenizer/tokenizer_config.json", lumen_demo_file_6_start, lumen_demo_file_6_end},
    {"tokenizer/vocab.json", lumen_demo_file_7_start, lumen_demo_file_7_end},
    {"unet/config.json", lumen_demo_file_8_start, lumen_demo_file_8_end},
    {"unet/diffusion_pytorch_model.safetensors", lumen_demo_file_9_start, lumen_demo_file_9_end},
    {"vae/config.json", lumen_demo_file_10_start, lumen_demo_file_10_end},
    {"vae/diffusion_pytorch_model.safetensors", lumen_demo_file_11_start, lumen_demo_file_11_end},
    {"training_info.json", lumen_demo_file_12_start, lumen_demo_file_12_end},
    {"eval_prompts.tsv", lumen_demo_file_13_start, lumen_demo_file_13_end},
};

const lumen_embedded_file *lumen_demo_model_files(size_t *count) {
    *count = sizeof files / sizeof files[0];
    return files;
}
#else
/* Built without the demo model (LUMEN_NO_DEMO_MODEL): no files. */
const lumen_embedded_file *lumen_demo_model_files(size_t *count) {
    *count = 0;
    return NULL;
}
#endif
