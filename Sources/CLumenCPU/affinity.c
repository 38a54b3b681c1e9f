// The CPUs this process may run on (its affinity mask: taskset, a container's cpuset), for the
// default thread count. Foundation's activeProcessorCount counts every online CPU instead.
#include "lumen_cpu.h"

#if defined(__linux__)
#include <sched.h>
#endif

int lumen_cpu_affinity(int *cpus, int max) {
#if defined(__linux__)
    const int ncpu = 8192;  // CPU ids the mask can name (the kernel's limit is lower in practice)
    cpu_set_t *set = CPU_ALLOC(ncpu);
    if (!set) return -1;
    const size_t size = CPU_ALLOC_SIZE(ncpu);
    CPU_ZERO_S(size, set);
    if (sched_getaffinity(0, size, set) != 0) {
        CPU_FREE(set);
        return -1;
    }
    int n = 0;
    for (int i = 0; i < ncpu; i++) {
        if (!CPU_ISSET_S(i, size, set)) continue;
        if (n < max && cpus) cpus[n] = i;
        n++;
    }
    CPU_FREE(set);
    return n;
#else
    (void)cpus;
    (void)max;
    return -1;
#endif
}
