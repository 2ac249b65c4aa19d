#ifndef CBANKLINK_THREADS_H
#define CBANKLINK_THREADS_H

// Threads for banklinkd's own use: starting one, naming it and placing it on CPUs. Placement
// needs Linux's GNU pthread calls, which Swift's Glibc module does not import; elsewhere it
// reports ENOSYS.

/// Starts a detached thread running `body(context)`. Returns 0, or an errno value.
int banklink_thread_start(void (*body)(void *context), void *context);

/// Restricts the calling thread to the `count` CPUs in `cpus`. Returns 0, or an errno value
/// (EINVAL: none of the CPUs exists or may be used by this process; ENOSYS: not on Linux).
int banklink_pin_current_thread(const int *cpus, int count);

/// Writes the CPUs the calling thread may run on into `cpus` (at most `capacity`) and returns
/// how many there are, or -1 with errno set.
int banklink_current_thread_cpus(int *cpus, int capacity);

/// Names the calling thread (the kernel keeps 15 bytes; shown by top -H, ps -L and perf).
/// Returns 0, or an errno value.
int banklink_name_current_thread(const char *name);

/// Gives the free memory malloc holds back to the system (glibc's `malloc_trim(0)`: the top of
/// each arena and whole free pages inside them). Returns 1 if any was released, else 0 (always
/// 0 where malloc is not glibc's).
int banklink_release_free_heap(void);

#endif
