#ifndef LUMEN_NO_ICU_DATA_H
#define LUMEN_NO_ICU_DATA_H
/* Intentionally empty: see no_icu_data.c. */
#endif
