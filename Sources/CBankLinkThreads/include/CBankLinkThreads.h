#ifndef CBANKLINK_THREADS_H
#define CBANKLINK_THREADS_H

// Thread placement for banklinkd's own threads (Linux): the GNU pthread calls Swift's Glibc
// module does not import.

/// Restricts the calling thread to the `count` CPUs in `cpus`. Returns 0, or an errno value
/// (EINVAL: a CPU this process may not use or that does not exist).
int banklink_pin_current_thread(const int *cpus, int count);

/// Writes the CPUs the calling thread may run on into `cpus` (at most `capacity`) and returns
/// how many there are, or -1 with errno set.
int banklink_current_thread_cpus(int *cpus, int capacity);

/// Names the calling thread (the kernel keeps 15 bytes; shown by top -H, ps -L and perf).
/// Returns 0, or an errno value.
int banklink_name_current_thread(const char *name);

#endif
