/*
 * Internal, floor 0: the protobuf wire format's smallest pieces, for the
 * encoders (attr.c on the calling thread, encode.c on the exporter's).
 * Header-only: inlined where the bytes are written.
 */
#ifndef PDTI_WIRE_H
#define PDTI_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* Bytes the varint encoding of v takes. */
static inline size_t pdti_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writes v as a varint at p; returns the byte after it. */
static inline uint8_t *pdti_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

#endif
