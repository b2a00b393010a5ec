/* ferryd's options: one table (main.c), two sources.
 *
 * The command line and the configuration file (an INI file read with
 * libinih) fill the same struct dopt table through the same code: a key
 * of the file is a long option without its dashes, converted and checked
 * exactly like the option.  So an option added to the table is a
 * configuration key with no further work.  The command line wins over the
 * file; values of the file are still checked, so that --check-config
 * reports every bad line, even one the command line overrides. */
#include "daemon/daemon.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* ---- strings that live as long as the process ----------------------------- */
/* Option values point into argv or into these; values replaced by a reload
 * may still be in use by another thread, so nothing is freed before exit. */
static char **g_strs;
static size_t g_nstrs, g_capstrs;

static const char *keep_str(const char *s)
{
	if (g_nstrs == g_capstrs) {
		size_t cap = g_capstrs ? 2 * g_capstrs : 32;
		char **n = realloc(g_strs, cap * sizeof(*n));
		if (!n)
			return NULL;
		g_strs = n;
		g_capstrs = cap;
	}
	char *d = strdup(s);
	if (d)
		g_strs[g_nstrs++] = d;
	return d;
}

void dopt_free_all(void)
{
	for (size_t i = 0; i < g_nstrs; i++)
		free(g_strs[i]);
	free(g_strs);
	g_strs = NULL;
	g_nstrs = g_capstrs = 0;
}

/* ---- one value -------------------------------------------------------------- */
struct dopt *dopt_find(struct dopts *s, const char *name, size_t len)
{
	for (size_t i = 0; i < s->n; i++)
		if (strlen(s->opt[i].name) == len && memcmp(s->opt[i].name, name, len) == 0)
			return &s->opt[i];
	return NULL;
}

static bool cli_only(const struct dopts *s, const char *name)
{
	for (const char *const *c = s->cli_only; c && *c; c++)
		if (!strcmp(*c, name))
			return true;
	return false;
}

static bool is_path(const struct dopt *o)
{
	return o->meta && (!strcmp(o->meta, "FILE") || !strcmp(o->meta, "DIR"));
}

int dopt_check_hostport(const char *label, const char *v, char *err, size_t errlen)
{
	char host[256], port[16];
	if (split_hostport(v, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, errlen, "bad %s address '%s' (want HOST:PORT, or [IPV6]:PORT)", label, v);
		return 1;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
	                          .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai;
	int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
	if (rc) {
		snprintf(err, errlen, "bad %s address '%s': %s", label, v, gai_strerror(rc));
		return 1;
	}
	freeaddrinfo(ai);
	return 0;
}

/* "1"/"0" for a flag's value in the file. */
static int parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = {"1", "yes", "true", "on"};
	static const char *const no[] = {"0", "no", "false", "off"};
	for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
		if (!strcasecmp(v, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(v, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

/* Converts and checks v for o.  base: directory that a relative path is
 * relative to.  Returns 0 with *out (kept until exit, or v itself), or the
 * exit status (1 or 2) with the reason in err. */
static int convert(const struct dopt *o, const char *label, const char *v, const char *base,
                   const char **out, char *err, size_t errlen)
{
	if (!*v) {
		snprintf(err, errlen, "%s needs a value (%s)", label, o->meta);
		return 2;
	}
	if (is_path(o) && v[0] != '/' && base) {
		char abs[PATH_MAX], dir[PATH_MAX];
		if ((size_t)snprintf(abs, sizeof(abs), "%s/%s", base, v) >= sizeof(abs)) {
			snprintf(err, errlen, "%s: path too long", label);
			return 2;
		}
		/* "etc/../logs/x.log" reads better as "logs/x.log": the directory
		 * is resolved when it exists. */
		char *slash = strrchr(abs, '/');
		*slash = '\0';
		char norm[2 * PATH_MAX + 2] = "";
		if (realpath(abs, dir))
			snprintf(norm, sizeof(norm), "%s/%s", strcmp(dir, "/") ? dir : "", slash + 1);
		*slash = '/';
		v = keep_str(norm[0] && strlen(norm) < PATH_MAX ? norm : abs);
		if (!v) {
			snprintf(err, errlen, "out of memory");
			return 1;
		}
	}
	int st = 0;
	if (o->check)
		st = o->check(label, v, err, errlen);
	else if (o->meta && !strcmp(o->meta, "HOST:PORT"))
		st = dopt_check_hostport(label, v, err, errlen);
	if (st)
		return st;
	*out = v;
	return 0;
}

/* ---- the command line ------------------------------------------------------- */
int dopt_parse_argv(struct dopts *s, int argc, char **argv)
{
	char cwd[PATH_MAX];
	const char *base = getcwd(cwd, sizeof(cwd)) ? cwd : NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "ferryd: unexpected argument '%s' (see ferryd --help)\n", a);
			return 2;
		}
		const char *name = a + 2, *eq = strchr(name, '=');
		size_t nl = eq ? (size_t)(eq - name) : strlen(name);
		struct dopt *o = dopt_find(s, name, nl);
		if (!o) {
			fprintf(stderr, "ferryd: unknown option '%s' (see ferryd --help)\n", a);
			return 2;
		}
		size_t k = (size_t)(o - s->opt);
		if (s->src[k] == DOPT_CLI) {
			fprintf(stderr, "ferryd: --%s given twice\n", o->name);
			return 2;
		}
		if (!o->meta) {
			if (eq) {
				fprintf(stderr, "ferryd: --%s takes no value\n", o->name);
				return 2;
			}
			o->value = "1";
			s->src[k] = DOPT_CLI;
			continue;
		}
		const char *v;
		if (eq) {
			v = eq + 1;
		} else if (i + 1 < argc) {
			v = argv[++i];
		} else {
			fprintf(stderr, "ferryd: --%s needs a value (%s)\n", o->name, o->meta);
			return 2;
		}
		char label[64], err[1024];
		snprintf(label, sizeof(label), "--%s", o->name);
		int st = convert(o, label, v, base, &o->value, err, sizeof(err));
		if (st) {
			fprintf(stderr, "ferryd: %s\n", err);
			return st;
		}
		s->src[k] = DOPT_CLI;
	}
	return 0;
}

/* ---- the configuration file --------------------------------------------------- */
struct ini_ctx {
	FILE *f;
	int line;            /* of the line inih works on */
	struct dopts *s;
	char dir[PATH_MAX];  /* relative paths in the file are relative to it */
	int err_line;        /* first error found here (0: none) */
	char err[1024];
};

/* One physical line per call, so that c->line is the line the handler
 * sees; a line too long for inih, or holding a NUL byte, is an error (and
 * read to its end), not two lines or a cut one. */
static char *ini_read_line(char *str, int num, void *stream)
{
	struct ini_ctx *c = stream;
	int ch = EOF, n = 0;
	bool nl = false, nul = false;
	while (n < num - 1 && (ch = getc(c->f)) != EOF) {
		nul = nul || ch == '\0';
		str[n++] = (char)ch;
		if (ch == '\n') {
			nl = true;
			break;
		}
	}
	if (n == 0)
		return NULL;
	str[n] = '\0';
	c->line++;
	if (!nl && n == num - 1) {
		int next = getc(c->f);
		if (next != EOF && next != '\n') {
			while ((ch = getc(c->f)) != EOF && ch != '\n')
				;
			if (!c->err_line) {
				c->err_line = c->line;
				snprintf(c->err, sizeof(c->err), "line longer than %d characters", num - 1);
			}
			str[0] = '\0';
		}
	}
	if (nul) {
		if (!c->err_line) {
			c->err_line = c->line;
			snprintf(c->err, sizeof(c->err), "NUL byte in the line");
		}
		str[0] = '\0';
	}
	return str;
}

static int ini_fail(struct ini_ctx *c, const char *fmt, ...) PRINTF_LIKE(2, 3);
static int ini_fail(struct ini_ctx *c, const char *fmt, ...)
{
	if (!c->err_line) {
		c->err_line = c->line;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->err, sizeof(c->err), fmt, ap);
		va_end(ap);
	}
	return 0;
}

