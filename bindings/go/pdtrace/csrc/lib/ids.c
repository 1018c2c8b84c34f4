/*
 * Random ids. Each thread keeps its own xoshiro256** state, seeded from the
 * kernel on first use; a fork generation counter makes a child process
 * reseed instead of repeating its parent's sequence.
 */
#define _GNU_SOURCE 1
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pdtrace/common.h"
#include "ids.h"
#include "propagation.h"

typedef struct rng_state {
    uint64_t s[4];
    unsigned generation; /* fork generation the state was seeded in */
    int seeded;
} rng_state;

/* initial-exec: the library is loaded with the process (or early, by a
 * binding's import), and this avoids a __tls_get_addr call per id. */
static __thread rng_state tls_rng __attribute__((tls_model("initial-exec")));
static unsigned fork_generation;

void pdti_ids_after_fork(void)
{
    fork_generation++;
}

unsigned pdti_fork_generation(void)
{
    return __atomic_load_n(&fork_generation, __ATOMIC_ACQUIRE);
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_install(void)
{
    pthread_atfork(NULL, NULL, pdti_ids_after_fork);
}

void pdti_fork_handler_install(void)
{
    pthread_once(&fork_once, fork_install);
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(rng_state *r)
{
    uint64_t seed[4] = { 0, 0, 0, 0 };
    uint64_t mix;
    long got = -1;
    int i;

#ifdef SYS_getrandom
    got = syscall(SYS_getrandom, seed, sizeof(seed), 0);
#endif
    if (got != (long)sizeof(seed)) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            got = read(fd, seed, sizeof(seed));
            close(fd);
        }
    }
    /* Mix in time, pid and the state's address whatever the kernel gave. */
    mix = pdt_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)r;
    for (i = 0; i < 4; i++)
        r->s[i] = seed[i] ^ splitmix(&mix);
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = 1;
    r->generation = fork_generation;
    r->seeded = 1;
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t pdti_random64(void)
{
    rng_state *r = &tls_rng;
    uint64_t result, t;

    if (!r->seeded || r->generation != fork_generation)
        rng_seed(r);
    result = rotl(r->s[1] * 5, 7) * 9;
    t = r->s[1] << 17;
    r->s[2] ^= r->s[0];
    r->s[3] ^= r->s[1];
    r->s[1] ^= r->s[2];
    r->s[0] ^= r->s[3];
    r->s[2] ^= t;
    r->s[3] = rotl(r->s[3], 45);
    return result;
}

/* Big-endian store (ids read as hex keep the generator's byte order). */
static inline void put64(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
#else
    int i;
    for (i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
#endif
}

void pdti_new_trace_id(uint8_t id[16])
{
    uint64_t hi, lo;
    do {
        hi = pdti_random64();
        lo = pdti_random64();
    } while ((hi | lo) == 0);
    put64(id, hi);
    put64(id + 8, lo);
}

void pdti_new_span_id(uint8_t id[8])
{
    uint64_t v;
    do {
        v = pdti_random64();
    } while (v == 0);
    put64(id, v);
}

void pdti_new_uuid(char out[37])
{
    /* Where each byte's two hex digits go in 8-4-4-4-12. */
    static const uint8_t at[16] = { 0, 2, 4, 6, 9, 11, 14, 16, 19, 21,
                                    24, 26, 28, 30, 32, 34 };
    uint8_t b[16];
    int i;

    put64(b, pdti_random64());
    put64(b + 8, pdti_random64());
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    for (i = 0; i < 16; i++)
        memcpy(out + at[i], pdti_hex_pairs + 2 * b[i], 2);
    out[8] = out[13] = out[18] = out[23] = '-';
    out[36] = '\0';
}
