/* libFuzzer target: the exports.conf parser of ferryd (parse_line() and
 * dec() in src/daemon/cmd_export.c, static there, hence the #include of the
 * source file).  The input is a whole exports.conf, split into lines as
 * export_service_start() does.
 *
 * Properties checked: no memory error; an accepted line gives valid names
 * and a LUN in range, and re-encoding the export the way save_locked()
 * writes it parses back to the same export (so what ferryd writes, it
 * reads back unchanged). */
#include "daemon/cmd_export.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The rest of ferryd that cmd_export.c refers to; the parser never calls
 * these. */
const char *daemon_opt(const char *name)
{
	(void)name;
	return NULL;
}
int dreq_out(struct dreq *r, const void *p, size_t len)
{
	(void)r, (void)p, (void)len;
	return 0;
}
int dreq_printf(struct dreq *r, const char *fmt, ...)
{
	(void)r, (void)fmt;
	return 0;
}
int dreq_fail(struct dreq *r, const char *fmt, ...)
{
	(void)r, (void)fmt;
	return 1;
}
int dreq_usage(struct dreq *r, const char *fmt, ...)
{
	(void)r, (void)fmt;
	return 2;
}
void daemon_open_error(struct store *s, const char *name, int e, char *buf, size_t n)
{
	(void)s, (void)name, (void)e;
	if (n)
		buf[0] = '\0';
}
bool daemon_volume_is_secondary(const char *name)
{
	(void)name;
	return false;
}
bool daemon_volume_fenced(const char *name)
{
	(void)name;
	return false;
}
bool daemon_repl_needs(const char *volume, const char *snap)
{
	(void)volume, (void)snap;
	return false;
}
int dreq_out_sbuf(struct dreq *r, struct sbuf *b)
{
	(void)r;
	sbuf_free(b);
	return 0;
}
void dreq_warn(struct dreq *r, const char *fmt, ...)
{
	(void)r, (void)fmt;
}

/* One line exactly as save_locked() writes it. */
static void encode_line(struct sbuf *b, const struct export *e)
{
	enc(b, e->vol);
	if (e->snap[0]) {
		sbuf_puts(b, "@");
		enc(b, e->snap);
	}
	sbuf_puts(b, " iqn=");
	enc(b, e->iqn);
	sbuf_printf(b, " lun=%" PRIu64 " ro=%d", e->lun, e->ro ? 1 : 0);
	if (e->chap) {
		sbuf_puts(b, " chap=");
		enc(b, e->chap_user);
		sbuf_puts(b, "%3A");
		enc(b, e->chap_secret);
	}
	if (e->mutual) {
		sbuf_puts(b, " mutual=");
		enc(b, e->mut_user);
		sbuf_puts(b, "%3A");
		enc(b, e->mut_secret);
	}
}

static bool same(const struct export *a, const struct export *b)
{
	return !strcmp(a->vol, b->vol) && !strcmp(a->snap, b->snap) && !strcmp(a->iqn, b->iqn) &&
	       a->lun == b->lun && a->ro == b->ro && a->chap == b->chap &&
	       a->mutual == b->mutual && (!a->chap || (!strcmp(a->chap_user, b->chap_user) &&
	                                              !strcmp(a->chap_secret, b->chap_secret))) &&
	       (!a->mutual ||
	        (!strcmp(a->mut_user, b->mut_user) && !strcmp(a->mut_secret, b->mut_secret)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool init;
	if (!init) {
		log_set_level(LOG_ERROR);
		init = true;
	}
	/* read_file() hands the parser a NUL-terminated copy */
	char *text = malloc(size + 1);
	if (!text)
		abort();
	memcpy(text, data, size);
	text[size] = '\0';
	for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#' || !line[0])
			continue;
		struct export e, e2;
		if (parse_line(line, &e) < 0)
			continue;
		if (!name_valid(e.vol) || (e.snap[0] && (!name_valid(e.snap) || !e.ro)) ||
		    !e.iqn[0] || e.lun > ISCSI_MAX_LUN)
			abort();
		struct sbuf b;
		sbuf_init(&b);
		encode_line(&b, &e);
		if (b.err)
			abort();
		if (strchr(b.p, '\n') || parse_line(b.p, &e2) < 0 || !same(&e, &e2))
			abort(); /* what ferryd writes must read back the same */
		sbuf_free(&b);
	}
	free(text);
	return 0;
}
