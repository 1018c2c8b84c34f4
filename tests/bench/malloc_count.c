/*
 * malloc_count: an LD_PRELOAD shim that counts malloc/calloc/realloc calls,
 * in the whole process and per thread, for the binding rows of
 * run_bench.sh (Python with PYTHONMALLOC=malloc, Go through cgo). Read the
 * counters with bench_malloc_count_all() and bench_malloc_count_thread()
 * (ctypes, or dlsym). Counts calls, not bytes; free() is not counted.
 */
#include <stddef.h>
#include <stdint.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static __thread uint64_t count_thread;
static uint64_t count_all;

uint64_t bench_malloc_count_all(void);
uint64_t bench_malloc_count_thread(void);

uint64_t bench_malloc_count_all(void)
{
    return __atomic_load_n(&count_all, __ATOMIC_RELAXED);
}

uint64_t bench_malloc_count_thread(void)
{
    return count_thread;
}

static void count(void)
{
    count_thread++;
    __atomic_add_fetch(&count_all, 1, __ATOMIC_RELAXED);
}

void *malloc(size_t n)
{
    count();
    return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
    count();
    return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
    count();
    return __libc_realloc(p, n);
}
