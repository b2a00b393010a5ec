/* libFuzzer target: ferryd's configuration file reader (src/daemon/config.c
 * on top of libinih), with a small option table like ferryd's: a DIR, a
 * flag, an address, a checked word, a command-line-only option.
 *
 * Properties checked: no memory error; a refused file names a line of the
 * input ("PATH:N: ", 1 <= N <= lines + 1) or the path itself; an accepted
 * file leaves a value on every key it set, the flag "1" or unset, the
 * checked word one of its words, and the command-line-only option unset. */
#include "daemon/config.c"


/* Not must(): it is off in release builds, where the corpus replays. */
#define must(c) do { if (!(c)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int check_word(const char *label, const char *v, char *err, size_t errlen)
{
	if (strcmp(v, "red") && strcmp(v, "green")) {
		snprintf(err, errlen, "bad %s '%s'", label, v);
		return 2;
	}
	return 0;
}

/* The address check without resolving names (no DNS while fuzzing). */
static int check_addr(const char *label, const char *v, char *err, size_t errlen)
{
	char host[256], port[16];
	if (split_hostport(v, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, errlen, "bad %s address '%s'", label, v);
		return 1;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dopt opts[] = {
		{"pool", "DIR", "", NULL, NULL},
		{"plain", NULL, "", NULL, NULL},
		{"listen", "HOST:PORT", "", check_addr, NULL},
		{"color", "WORD", "", check_word, NULL},
		{"config", "FILE", "", NULL, NULL},
	};
	static const char *const cli_only[] = {"config", NULL};
	struct dopts s = {.opt = opts, .n = ARRAY_SIZE(opts), .cli_only = cli_only};
	FILE *f = fmemopen((void *)data, size, "r");
	if (!f)
		return 0;
	char err[8192];
	int st = dopt_load_stream(&s, f, "/etc/ferry/fuzz.conf", err, sizeof(err));
	fclose(f);
	size_t lines = 1;
	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	if (st) {
		must(st == 1);
		must(!strncmp(err, "/etc/ferry/fuzz.conf", 20));
		if (err[20] == ':' && err[21] >= '0' && err[21] <= '9') {
			unsigned long n = strtoul(err + 21, NULL, 10);
			must(n >= 1 && n <= lines);
		}
	} else {
		for (size_t i = 0; i < s.n; i++) {
			if (s.file_line[i]) {
				must(s.file_line[i] >= 1 && (size_t)s.file_line[i] <= lines);
				must(opts[i].meta ? opts[i].value != NULL : true);
			}
			must(s.src[i] != DOPT_CLI);
		}
		must(!opts[1].value || !strcmp(opts[1].value, "1"));
		must(!opts[3].value || !strcmp(opts[3].value, "red") || !strcmp(opts[3].value, "green"));
		must(!opts[4].value);
		must(!opts[0].value || opts[0].value[0] == '/');
	}
	dopt_free_all();
	return 0;
}
