/*
 * A stand-in for an OpenMP-threaded kernel, built by tests/omp.rs at test time:
 *   gcc -fopenmp -shared            -> linked to libgomp
 *   gcc -fopenmp -c + link libiomp5 -> linked to Intel's runtime (GOMP_* entry points)
 *
 * teaminfo() opens a parallel region with the calling thread's default team size (the
 * nthreads-var ICV that omp_set_num_threads sets) and reports the team size and every team
 * thread's CPU mask, as seen by the kernel (sched_getaffinity) from inside the region.
 */
#define _GNU_SOURCE
#include <omp.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>

/* Words of 64 CPUs per mask: 1024 CPUs, glibc's CPU_SETSIZE. */
#define TEAMINFO_WORDS 16

int teaminfo_words(void) { return TEAMINFO_WORDS; }

int teaminfo_max_threads(void) { return omp_get_max_threads(); }

void teaminfo_set_num_threads(int n) { omp_set_num_threads(n); }

/*
 * Runs one parallel region. masks has room for cap * TEAMINFO_WORDS words; row t gets the mask
 * of team thread t (t < cap), bit c of word w meaning CPU 64 * w + c; a row stays zero when the
 * mask could not be read. Returns the team size.
 */
int teaminfo(int cap, uint64_t *masks) {
    int team = 0;
    memset(masks, 0, sizeof(uint64_t) * (size_t)cap * TEAMINFO_WORDS);
#pragma omp parallel
    {
        int t = omp_get_thread_num();
        if (t == 0) {
            team = omp_get_num_threads();
        }
        if (t < cap) {
            cpu_set_t set;
            CPU_ZERO(&set);
            if (sched_getaffinity(0, sizeof(set), &set) == 0) {
                uint64_t *row = masks + (size_t)t * TEAMINFO_WORDS;
                for (int cpu = 0; cpu < TEAMINFO_WORDS * 64; cpu++) {
                    if (CPU_ISSET(cpu, &set)) {
                        row[cpu / 64] |= (uint64_t)1 << (cpu % 64);
                    }
                }
            }
        }
    }
    return team;
}
