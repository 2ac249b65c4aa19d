#if defined(__linux__)
#define _GNU_SOURCE
#include <sched.h>
#endif
#include <errno.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "CBankLinkThreads.h"

struct start {
  void (*body)(void *);
  void *context;
};

static void *run(void *argument) {
  struct start start = *(struct start *)argument;
  free(argument);
  start.body(start.context);
  return NULL;
}

int banklink_thread_start(void (*body)(void *context), void *context) {
  struct start *start = malloc(sizeof(struct start));
  if (start == NULL) return ENOMEM;
  start->body = body;
  start->context = context;
  pthread_t thread;
  int rc = pthread_create(&thread, NULL, run, start);
  if (rc != 0) {
    free(start);
    return rc;
  }
  return pthread_detach(thread);
}

int banklink_pin_current_thread(const int *cpus, int count) {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int i = 0; i < count; i++) {
    if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) return EINVAL;
    CPU_SET(cpus[i], &set);
  }
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
#else
  (void)cpus;
  (void)count;
  return ENOSYS;
#endif
}

int banklink_current_thread_cpus(int *cpus, int capacity) {
#if defined(__linux__)
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
#else
  (void)cpus;
  (void)capacity;
  errno = ENOSYS;
  return -1;
#endif
}

int banklink_name_current_thread(const char *name) {
  char truncated[16];
  strncpy(truncated, name, sizeof(truncated) - 1);
  truncated[sizeof(truncated) - 1] = '\0';
#if defined(__APPLE__)
  return pthread_setname_np(truncated);
#else
  return pthread_setname_np(pthread_self(), truncated);
#endif
}

int banklink_release_free_heap(void) {
#if defined(__GLIBC__)
  return malloc_trim(0);
#else
  return 0;
#endif
}
