/* An empty ICU data package in place of the 34 MB one a static Foundation links
 * (lib_FoundationICU.a, member icu_packaged_data.cpp.o, which defines nothing but icudt76_dat).
 * Built only with LUMEN_NO_ICU_DATA=1 (Package.swift), for the packed GPU-check binary: the
 * folder carried to a GPU machine must stay small, and Lumen calls no locale-dependent
 * Foundation API (number and date formatting by locale, collation). An object on the link line
 * that defines icudt76_dat keeps the archive's member out; ICU then finds a valid package with
 * no entries and answers U_MISSING_RESOURCE_ERROR to any lookup instead of reading data.
 *
 * Layout (ICU's DataHeader, then the "CmnD" table of contents): headerSize 32, magic 0xda 0x27;
 * UDataInfo: size 20, little-endian, ASCII family, sizeof(UChar) 2, format "CmnD" version 1;
 * then a table of zero entries. The symbol name follows the ICU version the toolchain bundles
 * (Swift 6.3: ICU 76); with another version the stub is simply unused and the binary is larger. */
#include "lumen_no_icu_data.h"

__attribute__((aligned(16), used))
const unsigned char icudt76_dat[48] = {
    0x20, 0x00, 0xda, 0x27,                  /* headerSize, magic */
    0x14, 0x00, 0x00, 0x00,                  /* info.size, reservedWord */
    0x00, 0x00, 0x02, 0x00,                  /* isBigEndian, charsetFamily, sizeofUChar, reserved */
    'C', 'm', 'n', 'D',                      /* dataFormat */
    0x01, 0x00, 0x00, 0x00,                  /* formatVersion */
    0x4c, 0x00, 0x00, 0x00,                  /* dataVersion */
    0, 0, 0, 0, 0, 0, 0, 0,                  /* pad to headerSize */
    0x00, 0x00, 0x00, 0x00,                  /* table of contents: 0 entries */
};
