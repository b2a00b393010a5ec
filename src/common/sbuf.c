#include "common/common.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void sbuf_init(struct sbuf *b)
{
	memset(b, 0, sizeof(*b));
}

void sbuf_free(struct sbuf *b)
{
	free(b->p);
	sbuf_init(b);
}

static bool sbuf_reserve(struct sbuf *b, size_t extra)
{
	if (b->err)
		return false;
	if (b->len + extra + 1 <= b->cap)
		return true;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p) {
		b->err = -ENOMEM;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

void sbuf_add(struct sbuf *b, const void *data, size_t len)
{
	if (!sbuf_reserve(b, len))
		return;
	memcpy(b->p + b->len, data, len);
	b->len += len;
	b->p[b->len] = '\0';
}

void sbuf_puts(struct sbuf *b, const char *s)
{
	sbuf_add(b, s, strlen(s));
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !sbuf_reserve(b, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

char *sbuf_detach(struct sbuf *b, size_t *len)
{
	if (!b->p)
		sbuf_reserve(b, 0);
	char *p = b->p;
	if (len)
		*len = b->len;
	sbuf_init(b);
	return p;
}

/* ---- JSON writer ------------------------------------------------------- */
void jw_init(struct jw *w, struct sbuf *b)
{
	w->b = b;
	w->depth = 0;
	w->first = 1;
	w->after_key = false;
}

static void jw_sep(struct jw *w)
{
	if (w->after_key) {
		w->after_key = false;
		return;
	}
	uint64_t bit = 1ull << (w->depth & 63);
	if (w->first & bit)
		w->first &= ~bit;
	else
		sbuf_add(w->b, ",", 1);
}

static void jw_open(struct jw *w, char c)
{
	jw_sep(w);
	sbuf_add(w->b, &c, 1);
	w->depth++;
	w->first |= 1ull << (w->depth & 63);
}

static void jw_close(struct jw *w, char c)
{
	w->depth--;
	sbuf_add(w->b, &c, 1);
}

void jw_obj_begin(struct jw *w) { jw_open(w, '{'); }
void jw_obj_end(struct jw *w) { jw_close(w, '}'); }
void jw_arr_begin(struct jw *w) { jw_open(w, '['); }
void jw_arr_end(struct jw *w) { jw_close(w, ']'); }

static void jw_quoted(struct sbuf *b, const char *s)
{
	sbuf_add(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': sbuf_add(b, "\\\"", 2); break;
		case '\\': sbuf_add(b, "\\\\", 2); break;
		case '\n': sbuf_add(b, "\\n", 2); break;
		case '\r': sbuf_add(b, "\\r", 2); break;
		case '\t': sbuf_add(b, "\\t", 2); break;
		default:
			if (*p < 0x20)
				sbuf_printf(b, "\\u%04x", *p);
			else
				sbuf_add(b, p, 1);
		}
	}
	sbuf_add(b, "\"", 1);
}

void jw_key(struct jw *w, const char *k)
{
	jw_sep(w);
	jw_quoted(w->b, k);
	sbuf_add(w->b, ":", 1);
	w->after_key = true;
}

void jw_str(struct jw *w, const char *s)
{
	jw_sep(w);
	if (s)
		jw_quoted(w->b, s);
	else
		sbuf_puts(w->b, "null");
}

void jw_u64(struct jw *w, uint64_t v)
{
	jw_sep(w);
	sbuf_printf(w->b, "%" PRIu64, v);
}

void jw_i64(struct jw *w, int64_t v)
{
	jw_sep(w);
	sbuf_printf(w->b, "%" PRId64, v);
}

void jw_double(struct jw *w, double v)
{
	jw_sep(w);
	if (isfinite(v))
		sbuf_printf(w->b, "%.3f", v);
	else
		sbuf_puts(w->b, "null");
}

void jw_bool(struct jw *w, bool v)
{
	jw_sep(w);
	sbuf_puts(w->b, v ? "true" : "false");
}

void jw_null(struct jw *w)
{
	jw_sep(w);
	sbuf_puts(w->b, "null");
}
