/* Internal: a growable byte buffer. */
#ifndef PDTI_BUF_H
#define PDTI_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct pdti_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} pdti_buf;

#define PDTI_BUF_INIT { NULL, 0, 0 }

/* Grows the buffer to hold `extra` more bytes (slow path). */
int pdti_buf_grow(pdti_buf *b, size_t extra);
/* Ensures room for `extra` more bytes. Returns 0, or -1 on overflow/OOM. */
static inline int pdti_buf_reserve(pdti_buf *b, size_t extra)
{
    return extra <= b->cap - b->len ? 0 : pdti_buf_grow(b, extra);
}
/* Appends n bytes. Returns 0 or -1 (buffer unchanged). */
int pdti_buf_append(pdti_buf *b, const void *p, size_t n);
/* Empties the buffer, keeping its memory. */
static inline void pdti_buf_reset(pdti_buf *b) { b->len = 0; }
/* Frees the memory; the buffer is empty and reusable afterwards. */
void pdti_buf_free(pdti_buf *b);

#endif
