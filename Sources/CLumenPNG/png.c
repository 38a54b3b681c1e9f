#include "lumen_png.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

typedef struct {
    char *error;
    size_t errorSize;
} lumen_png_context;

static void on_error(png_structp png, png_const_charp message) {
    lumen_png_context *ctx = png_get_error_ptr(png);
    if (ctx && ctx->error && ctx->errorSize) snprintf(ctx->error, ctx->errorSize, "%s", message);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;  // warnings (e.g. an unknown chunk) do not stop reading
}

int lumen_png_write_rgb8(int fd, const uint8_t *rgb, uint32_t width, uint32_t height,
                         const char *const *keys, const char *const *values, const int *utf8, int textCount,
                         char *error, size_t errorSize) {
    lumen_png_context ctx = {error, errorSize};
    int own = dup(fd);
    FILE *f = own >= 0 ? fdopen(own, "wb") : NULL;
    if (!f) {
        snprintf(error, errorSize, "cannot write: %s", strerror(errno));
        if (own >= 0) close(own);
        return -1;
    }
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_textp text = textCount > 0 ? calloc((size_t)textCount, sizeof(png_text)) : NULL;
    png_bytep *rows = malloc(sizeof(png_bytep) * (height ? height : 1));
    if (!png || !info || !rows || (textCount > 0 && !text)) {
        snprintf(error, errorSize, "out of memory");
        if (png) png_destroy_write_struct(&png, info ? &info : NULL);
        free(text);
        free(rows);
        fclose(f);
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(text);
        free(rows);
        fclose(f);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, width, height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (int i = 0; i < textCount; i++) {
        // tEXt holds Latin-1 only; other text goes in an uncompressed iTXt chunk (UTF-8), as A1111 does.
        text[i].compression = utf8 && utf8[i] ? PNG_ITXT_COMPRESSION_NONE : PNG_TEXT_COMPRESSION_NONE;
        text[i].key = (png_charp)keys[i];
        text[i].text = (png_charp)values[i];
        text[i].text_length = strlen(values[i]);
        text[i].lang = NULL;
        text[i].lang_key = NULL;
    }
    if (textCount > 0) png_set_text(png, info, text, textCount);
    png_write_info(png, info);
    for (uint32_t y = 0; y < height; y++) rows[y] = (png_bytep)(rgb + (size_t)y * width * 3);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(text);
    free(rows);
    if (fflush(f) != 0 || ferror(f)) {
        snprintf(error, errorSize, "write failed: %s", strerror(errno));
        fclose(f);
        return -1;
    }
    if (fclose(f) != 0) {
        snprintf(error, errorSize, "write failed: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/// Copies the image's text chunks into `out` (best effort: a chunk that does not fit in memory
/// is left out, the pixels matter more).
static void copy_text(png_structp png, png_infop info, lumen_png_image *out) {
    png_textp text = NULL;
    int count = png_get_text(png, info, &text, NULL);
    if (count <= 0 || !text) return;
    out->textKeys = calloc((size_t)count, sizeof(char *));
    out->textValues = calloc((size_t)count, sizeof(char *));
    out->textUTF8 = calloc((size_t)count, sizeof(int));
    if (!out->textKeys || !out->textValues || !out->textUTF8) return;
    for (int i = 0; i < count; i++) {
        int itxt = text[i].compression == PNG_ITXT_COMPRESSION_NONE || text[i].compression == PNG_ITXT_COMPRESSION_zTXt;
        size_t n = itxt ? text[i].itxt_length : text[i].text_length;
        if (!text[i].key || (n > 0 && !text[i].text)) continue;
        char *key = strdup(text[i].key), *value = malloc(n + 1);
        if (!key || !value) {
            free(key);
            free(value);
            continue;
        }
        if (n > 0) memcpy(value, text[i].text, n);
        value[n] = 0;
        out->textKeys[out->textCount] = key;
        out->textValues[out->textCount] = value;
        out->textUTF8[out->textCount] = itxt;
        out->textCount++;
    }
}

int lumen_png_read(int fd, uint64_t maxPixels, lumen_png_image *out, char *error, size_t errorSize) {
    lumen_png_context ctx = {error, errorSize};
    memset(out, 0, sizeof(*out));
    int own = dup(fd);
    FILE *f = own >= 0 ? fdopen(own, "rb") : NULL;
    if (!f) {
        snprintf(error, errorSize, "cannot open: %s", strerror(errno));
        if (own >= 0) close(own);
        return -1;
    }
    unsigned char sig[8];
    if (fread(sig, 1, 8, f) != 8 || png_sig_cmp(sig, 0, 8) != 0) {
        snprintf(error, errorSize, "not a PNG file (bad signature)");
        fclose(f);
        return -1;
    }
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        snprintf(error, errorSize, "out of memory");
        if (png) png_destroy_read_struct(&png, NULL, NULL);
        fclose(f);
        return -1;
    }
    // Assigned after setjmp and read after a longjmp: volatile, or their values are indeterminate.
    uint16_t *volatile pixels = NULL;
    uint16_t *volatile alpha = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(alpha);
        free(rows);
        lumen_png_free(out);
        fclose(f);
        return -1;
    }
    png_init_io(png, f);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    if ((uint64_t)w * h > maxPixels) {
        snprintf(error, errorSize, "image is %ux%u, larger than the %llu pixels allowed", w, h, (unsigned long long)maxPixels);
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        return -1;
    }
    // Normalise every layout to 16-bit RGB, or RGBA when the file has alpha (split below).
    int hasAlpha = (type & PNG_COLOR_MASK_ALPHA) != 0 || png_get_valid(png, info, PNG_INFO_tRNS);
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (!hasAlpha) png_set_strip_alpha(png);
    if (depth < 16) png_set_expand_16(png);
    png_set_swap(png);  // host (little-endian) order for 16-bit samples
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = hasAlpha ? 4 : 3;
    if (png_get_channels(png, info) != channels || png_get_bit_depth(png, info) != 16) {
        snprintf(error, errorSize, "unexpected layout after conversion");
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        return -1;
    }
    size_t count = (size_t)w * h;
    pixels = malloc(count * channels * sizeof(uint16_t) + 1);
    if (hasAlpha) alpha = malloc(count * sizeof(uint16_t) + 1);
    rows = malloc(sizeof(png_bytep) * (h ? h : 1));
    if (!pixels || !rows || (hasAlpha && !alpha)) {
        snprintf(error, errorSize, "out of memory for a %ux%u image", w, h);
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(alpha);
        free(rows);
        fclose(f);
        return -1;
    }
    for (uint32_t y = 0; y < h; y++) rows[y] = (png_bytep)(pixels + (size_t)y * w * channels);
    png_read_image(png, rows);
    png_read_end(png, info);  // into `info`: text chunks after the pixels join those before
    copy_text(png, info, out);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    fclose(f);
    if (hasAlpha) {
        // RGBA to RGB in place (each pixel moves to a lower or equal index) and alpha apart.
        uint16_t *p = pixels;
        for (size_t i = 0; i < count; i++) {
            uint16_t r = p[4 * i], g = p[4 * i + 1], b = p[4 * i + 2];
            alpha[i] = p[4 * i + 3];
            p[3 * i] = r;
            p[3 * i + 1] = g;
            p[3 * i + 2] = b;
        }
    }
    out->width = w;
    out->height = h;
    out->rgb = pixels;
    out->alpha = alpha;
    out->sourceBitDepth = depth;
    out->sourceColorType = type;
    return 0;
}

void lumen_png_free(lumen_png_image *image) {
    free(image->rgb);
    image->rgb = NULL;
    free(image->alpha);
    image->alpha = NULL;
    for (int i = 0; i < image->textCount; i++) {
        free(image->textKeys[i]);
        free(image->textValues[i]);
    }
    free(image->textKeys);
    free(image->textValues);
    free(image->textUTF8);
    image->textKeys = NULL;
    image->textValues = NULL;
    image->textUTF8 = NULL;
    image->textCount = 0;
}
