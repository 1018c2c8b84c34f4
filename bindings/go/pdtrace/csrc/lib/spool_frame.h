/*
 * Internal: the spool frame format, one frame per file. A pure codec, for
 * the spool itself, tests and fuzzing; see docs/spool.md.
 *
 * Frame file: a 36-byte little-endian header followed by a zstd frame.
 *
 *   off size field
 *     0    4 magic "PDSP"
 *     4    2 version (1)
 *     6    2 flags (bit 0: payload is zstd; other bits must be 0)
 *     8    4 nspans: spans in the batch (for accounting without decoding)
 *    12    8 raw_len: length of the ExportTraceServiceRequest
 *    20    8 comp_len: length of the payload; the file is 36 + comp_len
 *    28    4 CRC-32 (zlib) of the payload
 *    32    4 CRC-32 (zlib) of bytes 0..31
 */
#ifndef PDTI_SPOOL_FRAME_H
#define PDTI_SPOOL_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define PDTI_SPOOL_MAGIC "PDSP"
#define PDTI_SPOOL_VERSION 1
#define PDTI_SPOOL_FLAG_ZSTD 1u
#define PDTI_SPOOL_HEADER_SIZE 36
/* Largest request a frame may hold; larger length fields are corrupt. */
#define PDTI_SPOOL_MAX_RAW ((uint64_t)64 << 20)

/*
 * pdti_spool_encode_frame() writes header and payload of a frame into out
 * (reset first); returns PDT_OK, PDT_EINVAL (len 0 or above
 * PDTI_SPOOL_MAX_RAW, nspans 0) or PDT_ENOMEM. pdti_spool_decode_frame()
 * validates a whole frame file's bytes and decompresses it into body
 * (reset first); returns PDT_OK, PDT_EPARSE (corrupt: any check failed)
 * or PDT_ENOMEM. Neither sets the last error.
 */
int pdti_spool_encode_frame(const uint8_t *body, size_t len, uint32_t nspans,
                            pdti_buf *out);
int pdti_spool_decode_frame(const uint8_t *data, size_t len, pdti_buf *body,
                            uint32_t *nspans);

/*
 * Checks the PDTI_SPOOL_HEADER_SIZE bytes of a header h against the size
 * of its file (the payload CRC is not checked: that needs the payload).
 * 0 if sound, with the fields filled; -1 if corrupt.
 */
int pdti_spool_check_header(const uint8_t *h, uint64_t file_size,
                            uint32_t *nspans, uint64_t *raw_len,
                            uint64_t *comp_len);

/*
 * The span count of a header whose magic and header CRC are sound, even if
 * the rest of the frame is not (a torn or damaged payload): the spans a
 * corrupt frame held, for the loss counters. 0 if the header itself is
 * damaged. h points at PDTI_SPOOL_HEADER_SIZE bytes.
 */
uint32_t pdti_spool_header_nspans(const uint8_t *h);

#endif
