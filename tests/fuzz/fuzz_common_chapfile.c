/* libFuzzer target: the CHAP credentials file of `export add --chap-file`
 * and `ferryd --discovery-chap-file` (chap_file_split() in
 * src/common/util.c; a file the user writes).
 *
 * Properties checked: no memory error; a success gives one or two lines
 * that point into the text, hold no line end, do not start with '#', are
 * not empty and end in no blank; the split is the same when the text is
 * given again with CRLF line ends. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void line_ok(const char *text, size_t len, const char *l)
{
	if (!l)
		return;
	if (l < text || l >= text + len + 1)
		abort();
	size_t n = strlen(l);
	if (!n || l[0] == '#' || strchr(l, '\n') || l[n - 1] == '\r' || l[n - 1] == ' ' ||
	    l[n - 1] == '\t')
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *crlf = malloc(2 * size + 1);
	if (!text || !crlf)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	size_t len = strlen(text); /* a NUL ends the file's text, as read_file would */
	size_t k = 0;
	for (size_t i = 0; i < len; i++) {
		if (text[i] == '\n')
			crlf[k++] = '\r';
		crlf[k++] = text[i];
	}
	crlf[k] = '\0';
	char err[256], *chap, *mutual, *chap2, *mutual2;
	int r = chap_file_split(text, &chap, &mutual, err, sizeof(err));
	int r2 = chap_file_split(crlf, &chap2, &mutual2, err, sizeof(err));
	if (r == 0) {
		if (!chap)
			abort();
		line_ok(text, len, chap);
		line_ok(text, len, mutual);
	} else if (chap || mutual || !err[0]) {
		abort(); /* a refusal says why and hands out nothing */
	}
	if ((r == 0) != (r2 == 0))
		abort();
	if (r == 0 && (strcmp(chap, chap2) || (!mutual) != (!mutual2) ||
	               (mutual && strcmp(mutual, mutual2))))
		abort();
	free(text);
	free(crlf);
	return 0;
}