static int ini_key(void *user, const char *section, const char *name, const char *value)
{
	struct ini_ctx *c = user;
	if (*section && strcmp(section, "ferryd"))
		return ini_fail(c, "unknown section [%s] (keys go at the top or under [ferryd])",
		                section);
	struct dopts *s = c->s;
	struct dopt *o = dopt_find(s, name, strlen(name));
	if (!o)
		return ini_fail(c, "unknown key '%s' (the keys are ferryd's long options, see "
		                   "ferryd --help)", name);
	size_t k = (size_t)(o - s->opt);
	if (cli_only(s, name))
		return ini_fail(c, "'%s' is a command-line option only", name);
	if (s->file_line[k])
		return ini_fail(c, "'%s' given twice (first on line %d)", name, s->file_line[k]);
	s->file_line[k] = c->line;
	const char *v;
	if (!o->meta) {
		bool on;
		if (parse_bool(value, &on) < 0)
			return ini_fail(c, "%s: want true or false, not '%s'", name, value);
		v = on ? "1" : NULL;
	} else {
		char err[1024];
		if (convert(o, name, value, c->dir, &v, err, sizeof(err)))
			return ini_fail(c, "%s", err);
		if (v == value && !(v = keep_str(value)))
			return ini_fail(c, "out of memory");
	}
	if (s->src[k] != DOPT_CLI) {
		o->value = v;
		s->src[k] = v ? DOPT_FILE : DOPT_UNSET;
	}
	return 1;
}

int dopt_load_file(struct dopts *s, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return 1;
	}
	int st = dopt_load_stream(s, f, path, err, errlen);
	fclose(f);
	return st;
}

int dopt_load_stream(struct dopts *s, FILE *f, const char *path, char *err, size_t errlen)
{
	struct ini_ctx *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "%s: out of memory", path);
		return 1;
	}
	c->f = f;
	c->s = s;
	for (size_t i = 0; i < s->n; i++)
		s->file_line[i] = 0;
	snprintf(c->dir, sizeof(c->dir), "%s", path);
	char *slash = strrchr(c->dir, '/');
	if (slash == c->dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		snprintf(c->dir, sizeof(c->dir), ".");
	int r = ini_parse_stream(ini_read_line, c, ini_key, c);
	int st = 0;
	if (r > 0 && (!c->err_line || r < c->err_line)) {
		snprintf(err, errlen, "%s:%d: syntax error (want 'key = value', '[ferryd]' or a "
		                      "comment starting with # or ;)", path, r);
		st = 1;
	} else if (c->err_line) {
		snprintf(err, errlen, "%s:%d: %s", path, c->err_line, c->err);
		st = 1;
	} else if (r < 0) {
		snprintf(err, errlen, "%s: %s", path, r == -2 ? "out of memory" : "cannot read it");
		st = 1;
	}
	free(c);
	return st;
}

/* ---- reload --------------------------------------------------------------- */
const char *dopt_where(const struct dopts *s, const struct dopt *o, const char *config,
                       char *buf, size_t len)
{
	size_t k = (size_t)(o - s->opt);
	if (s->src[k] == DOPT_FILE && config)
		snprintf(buf, len, "%s:%d: %s", config, s->file_line[k], o->name);
	else
		snprintf(buf, len, "--%s", o->name);
	return buf;
}

bool dopt_same(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}
