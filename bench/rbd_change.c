/* A reproducible change to an RBD image, for bench/rbd.sh: N distinct 4 KiB
 * blocks at random offsets, each filled with random bytes, 32 writes in
 * flight (librbd aio).  Or, with --fill, the whole image with random data
 * (1 MiB writes).  The same seed gives the same blocks and bytes.
 *
 *   rbd_change CONF POOL[/NAMESPACE] IMAGE --blocks N --seed S [--same M]
 *   rbd_change CONF POOL[/NAMESPACE] IMAGE --fill --seed S
 *
 * --same M: M more distinct blocks are rewritten with the bytes they already
 * hold (a write that changes nothing, which RBD's diff still reports).
 * Prints the number of blocks (or bytes) written. */
#include <rados/librados.h>
#include <rbd/librbd.h>

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEPTH 32

static uint64_t rng(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill(uint64_t *s, uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 8 <= n; i += 8) {
		uint64_t x = rng(s);
		memcpy(p + i, &x, 8);
	}
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: rbd_change CONF POOL[/NS] IMAGE (--blocks N | --fill) --seed S\n");
		return 2;
	}
	const char *conf = argv[1], *image = argv[3];
	char pool[256], *ns = NULL;
	snprintf(pool, sizeof(pool), "%s", argv[2]);
	if ((ns = strchr(pool, '/')))
		*ns++ = '\0';
	uint64_t nblocks = 0, seed = 1, same = 0;
	int fill_all = 0;
	for (int i = 4; i < argc; i++) {
		if (!strcmp(argv[i], "--blocks") && i + 1 < argc)
			nblocks = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
			seed = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--same") && i + 1 < argc)
			same = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--fill"))
			fill_all = 1;
	}
	rados_t cl;
	rados_ioctx_t io;
	rbd_image_t img;
	int r = rados_create(&cl, NULL);
	if (!r)
		r = rados_conf_read_file(cl, conf);
	if (!r)
		r = rados_conf_set(cl, "rbd_cache", "false");
	if (!r)
		r = rados_connect(cl);
	if (!r)
		r = rados_ioctx_create(cl, pool, &io);
	if (r < 0) {
		fprintf(stderr, "rbd_change: cluster: %s\n", strerror(-r));
		return 1;
	}
	if (ns)
		rados_ioctx_set_namespace(io, ns);
	if ((r = rbd_open(io, image, &img, NULL)) < 0) {
		fprintf(stderr, "rbd_change: %s: %s\n", image, strerror(-r));
		return 1;
	}
	uint64_t size;
	rbd_get_size(img, &size);
	size_t bs = fill_all ? (1u << 20) : 4096;
	uint64_t nb = size / 4096, n = fill_all ? (size + bs - 1) / bs : nblocks + same;
	if (!fill_all && n > nb / 2) {
		fprintf(stderr, "rbd_change: at most half the image's blocks\n");
		return 2;
	}
	/* distinct blocks: a bitmap of the ones taken */
	uint8_t *taken = fill_all ? NULL : calloc((nb + 7) / 8, 1);
	uint8_t *buf = malloc((size_t)DEPTH * bs);
	rbd_completion_t c[DEPTH] = {0};
	uint64_t s = seed;
	for (uint64_t i = 0; i < n; i++) {
		int k = (int)(i % DEPTH);
		if (c[k]) {
			rbd_aio_wait_for_complete(c[k]);
			if ((r = (int)rbd_aio_get_return_value(c[k])) < 0) {
				fprintf(stderr, "rbd_change: write: %s\n", strerror(-r));
				return 1;
			}
			rbd_aio_release(c[k]);
		}
		uint64_t off;
		if (fill_all) {
			off = i * bs;
		} else {
			uint64_t b;
			do
				b = rng(&s) % nb;
			while (taken[b / 8] & (1u << (b % 8)));
			taken[b / 8] |= (uint8_t)(1u << (b % 8));
			off = b * 4096;
		}
		size_t len = (size_t)(size - off < bs ? size - off : bs);
		if (i >= nblocks && !fill_all) {
			/* the same bytes again */
			if ((r = (int)rbd_read(img, off, len, (char *)buf + (size_t)k * bs)) < 0) {
				fprintf(stderr, "rbd_change: read: %s\n", strerror(-r));
				return 1;
			}
		} else {
			fill(&s, buf + (size_t)k * bs, len);
		}
		rbd_aio_create_completion(NULL, NULL, &c[k]);
		if ((r = rbd_aio_write(img, off, len, (const char *)buf + (size_t)k * bs, c[k])) < 0) {
			fprintf(stderr, "rbd_change: aio write: %s\n", strerror(-r));
			return 1;
		}
	}
	for (int k = 0; k < DEPTH; k++) {
		if (!c[k])
			continue;
		rbd_aio_wait_for_complete(c[k]);
		if ((r = (int)rbd_aio_get_return_value(c[k])) < 0) {
			fprintf(stderr, "rbd_change: write: %s\n", strerror(-r));
			return 1;
		}
		rbd_aio_release(c[k]);
	}
	rbd_flush(img);
	rbd_close(img);
	rados_ioctx_destroy(io);
	rados_shutdown(cl);
	printf("%" PRIu64 "\n", fill_all ? size : nblocks);
	free(buf);
	free(taken);
	return 0;
}
