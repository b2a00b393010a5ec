/* libFuzzer target for the control protocol: the input is a stream of
 * frames as the daemon would receive them.  Every frame is decoded; REQ
 * argv goes through the command grammar and is re-encoded, which must
 * give back the same payload. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct ctl_frame f;
		int n = ctl_frame_decode(data + off, size - off, &f);
		if (n <= 0)
			break;
		off += (size_t)n;
		switch (f.type) {
		case CTL_REQ: {
			const char *argv[CTL_MAX_ARGC + 1];
			int argc;
			if (ctl_req_decode(f.payload, f.len, &argc, argv, CTL_MAX_ARGC + 1) < 0)
				break;
			uint8_t *re = malloc(f.len ? f.len : 1);
			if (!re)
				abort();
			int m = ctl_req_encode(re, f.len, argc, argv);
			if (m != (int)f.len || memcmp(re, f.payload, f.len) != 0)
				abort(); /* decode and encode disagree */
			free(re);
			struct ctl_cmd cmd;
			char err[256];
			if (ctl_cmd_parse(argc, argv, &cmd, err, sizeof(err)) == 0) {
				struct sbuf b;
				sbuf_init(&b);
				if (cmd.help)
					ctl_help(&cmd, "ferry", &b);
				sbuf_free(&b);
			} else if (strlen(err) == 0) {
				abort(); /* every usage error explains itself */
			}
			break;
		}
		case CTL_PROGRESS: {
			uint64_t d, t;
			char label[CTL_LABEL_MAX + 1];
			ctl_progress_decode(f.payload, f.len, &d, &t, label);
			break;
		}
		case CTL_EXIT: {
			int32_t st;
			ctl_exit_decode(f.payload, f.len, &st);
			break;
		}
		default:
			break;
		}
	}
	return 0;
}
