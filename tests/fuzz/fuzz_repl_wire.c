/* libFuzzer target for the replication wire codec (src/repl/wire.c).
 *
 * Build with -DFERRY_FUZZ=ON -DCMAKE_C_COMPILER=clang; run e.g.
 *   build/tests/fuzz_repl_wire tests/fuzz/corpus/repl_wire -max_total_time=60
 * Without FERRY_FUZZ the same function is driven over the seed corpus by
 * a plain test (fuzz_repl_wire_corpus).
 *
 * Properties checked: decoding never reads outside the input, never
 * crashes; whatever decodes re-encodes to exactly the same bytes (so the
 * codec has one meaning per frame), and a frame's strings are valid. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "repl/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t out[WIRE_FRAME_MAX];
	size_t off = 0;
	/* The input may hold several frames back to back, as on the stream. */
	while (off < size) {
		struct wire_msg m;
		int n = wire_decode(data + off, size - off, &m);
		if (n < 0)
			break;
		if ((size_t)n > size - off || n < (int)WIRE_HDR_LEN)
			abort();
		int e = wire_encode(&m, out, sizeof(out));
		if (e != n || memcmp(out, data + off, (size_t)n) != 0)
			abort();
		if (m.type == WIRE_DIGESTS)
			for (uint32_t i = 0; i < m.u.digests.count; i++)
				(void)wire_digest_at(&m, i);
		off += (size_t)n;
	}
	/* Every prefix of a frame must be "need more", never a wrong parse. */
	if (size >= WIRE_HDR_LEN && size < 4096) {
		struct wire_msg m;
		for (size_t cut = 0; cut < size; cut += 7)
			if (wire_decode(data, cut, &m) >= 0 && (size_t)wire_decode(data, cut, &m) > cut)
				abort();
	}
	return 0;
}
