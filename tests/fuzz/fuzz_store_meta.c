/* libFuzzer target for the volume.meta parser (src/store/meta.c).
 * The entry checks that every accepted input is canonical (format(parse(x))
 * == x), so it also finds parser/serialiser disagreements. */
#include "store/store_int.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return store_meta_fuzz(data, size);
}
