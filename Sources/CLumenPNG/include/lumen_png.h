// PNG reading and writing through libpng. libpng reports errors with longjmp, which must never
// cross into Swift, so every libpng call stays in this C file and errors come back as a message.
#ifndef LUMEN_PNG_H
#define LUMEN_PNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Writes an 8-bit RGB PNG (rows top to bottom, 3 bytes a pixel) to the open descriptor `fd`
/// (which stays open: the caller syncs, closes and renames it) with text chunks keys[i] =
/// values[i]: tEXt (Latin-1 bytes) where utf8[i] is 0, uncompressed iTXt (UTF-8) otherwise; `utf8`
/// may be NULL. Returns 0, or -1 with `error` filled.
int lumen_png_write_rgb8(int fd, const uint8_t *rgb, uint32_t width, uint32_t height,
                         const char *const *keys, const char *const *values, const int *utf8, int textCount,
                         char *error, size_t errorSize);

/// An image read from a PNG: RGB, 16 bits a channel (8-bit files are scaled by 257, so that
/// value / 65535 is the same fraction for both depths). Grey is copied to the three channels,
/// palettes are expanded, alpha is dropped from `rgb` (as PIL's convert("RGB")) and kept apart in
/// `alpha` when the file has it (an alpha channel or a tRNS chunk).
typedef struct {
    uint32_t width;
    uint32_t height;
    uint16_t *rgb;          // width * height * 3, free with lumen_png_free
    int sourceBitDepth;     // 1, 2, 4, 8 or 16
    int sourceColorType;    // PNG_COLOR_TYPE_* of the file
    int textCount;          // text chunks (tEXt, zTXt, iTXt), before and after the pixels
    char **textKeys;
    char **textValues;      // Latin-1 (tEXt, zTXt) or UTF-8 (iTXt), NUL-terminated
    int *textUTF8;          // 1 where the chunk was iTXt
    uint16_t *alpha;        // width * height, 16 bits (8-bit files scaled by 257); NULL without alpha
} lumen_png_image;

/// Reads any PNG from the open descriptor `fd` (which stays open). Returns 0, or -1 with `error`
/// filled. Images larger than `maxPixels` are refused before their pixels are decoded.
int lumen_png_read(int fd, uint64_t maxPixels, lumen_png_image *out, char *error, size_t errorSize);
void lumen_png_free(lumen_png_image *image);

#ifdef __cplusplus
}
#endif

#endif
