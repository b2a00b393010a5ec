/* Replays fuzz corpora as ordinary tests: every file named on the command
 * line (or found in a directory named there) goes through the target's
 * LLVMFuzzerTestOneInput once, then a fixed-seed batch of mutated inputs
 * does, so a corpus replay also exercises nearby inputs.  Under ASan/UBSan
 * any memory error aborts the test. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static unsigned long g_runs;
static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
	g_rng ^= g_rng << 13;
	g_rng ^= g_rng >> 7;
	g_rng ^= g_rng << 17;
	return g_rng;
}

static void run_buf(const uint8_t *p, size_t n)
{
	/* Copy into an exact-size heap block so ASan sees overreads. */
	uint8_t *c = malloc(n ? n : 1);
	if (!c)
		abort();
	if (n)
		memcpy(c, p, n);
	LLVMFuzzerTestOneInput(c, n);
	free(c);
	g_runs++;
	/* A few mutations: bit flips, truncation, byte stores. */
	for (int m = 0; m < 8 && n; m++) {
		uint8_t *d = malloc(n);
		if (!d)
			abort();
		memcpy(d, p, n);
		size_t len = n;
		switch (rnd() % 3) {
		case 0: d[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8)); break;
		case 1: len = rnd() % n; break;
		default: d[rnd() % n] = (uint8_t)rnd(); break;
		}
		LLVMFuzzerTestOneInput(d, len);
		free(d);
		g_runs++;
	}
}

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		perror(path);
		return 1;
	}
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		size_t r = fread(buf + len, 1, cap - len, f);
		if (r == 0)
			break;
		len += r;
	}
	fclose(f);
	run_buf(buf, len);
	free(buf);
	return 0;
}

static int run_path(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		perror(path);
		return 1;
	}
	if (!S_ISDIR(st.st_mode))
		return run_file(path);
	DIR *d = opendir(path);
	if (!d)
		return 1;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char p[4096];
		snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
		rc |= run_path(p);
	}
	closedir(d);
	return rc;
}

int main(int argc, char **argv)
{
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	int rc = 0;
	for (int i = 1; i < argc; i++)
		rc |= run_path(argv[i]);
	/* Plus random inputs of assorted sizes. */
	for (int i = 0; i < 2000; i++) {
		size_t n = rnd() % 600;
		uint8_t *b = malloc(n ? n : 1);
		if (!b)
			abort();
		for (size_t j = 0; j < n; j++)
			b[j] = (uint8_t)rnd();
		LLVMFuzzerTestOneInput(b, n);
		free(b);
		g_runs++;
	}
	printf("replayed %lu inputs\n", g_runs);
	return rc;
}
