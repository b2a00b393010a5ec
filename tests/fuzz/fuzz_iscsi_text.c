/* libFuzzer target: the iSCSI text key=value codec and value decoders. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "iscsi/pdu.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct iscsi_kv kv[64];
	int n = iscsi_text_parse((const char *)data, size, kv, 64);
	char out[4096];
	size_t len = 0;
	int added = 0;
	for (int i = 0; i < n; i++) {
		char k[ISCSI_KEY_MAX + 1], v[ISCSI_VALUE_MAX + 1];
		if (iscsi_kv_value(&kv[i], v, sizeof(v)) < 0)
			__builtin_trap(); /* the parser bounds values */
		memcpy(k, kv[i].key, kv[i].klen);
		k[kv[i].klen] = '\0';
		uint64_t num;
		(void)iscsi_text_number(v, &num);
		uint8_t bin[1024];
		(void)iscsi_text_binary(v, bin, sizeof(bin));
		if (added == i && iscsi_text_add(out, sizeof(out), &len, k, v) == 0)
			added++;
	}
	/* what we build must parse back to the same pairs */
	if (n > 0) {
		struct iscsi_kv kv2[64];
		int m = iscsi_text_parse(out, len, kv2, 64);
		if (m != added)
			__builtin_trap();
		for (int i = 0; i < m; i++)
			if (kv2[i].klen != kv[i].klen || memcmp(kv2[i].key, kv[i].key, kv[i].klen) ||
			    kv2[i].vlen != kv[i].vlen || memcmp(kv2[i].val, kv[i].val, kv[i].vlen))
				__builtin_trap();
	}
	return 0;
}
