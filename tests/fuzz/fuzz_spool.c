/* libFuzzer target for the spool reader (db/spool.c): the input is the
 * contents of a segment file.
 *
 * Every record the scanner yields must lie inside the input, after the
 * previous one, carry a CRC that matches, have NUL-terminated strings that
 * fit their fields, and survive a re-encode: encode(decoded) decodes to the
 * same event and sequence number. The scan must end with pos == len. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/spool.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_spool: invariant broken: %s\n", what);
        abort();
    }
}

#define FIELD_OK(f) check(memchr(ev.f, 0, sizeof ev.f) != NULL, #f " not terminated")

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t pos = 0, off, len, prev_end = 0;
    usage_event ev, again;
    uint64_t seq, seq2, skipped = 0;
    uint8_t rec[SPOOL_MAX_RECORD];
    while (spool_scan_next(data, size, &pos, &ev, &seq, &off, &len, &skipped)) {
        check(off >= prev_end && off + len <= size && pos == off + len, "record bounds");
        check(len > SPOOL_HEADER_LEN && memcmp(data + off, SPOOL_MAGIC, 4) == 0, "header");
        uint32_t crc = (uint32_t)data[off + 8] | (uint32_t)data[off + 9] << 8 |
                       (uint32_t)data[off + 10] << 16 | (uint32_t)data[off + 11] << 24;
        check(spool_crc32c(0, data + off + SPOOL_HEADER_LEN, len - SPOOL_HEADER_LEN) == crc, "CRC");
        check(seq >= 1, "seq 0");
        FIELD_OK(event_id);
        FIELD_OK(key_id);
        FIELD_OK(team);
        FIELD_OK(end_user);
        FIELD_OK(agent);
        FIELD_OK(task);
        FIELD_OK(feature);
        FIELD_OK(requested_model);
        FIELD_OK(provider);
        FIELD_OK(model);
        FIELD_OK(tier);
        FIELD_OK(route_reason);
        FIELD_OK(error_class);
        FIELD_OK(batch_id);
        size_t n = spool_encode_record(&ev, seq, rec, sizeof rec);
        check(n > SPOOL_HEADER_LEN, "re-encode");
        check(spool_decode_payload(rec + SPOOL_HEADER_LEN, n - SPOOL_HEADER_LEN, &again, &seq2) ==
                  0,
              "re-decode");
        check(seq2 == seq && memcmp(&again, &ev, sizeof ev) == 0, "round trip");
        prev_end = off + len;
    }
    check(pos == size, "scan did not reach the end");
    return 0;
}
