// Temporary files in flight, removed when the process is killed by SIGINT, SIGTERM or SIGHUP.
// A signal handler may only make async-signal-safe calls, so the registry is a fixed array of
// paths in static memory that the handler walks with unlink(2); nothing is allocated or locked.
#ifndef LUMEN_FILES_H
#define LUMEN_FILES_H

#ifdef __cplusplus
extern "C" {
#endif

/// How many temporaries may be registered at once, and the longest path (bytes, with the NUL).
#define LUMEN_TMP_SLOTS 64
#define LUMEN_TMP_PATH_MAX 4096

/// Registers `path` (an absolute path, or relative to a working directory that does not change):
/// returns a slot for lumen_tmp_unregister, or -1 when the registry is full or the path too long
/// (the file is then simply not cleaned up on a signal).
int lumen_tmp_register(const char *path);
/// Forgets a slot (after the temporary was renamed into place or removed). -1 is ignored.
void lumen_tmp_unregister(int slot);
/// The number of registered temporaries.
int lumen_tmp_count(void);
/// Unlinks every registered temporary and empties the registry (what the handler does).
void lumen_tmp_remove_all(void);
/// Installs the handlers for SIGINT, SIGTERM and SIGHUP (a signal already ignored, as under
/// nohup, stays ignored): each unlinks the registered temporaries, then re-raises the signal with
/// its default action, so the process still dies of that signal. Returns 0, or -1 on failure.
int lumen_tmp_install_signal_handlers(void);

#ifdef __cplusplus
}
#endif

#endif
