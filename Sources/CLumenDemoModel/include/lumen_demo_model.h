#ifndef LUMEN_DEMO_MODEL_H
#define LUMEN_DEMO_MODEL_H
#include <stddef.h>

/* One file of the embedded demo model: its path inside the model folder and its bytes, from
   start up to (not including) end. */
typedef struct {
    const char *path;
    const unsigned char *start;
    const unsigned char *end;
} lumen_embedded_file;

/* The files of the demo model built into this binary (Models/demo at build time). */
const lumen_embedded_file *lumen_demo_model_files(size_t *count);

#endif
