#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "CBankLinkThreads.h"

int banklink_pin_current_thread(const int *cpus, int count) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int i = 0; i < count; i++) {
    if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) return EINVAL;
    CPU_SET(cpus[i], &set);
  }
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int banklink_current_thread_cpus(int *cpus, int capacity) {
  cpu_set_t set;
  int rc = pthread_getaffinity_np(pthread_self(), sizeof(set), &set);
  if (rc != 0) {
    errno = rc;
    return -1;
  }
  int count = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
    if (CPU_ISSET(cpu, &set)) {
      if (count < capacity) cpus[count] = cpu;
      count++;
    }
  }
  return count;
}

int banklink_name_current_thread(const char *name) {
  char truncated[16];
  strncpy(truncated, name, sizeof(truncated) - 1);
  truncated[sizeof(truncated) - 1] = '\0';
  return pthread_setname_np(pthread_self(), truncated);
}
