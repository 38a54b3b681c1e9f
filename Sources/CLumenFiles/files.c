#include "lumen_files.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

// A slot is free (0), being filled (1) or holds a path the handler may unlink (2). Claiming and
// publishing go through atomics, so writers on several threads never share a slot and the
// handler never reads a half-copied path.
static char paths[LUMEN_TMP_SLOTS][LUMEN_TMP_PATH_MAX];
static int states[LUMEN_TMP_SLOTS];

int lumen_tmp_register(const char *path) {
    size_t n = strlen(path);
    if (n == 0 || n >= LUMEN_TMP_PATH_MAX) return -1;
    for (int i = 0; i < LUMEN_TMP_SLOTS; i++) {
        int expected = 0;
        if (__atomic_compare_exchange_n(&states[i], &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            memcpy(paths[i], path, n + 1);
            __atomic_store_n(&states[i], 2, __ATOMIC_RELEASE);
            return i;
        }
    }
    return -1;
}

void lumen_tmp_unregister(int slot) {
    if (slot < 0 || slot >= LUMEN_TMP_SLOTS) return;
    __atomic_store_n(&states[slot], 0, __ATOMIC_RELEASE);
}

int lumen_tmp_count(void) {
    int n = 0;
    for (int i = 0; i < LUMEN_TMP_SLOTS; i++) n += __atomic_load_n(&states[i], __ATOMIC_ACQUIRE) == 2;
    return n;
}

void lumen_tmp_remove_all(void) {
    for (int i = 0; i < LUMEN_TMP_SLOTS; i++) {
        int expected = 2;
        // Taking the slot back to "being filled" first keeps a concurrent register off it.
        if (__atomic_compare_exchange_n(&states[i], &expected, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            unlink(paths[i]);
            __atomic_store_n(&states[i], 0, __ATOMIC_RELEASE);
        }
    }
}

static void on_signal(int sig) {
    lumen_tmp_remove_all();  // unlink(2) and atomics only: async-signal-safe
    // SA_RESETHAND restored the default action; the signal is blocked until this handler returns,
    // then delivered again, and the process ends as if it had never been caught.
    raise(sig);
}

int lumen_tmp_install_signal_handlers(void) {
    static const int signals[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++) {
        struct sigaction old;
        if (sigaction(signals[i], NULL, &old) != 0) return -1;
        if (old.sa_handler == SIG_IGN) continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESETHAND;
        if (sigaction(signals[i], &sa, NULL) != 0) return -1;
    }
    return 0;
}
